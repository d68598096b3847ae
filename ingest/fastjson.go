package ingest

func fastJSONPage(data []byte) (*Page, bool) { return nil, false }
