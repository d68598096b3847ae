module github.com/feedmeter/feedmeter

go 1.26.8

require github.com/beevik/etree v1.8.1

require (
	github.com/mmcdole/gofeed v1.4.2 // indirect
	github.com/mmcdole/goxpp/v2 v2.0.0 // indirect
	github.com/valyala/fastjson v1.6.10 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)
