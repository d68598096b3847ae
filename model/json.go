package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the event's JSON encoding to dst: one object, fields in
// the documented order, no trailing newline. Quantity is an exact JSON
// integer; absent times and External are null.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"tenant_id":`...)
	dst = appendString(dst, e.TenantID)
	dst = append(dst, `,"entry_id":`...)
	dst = appendString(dst, e.EntryID)
	dst = append(dst, `,"event_id":`...)
	dst = appendString(dst, e.EventID)
	dst = append(dst, `,"reference_id":`...)
	dst = appendString(dst, e.ReferenceID)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, string(e.Kind))
	dst = append(dst, `,"product_namespace":`...)
	dst = appendString(dst, e.ProductNamespace)
	dst = append(dst, `,"product_version":`...)
	dst = appendString(dst, e.ProductVersion)
	dst = append(dst, `,"event_type":`...)
	dst = appendString(dst, e.EventType)
	dst = append(dst, `,"event_version":`...)
	dst = appendString(dst, e.EventVersion)
	dst = append(dst, `,"region":`...)
	dst = appendString(dst, e.Region)
	dst = append(dst, `,"data_center":`...)
	dst = appendString(dst, e.DataCenter)
	dst = append(dst, `,"environment":`...)
	dst = appendString(dst, e.Environment)
	dst = append(dst, `,"resource_id":`...)
	dst = appendString(dst, e.ResourceID)
	dst = append(dst, `,"resource_type":`...)
	dst = appendString(dst, e.ResourceType)
	dst = append(dst, `,"server_id":`...)
	dst = appendString(dst, e.ServerID)
	dst = append(dst, `,"server_name":`...)
	dst = appendString(dst, e.ServerName)
	dst = append(dst, `,"external":`...)
	switch {
	case e.External == nil:
		dst = append(dst, "null"...)
	case *e.External:
		dst = append(dst, "true"...)
	default:
		dst = append(dst, "false"...)
	}
	dst = append(dst, `,"start_time":`...)
	dst = appendTime(dst, e.StartTime)
	dst = append(dst, `,"end_time":`...)
	dst = appendTime(dst, e.EndTime)
	dst = append(dst, `,"event_time":`...)
	dst = appendTime(dst, e.EventTime)
	dst = append(dst, `,"quantity":`...)
	dst = strconv.AppendUint(dst, e.Quantity, 10)
	dst = append(dst, `,"updated":`...)
	dst = appendTime(dst, e.Updated)
	dst = append(dst, `,"published":`...)
	dst = appendTime(dst, e.Published)
	return append(dst, '}')
}

// MarshalJSON implements json.Marshaler with AppendJSON.
func (e Event) MarshalJSON() ([]byte, error) { return e.AppendJSON(nil), nil }

// wireEvent is the decoding shape of the JSON encoding.
type wireEvent struct {
	TenantID         *string `json:"tenant_id"`
	EntryID          *string `json:"entry_id"`
	EventID          *string `json:"event_id"`
	ReferenceID      *string `json:"reference_id"`
	Kind             *string `json:"kind"`
	ProductNamespace *string `json:"product_namespace"`
	ProductVersion   *string `json:"product_version"`
	EventType        *string `json:"event_type"`
	EventVersion     *string `json:"event_version"`
	Region           *string `json:"region"`
	DataCenter       *string `json:"data_center"`
	Environment      *string `json:"environment"`
	ResourceID       *string `json:"resource_id"`
	ResourceType     *string `json:"resource_type"`
	ServerID         *string `json:"server_id"`
	ServerName       *string `json:"server_name"`
	External         *bool   `json:"external"`
	StartTime        *string `json:"start_time"`
	EndTime          *string `json:"end_time"`
	EventTime        *string `json:"event_time"`
	Quantity         *uint64 `json:"quantity"`
	Updated          *string `json:"updated"`
	Published        *string `json:"published"`
}

// UnmarshalJSON decodes the encoding AppendJSON writes. Unknown fields are an
// error, and so is a missing entry_id, kind or quantity: a record that does
// not say what it counts is not a usage event. It does not Validate.
func (e *Event) UnmarshalJSON(data []byte) error {
	var w wireEvent
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("decode event: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("decode event: data after the object")
	}
	switch {
	case w.EntryID == nil:
		return fmt.Errorf("decode event: entry_id is missing")
	case w.Kind == nil:
		return fmt.Errorf("decode event: kind is missing")
	case w.Quantity == nil:
		return fmt.Errorf("decode event: quantity is missing")
	}
	*e = Event{
		TenantID: deref(w.TenantID), EntryID: *w.EntryID, EventID: deref(w.EventID), ReferenceID: deref(w.ReferenceID),
		Kind: Kind(*w.Kind), ProductNamespace: deref(w.ProductNamespace),
		ProductVersion: deref(w.ProductVersion), EventType: deref(w.EventType),
		EventVersion: deref(w.EventVersion), Region: deref(w.Region),
		DataCenter: deref(w.DataCenter), Environment: deref(w.Environment),
		ResourceID: deref(w.ResourceID), ResourceType: deref(w.ResourceType),
		ServerID: deref(w.ServerID), ServerName: deref(w.ServerName),
		External: w.External, Quantity: *w.Quantity,
	}
	for _, f := range []struct {
		name string
		src  *string
		dst  *time.Time
	}{
		{"start_time", w.StartTime, &e.StartTime},
		{"end_time", w.EndTime, &e.EndTime},
		{"event_time", w.EventTime, &e.EventTime},
		{"updated", w.Updated, &e.Updated},
		{"published", w.Published, &e.Published},
	} {
		if f.src == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, *f.src)
		if err != nil {
			return fmt.Errorf("decode event: %s: %w", f.name, err)
		}
		*f.dst = t.UTC()
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
