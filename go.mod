module github.com/feedmeter/feedmeter

go 1.26.8

require github.com/beevik/etree v1.8.1

require github.com/valyala/fastjson v1.6.10 // indirect
