package ingest

// The fast JSON path, on valyala/fastjson. Like the fast XML path it either
// gives the reference's answer or steps aside (ok=false): on \u escapes,
// invalid UTF-8, invalid JSON, duplicate keys and values of unexpected
// types, all of which encoding/json treats in its own way.

import (
	"bytes"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/feedmeter/feedmeter/model"
)

var jsonParsers fastjson.ParserPool

func fastJSONPage(data []byte) (*Page, bool) {
	high, ctrl := byteClasses(data)
	if bytes.Contains(data, []byte(`\u`)) || (high && !utf8.Valid(data)) || (ctrl && !plainStrings(data)) ||
		fastjson.ValidateBytes(data) != nil {
		return nil, false
	}
	jp := jsonParsers.Get()
	defer jsonParsers.Put(jp)
	top, err := jp.ParseBytes(data)
	if err != nil {
		return nil, false
	}
	obj, err := top.Object()
	if err != nil || obj.Len() != 1 || !noDupKeys(obj) {
		return nil, false
	}
	p := &Page{}
	var sc scratch
	if e := obj.Get("entry"); e != nil {
		p.Entry = true
		o, ok := fastJSONEntry(e, &sc)
		if !ok {
			return nil, false
		}
		if o.rej != nil {
			o.rej.Raw = data
		}
		p.add(0, o)
		return p, true
	}
	feedV := obj.Get("feed")
	if feedV == nil {
		return nil, false
	}
	feed, err := feedV.Object()
	if err != nil || !noDupKeys(feed) {
		return nil, false
	}
	if links := feed.Get("link"); links != nil && links.Type() == fastjson.TypeArray {
		for _, l := range links.GetArray() {
			lo, err := l.Object()
			if err != nil {
				continue
			}
			if !noDupKeys(lo) {
				return nil, false
			}
			p.Links.set(trim(jsonString(lo.Get("rel"))), trim(jsonString(lo.Get("href"))))
		}
	}
	if entries := feed.Get("entry"); entries != nil {
		list, err := entries.Array()
		if err != nil {
			return nil, false
		}
		p.Events = make([]model.Event, 0, len(list))
		for i, e := range list {
			o, ok := fastJSONEntry(e, &sc)
			if !ok {
				return nil, false
			}
			if o.rej != nil {
				o.rej.Raw = e.MarshalTo(nil)
			}
			p.add(i, o)
		}
	}
	return p, true
}

// plainStrings reports whether no string in data holds a raw control
// character, which fastjson lets through and encoding/json does not.
func plainStrings(data []byte) bool {
	for i := 0; i < len(data); {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			return true
		}
		i += q + 1
		for ; i < len(data); i++ {
			c := data[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				i++
			} else if c < 0x20 {
				return false
			}
		}
		i++
	}
	return true
}

// jsonString is v's string value, or "" when v is not a string.
func jsonString(v *fastjson.Value) string {
	if v == nil || v.Type() != fastjson.TypeString {
		return ""
	}
	b, _ := v.StringBytes()
	return string(b)
}

func noDupKeys(o *fastjson.Object) bool {
	n := o.Len()
	if n < 2 {
		return true
	}
	var keys [24][]byte
	if n > len(keys) {
		return false
	}
	k := 0
	dup := false
	o.Visit(func(key []byte, _ *fastjson.Value) {
		for _, prev := range keys[:k] {
			if bytes.Equal(prev, key) {
				dup = true
			}
		}
		keys[k] = key
		k++
	})
	return !dup
}

// fastJSONEntry extracts an entry; ok=false leaves it to the reference.
func fastJSONEntry(v *fastjson.Value, sc *scratch) (outcome, bool) {
	o, err := v.Object()
	if err != nil || !noDupKeys(o) {
		return outcome{}, false
	}
	var r rawEntry
	eb := sc.begin(&r)
	defer sc.end(&r)
	for _, f := range []struct {
		name string
		dst  *string
		seen *bool
	}{{"id", &r.id, &r.hasID}, {"updated", &r.updated, &r.hasUpdated}, {"published", &r.published, &r.hasPublished}} {
		x := o.Get(f.name)
		if x == nil || x.Type() == fastjson.TypeNull {
			continue
		}
		if x.Type() != fastjson.TypeString {
			return outcome{}, false
		}
		b, _ := x.StringBytes()
		eb.add(f.dst, b)
		*f.seen = true
	}
	if c := o.Get("content"); c != nil && c.Type() != fastjson.TypeNull {
		co, err := c.Object()
		if err != nil || !noDupKeys(co) {
			return outcome{}, false
		}
		if ev := co.Get("event"); ev != nil && ev.Type() != fastjson.TypeNull {
			eo, err := ev.Object()
			if err != nil || !noDupKeys(eo) {
				return outcome{}, false
			}
			r.hasEvent = true
			r.event = jsonFields(eo, "product", eb, r.event)
			if pv := eo.Get("product"); pv != nil && pv.Type() != fastjson.TypeNull {
				po, err := pv.Object()
				if err != nil || !noDupKeys(po) {
					return outcome{}, false
				}
				r.hasProduct = true
				if t := po.Get("@type"); t != nil && t.Type() != fastjson.TypeNull {
					if t.Type() != fastjson.TypeString {
						return outcome{}, false
					}
					b, _ := t.StringBytes()
					eb.add(&r.productNS, b)
				}
				r.product = jsonFields(po, "", eb, r.product)
			}
		}
	}
	eb.finish()
	return normalize(&r), true
}

// jsonFields copies an object's scalar members (but "@type" and skip) as
// the text their XML twins would carry.
func jsonFields(o *fastjson.Object, skip string, eb *entryBuf, out attrs) attrs {
	out = sized(out, o.Len())
	n := 0
	o.Visit(func(key []byte, v *fastjson.Value) {
		if string(key) == "@type" || string(key) == skip || v.Type() == fastjson.TypeNull {
			return
		}
		f := &out[n]
		n++
		*f = attr{}
		eb.add(&f.name, key)
		start := len(eb.buf)
		switch v.Type() {
		case fastjson.TypeString:
			b, _ := v.StringBytes()
			eb.buf = append(eb.buf, b...)
		case fastjson.TypeNumber, fastjson.TypeTrue, fastjson.TypeFalse:
			eb.buf = v.MarshalTo(eb.buf)
		default:
			f.bad = true
		}
		eb.mark(&f.value, start)
	})
	return out[:n]
}
