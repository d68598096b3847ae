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

	// Each parser hands over a field once at most: an entry that names one
	// twice (an XML attribute, a JSON member) is rejected before it comes
	// here.
	var times [3]string
	var hasTime [3]bool
	var severity bool
	for _, a := range r.event {
		var dst *string
		switch a.name {
		case "id":
			dst = &e.EventID
		case "referenceId":
			dst = &e.ReferenceID
		case "severity":
			severity = true
			continue
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
	if severity && model.IsUsageType(e.EventType) {
		// core.xsd: severity is for system events only.
		return fail("%s event has a severity: usage events carry none", e.EventType)
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

// parseTime reads an xs:dateTime with a time zone and returns it in UTC.
// Every form the schema gives a UTC time is read: Z, +00:00, -00:00, and
// 24:00:00, the end of a day (00:00:00 of the next). Another zone is
// converted; a time without one is refused, as the schema's UTCDateTime
// does. The year has four digits; fractions of a second may have any
// number of digits, but a time finer than a nanosecond is refused, never
// rounded.
func parseTime(field, s string) (time.Time, error) {
	v := trim(s)
	fail := func(why string) (time.Time, error) {
		return time.Time{}, fmt.Errorf("%s %q %s", field, s, why)
	}
	// yyyy-mm-ddThh:mm:ss
	if len(v) < 19 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' ||
		!isDigits(v[:4]) || !isDigits(v[5:7]) || !isDigits(v[8:10]) || !isDigits(v[11:13]) || !isDigits(v[14:16]) || !isDigits(v[17:19]) {
		return fail("is not an xs:dateTime (yyyy-mm-ddThh:mm:ss and a zone)")
	}
	year := digits2(v[0:2])*100 + digits2(v[2:4])
	month, day, hour, minute, second := digits2(v[5:7]), digits2(v[8:10]), digits2(v[11:13]), digits2(v[14:16]), digits2(v[17:19])
	rest := v[19:]
	var nsec int
	if len(rest) > 0 && rest[0] == '.' {
		k := 1
		for ; k < len(rest) && rest[k] >= '0' && rest[k] <= '9'; k++ {
			if k <= 9 {
				nsec = nsec*10 + int(rest[k]-'0')
			} else if rest[k] != '0' {
				return fail("is finer than a nanosecond (a digit after the ninth of the fraction is not 0)")
			}
		}
		if k == 1 {
			return fail("is not an xs:dateTime (no digit after the decimal point)")
		}
		for d := k; d <= 9; d++ {
			nsec *= 10
		}
		rest = rest[k:]
	}
	var offset int // seconds east of UTC
	switch {
	case rest == "Z":
	case rest == "":
		return fail("has no time zone")
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' && isDigits(rest[1:3]) && isDigits(rest[4:6]):
		oh, om := digits2(rest[1:3]), digits2(rest[4:6])
		if om > 59 || oh > 14 || oh == 14 && om > 0 {
			return fail("has a zone outside -14:00..+14:00")
		}
		if offset = (oh*60 + om) * 60; rest[0] == '-' {
			offset = -offset
		}
	default:
		return fail("is not an xs:dateTime (its zone is not Z or ±hh:mm)")
	}
	switch {
	case month < 1 || month > 12:
		return fail("has no month " + v[5:7])
	case day < 1 || day > daysIn(year, month):
		return fail("has no day " + v[8:10] + " in its month")
	case hour == 24 && (minute != 0 || second != 0 || nsec != 0):
		return fail("has hour 24 other than in 24:00:00")
	case hour > 24:
		return fail("has an hour over 24")
	case minute > 59:
		return fail("has a minute over 59")
	case second > 59:
		return fail("has a second over 59")
	}
	// 24:00:00 is hour 24, which time.Date carries into the next day.
	t := time.Date(year, time.Month(month), day, hour, minute, second, nsec, time.UTC)
	if offset != 0 {
		t = t.Add(-time.Duration(offset) * time.Second)
	}
	switch {
	case t.IsZero():
		return fail("is the zero time, which stands for no time")
	case !t.After(time.Time{}) || !t.Before(year10000):
		return fail("is outside the years 0001 to 9999 in UTC")
	}
	return t, nil
}

var year10000 = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)

// digits2 reads two decimal digits.
func digits2(s string) int { return int(s[0]-'0')*10 + int(s[1]-'0') }

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// daysIn returns the number of days of month m (1..12) of year y.
func daysIn(y, m int) int {
	if m == 2 && y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		return 29
	}
	return monthDays[m-1]
}

var monthDays = [12]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
