package ingest

func fastXMLPage(data []byte) (*Page, bool) { return nil, false }
