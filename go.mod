module github.com/feedmeter/feedmeter

go 1.26.8

require (
	github.com/beevik/etree v1.8.1
	github.com/mmcdole/gofeed v1.4.2
)

require (
	github.com/mmcdole/goxpp/v2 v2.0.0 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
