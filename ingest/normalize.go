package ingest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// attr is one scalar field of an event or product: an XML attribute without
// a prefix, or a JSON member. bad is set for a JSON member that is an object
// or an array.
type attr struct {
	name, value string
	bad         bool
}

// attrs is a short list looked up linearly (an event has about a dozen).
type attrs []attr

// get returns the value of name, whether it is present, and an error when it
// is present but not a scalar.
func (a attrs) get(name string) (string, bool, error) {
	for i := range a {
		if a[i].name == name {
			if a[i].bad {
				return "", true, fmt.Errorf("%s is not a scalar", name)
			}
			return a[i].value, true, nil
		}
	}
	return "", false, nil
}

// rawEntry is what both parsers, XML and JSON, fast and reference, extract
// from an entry before the shared rules of normalize apply. Keeping the rules
// in one place makes the parsers' differential test a test of extraction.
type rawEntry struct {
	id, updated, published          string
	hasID, hasUpdated, hasPublished bool
	hasEvent                        bool
	event                           attrs
	hasProduct                      bool
	productNS                       string
	product                         attrs
}

// xmlSpace is the white space XML trims (and that ids and times may carry).
const xmlSpace = " \t\r\n"

func trim(s string) string {
	i, j := 0, len(s)
	for i < j && isXMLSpace(s[i]) {
		i++
	}
	for j > i && isXMLSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// normalize applies the feed's rules to a raw entry.
func normalize(r *rawEntry) outcome {
	id := trim(r.id)
	fail := func(format string, args ...any) outcome {
		return rejected(id, fmt.Sprintf(format, args...))
	}
	if !r.hasID || id == "" {
		return fail("entry has no atom:id")
	}
	if !r.hasEvent {
		return fail("entry has no event in its content")
	}
	var e model.Event
	e.EntryID = id
	var err error
	if r.hasUpdated {
		if e.Updated, err = parseTime("atom:updated", r.updated); err != nil {
			return fail("%v", err)
		}
	}
	if r.hasPublished {
		if e.Published, err = parseTime("atom:published", r.published); err != nil {
			return fail("%v", err)
		}
	}

	// Each parser hands over a field once at most: the XML reference rejects
	// a repeated attribute, JSON objects are maps, the fast paths step aside.
	var times [3]string
	var hasTime [3]bool
	for _, a := range r.event {
		var dst *string
		switch a.name {
		case "id":
			dst = &e.EventID
		case "type":
			dst = &e.EventType
		case "version":
			dst = &e.EventVersion
		case "tenantId":
			dst = &e.TenantID
		case "region":
			dst = &e.Region
		case "dataCenter":
			dst = &e.DataCenter
		case "environment":
			dst = &e.Environment
		case "resourceId":
			dst = &e.ResourceID
		case "startTime":
			dst, hasTime[0] = &times[0], true
		case "endTime":
			dst, hasTime[1] = &times[1], true
		case "eventTime":
			dst, hasTime[2] = &times[2], true
		default:
			continue
		}
		if a.bad {
			return fail("event %s is not a scalar", a.name)
		}
		*dst = trim(a.value)
	}
	for i, dst := range []*time.Time{&e.StartTime, &e.EndTime, &e.EventTime} {
		if hasTime[i] {
			if *dst, err = parseTime(timeFields[i], times[i]); err != nil {
				return fail("%v", err)
			}
		}
	}

	e.Kind = model.KindOther
	if r.hasProduct {
		e.ProductNamespace = r.productNS
		var external string
		var hasExternal bool
		for _, a := range r.product {
			var dst *string
			switch a.name {
			case "version":
				dst = &e.ProductVersion
			case "resourceType":
				dst = &e.ResourceType
			case "serverID":
				dst = &e.ServerID
			case "serverName":
				dst = &e.ServerName
			case "external":
				dst, hasExternal = &external, true
			default:
				continue
			}
			if a.bad {
				return fail("product %s is not a scalar", a.name)
			}
			*dst = trim(a.value)
		}
		if hasExternal {
			b, err := parseBool(external)
			if err != nil {
				return fail("product external: %v", err)
			}
			e.External = &b
		}
		if err := classify(&e, r.product); err != nil {
			return fail("%v", err)
		}
	}
	if err := e.Validate(); err != nil {
		return fail("%v", err)
	}
	return outcome{ev: e}
}

var timeFields = [...]string{"event startTime", "event endTime", "event eventTime"}

// classify sets the kind and quantity of a Cloud Backup usage product. It
// leaves KindOther for system events, other products and versions this
// parser does not know: those are kept, not rejected.
func classify(e *model.Event, pr attrs) error {
	name, ok := strings.CutPrefix(e.ProductNamespace, model.NSCloudBackup)
	if !ok || !model.IsUsageType(e.EventType) {
		return nil
	}
	kind := model.Kind(name)
	switch kind {
	case model.KindBandwidthIn, model.KindBandwidthOut, model.KindStorage:
		if e.ProductVersion != "1" {
			return nil
		}
	case model.KindLicense:
		switch {
		case e.EventType == model.TypeUsage && e.ProductVersion == "1":
		case e.EventType == model.TypeUsageSnapshot && (e.ProductVersion == "2" || e.ProductVersion == "3"):
		default:
			return nil
		}
	default:
		return nil
	}
	if e.EventType == model.TypeUsageSummary {
		// A summary restates usage reported elsewhere; billing it would count
		// it twice. Kept as other.
		return nil
	}
	if sc, _, _ := pr.get("serviceCode"); trim(sc) != "CloudBackup" {
		return fmt.Errorf("%s product serviceCode is %q, not CloudBackup", kind, trim(sc))
	}
	if e.ResourceType != "AGENT" {
		return fmt.Errorf("%s product resourceType is %q, not AGENT", kind, e.ResourceType)
	}
	e.Kind = kind
	if kind == model.KindLicense {
		e.Quantity = 1
		return nil
	}
	v, ok, err := pr.get(string(kind))
	if err != nil {
		return fmt.Errorf("product %v", err)
	}
	if !ok {
		return fmt.Errorf("%s product has no %s attribute", kind, kind)
	}
	q, err := parseUnsignedLong(v)
	if err != nil {
		return fmt.Errorf("product %s: %v", kind, err)
	}
	e.Quantity = q
	return nil
}

// parseUnsignedLong reads an xsd:unsignedLong (white space collapsed, an
// optional +, decimal digits) exactly, without floating point.
func parseUnsignedLong(s string) (uint64, error) {
	t := trim(s)
	t = strings.TrimPrefix(t, "+")
	if t == "" || t[0] < '0' || t[0] > '9' {
		return 0, fmt.Errorf("%q is not an unsignedLong", s)
	}
	q, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("%q is larger than an unsignedLong (18446744073709551615)", s)
		}
		return 0, fmt.Errorf("%q is not an unsignedLong", s)
	}
	return q, nil
}

// parseBool reads an xsd:boolean.
func parseBool(s string) (bool, error) {
	switch trim(s) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", s)
}

// parseTime reads an xsd:dateTime with a time zone and returns it in UTC.
func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, trim(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time with a zone", field, s)
	}
	return t.UTC(), nil
}
