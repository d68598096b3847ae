package query

import (
	"context"
	"errors"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// Limits on what one request may ask for.
const (
	maxUsageDays = 3660  // ten years
	maxBuckets   = 10000 // e.g. a year by the hour
	// maxUsageRows bounds a usage answer's rows (buckets x kinds x groups),
	// held in memory at about 2 KB each until written: a month by the day
	// of 800 servers and one kind, or of 200 servers and every kind.
	maxUsageRows   = 100_000
	maxInvoiceDays = 366
	maxEventsLimit = 1000
	maxTenantLimit = 1000
)

func (s *Server) queryContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
}

// zoneError turns a bucket error into a 400 on tz when the zone is at
// fault.
func zoneError(err error) error {
	var ie *InexactError
	if errors.As(err, &ie) {
		return badParam("tz", "%v", ie)
	}
	return err
}

func formatIn(t time.Time, loc *time.Location) string { return t.In(loc).Format(time.RFC3339) }

// usageRow is one bucket of one kind (and group) in a usage answer.
type usageRow struct {
	Start        string  `json:"start"`
	End          string  `json:"end"`
	Kind         string  `json:"kind"`
	Region       *string `json:"region,omitempty"`
	DataCenter   *string `json:"data_center,omitempty"`
	ResourceID   *string `json:"resource_id,omitempty"`
	Server       *string `json:"server,omitempty"`
	Bytes        string  `json:"bytes,omitempty"`         // bandwidth: bytes in the bucket
	ByteSeconds  string  `json:"byte_seconds,omitempty"`  // storage: byte-seconds in the bucket
	AverageBytes string  `json:"average_bytes,omitempty"` // storage: byte_seconds / seconds of the bucket, rounded half to even
	Servers      *uint64 `json:"servers,omitempty"`       // licences: distinct servers licensed in the bucket
	ServerDays   *uint64 `json:"server_days,omitempty"`   // licences: servers licensed per local day, added over the bucket's days
	Events       uint64  `json:"events"`                  // events whose interval ends in the bucket
	group        []string
	bucket       int
}

type usageAnswer struct {
	TenantID    string     `json:"tenant_id"`
	From        string     `json:"from"`
	To          string     `json:"to"`
	TZ          string     `json:"tz"`
	Granularity string     `json:"granularity"`
	Kinds       []string   `json:"kinds"`
	GroupBy     []string   `json:"group_by"`
	Rows        []usageRow `json:"rows"`
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request, tenant string) {
	p, err := parseParams(r.URL.RawQuery, routeParams("/v1/tenants/{tid}/usage")...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	loc, err := parseZone(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g := Day
	if p.has("granularity") {
		var ok bool
		if g, ok = parseGranularity(p.get("granularity")); !ok {
			s.fail(w, r, badParam("granularity", "%q is not hour, day or month", printable(p.get("granularity"))))
			return
		}
	}
	kinds, err := parseKinds(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	groupBy, err := parseGroupBy(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := parseFormat(p, r.Header.Get("Accept"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sp, err := parseSpan(p, loc, s.cfg.Now(), maxUsageDays, time.Hour)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if g == Hour && sp.To.Sub(sp.From) > maxBuckets*time.Hour {
		s.fail(w, r, badParam("granularity", "more than %d hours; ask for a shorter range or days", maxBuckets))
		return
	}
	bounds, err := splitBuckets(sp.From, sp.To, loc, g)
	if err != nil {
		s.fail(w, r, zoneError(err))
		return
	}
	days := bounds
	if g != Hour {
		if days, err = splitBuckets(sp.From, sp.To, loc, Day); err != nil {
			s.fail(w, r, zoneError(err))
			return
		}
	}
	// Licences by the hour or the day come with the sums (the distinct
	// servers of a bucket are its server-days when the bucket is a day);
	// by the month they need the servers of each day: a second query.
	q := UsageQuery{Tenant: tenant, Bounds: bounds, Days: days, GroupBy: groupBy, Kinds: kinds, Zone: loc, MaxRows: maxUsageRows}
	monthLicences := g == Month && slices.Contains(kinds, string(model.KindLicense))
	if monthLicences {
		q.Kinds = slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return k == string(model.KindLicense) })
	}
	ctx, cancel := s.queryContext(r)
	defer cancel()
	var sums []UsageSum
	var lics []LicenceSum
	var usageErr, licErr error
	var wg sync.WaitGroup
	if monthLicences {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lics, licErr = s.store.Licences(ctx, q)
		}()
	}
	sums, usageErr = s.store.Usage(ctx, q)
	wg.Wait()
	if usageErr == nil && licErr == nil && len(sums)+len(lics) > q.MaxRows {
		usageErr = &TooManyRowsError{Max: q.MaxRows} // each was within it, together they are not
	}
	if err := errors.Join(usageErr, licErr); err != nil {
		if tm := (*TooManyRowsError)(nil); errors.As(err, &tm) {
			param := "group_by"
			if len(groupBy) == 0 {
				param = "granularity"
			}
			err = badParam(param, "the answer would have more than %d rows (buckets x kinds x groups); ask for a shorter range, a coarser granularity, fewer kinds or fewer group_by dimensions", tm.Max)
		}
		s.fail(w, r, err)
		return
	}

	rows := map[string]*usageRow{}
	var order []*usageRow
	row := func(bucket int, kind string, group []string) *usageRow {
		key := strconv.Itoa(bucket) + "\x00" + kind + "\x00" + strings.Join(group, "\x00")
		if ur, ok := rows[key]; ok {
			return ur
		}
		ur := &usageRow{Start: formatIn(bounds[bucket], loc), End: formatIn(bounds[bucket+1], loc), Kind: kind, group: group, bucket: bucket}
		for i, d := range groupBy {
			v := group[i]
			switch d {
			case "region":
				ur.Region = &v
			case "data_center":
				ur.DataCenter = &v
			case "resource_id":
				ur.ResourceID = &v
			case "server":
				ur.Server = &v
			}
		}
		switch kind {
		case string(model.KindBandwidthIn), string(model.KindBandwidthOut):
			ur.Bytes = "0"
		case string(model.KindStorage):
			ur.ByteSeconds, ur.AverageBytes = "0", "0"
		case string(model.KindLicense):
			var n, d uint64
			ur.Servers = &n
			if g != Hour {
				ur.ServerDays = &d
			}
		}
		rows[key] = ur
		order = append(order, ur)
		return ur
	}
	if len(groupBy) == 0 {
		for b := 0; b+1 < len(bounds); b++ {
			for _, k := range kinds {
				row(b, k, []string{})
			}
		}
	}
	for _, sm := range sums {
		if sm.Bucket < 0 || sm.Bucket+1 >= len(bounds) {
			s.fail(w, r, errors.New("store returned a bucket outside the range"))
			return
		}
		ur := row(sm.Bucket, sm.Kind, sm.Group)
		ur.Events += sm.Events
		if sm.Kind == string(model.KindLicense) {
			*ur.Servers = sm.Servers
			if ur.ServerDays != nil {
				*ur.ServerDays = sm.Servers // a day bucket: its servers are its server-days
			}
		} else if sm.Kind == string(model.KindStorage) {
			secs := int64(bounds[sm.Bucket+1].Sub(bounds[sm.Bucket]) / time.Second)
			ur.ByteSeconds = sm.ByteSeconds.String()
			ur.AverageBytes = roundHalfEven(new(big.Rat).SetFrac(sm.ByteSeconds, big.NewInt(secs)), 0).String()
		} else {
			ur.Bytes = sm.Quantity.String()
		}
	}
	for _, lc := range lics {
		if lc.Bucket < 0 || lc.Bucket+1 >= len(bounds) {
			s.fail(w, r, errors.New("store returned a bucket outside the range"))
			return
		}
		ur := row(lc.Bucket, string(model.KindLicense), lc.Group)
		ur.Events += lc.Events
		*ur.Servers = lc.Servers
		if ur.ServerDays != nil {
			*ur.ServerDays = lc.ServerDays
		}
	}
	kindIndex := func(k string) int { return slices.Index(UsageKinds, k) }
	slices.SortStableFunc(order, func(a, b *usageRow) int {
		if a.bucket != b.bucket {
			return a.bucket - b.bucket
		}
		if a.Kind != b.Kind {
			return kindIndex(a.Kind) - kindIndex(b.Kind)
		}
		return slices.Compare(a.group, b.group)
	})
	if f == formatCSV {
		t := &csvTable{header: append(append([]string{"start", "end", "kind"}, groupBy...),
			"bytes", "byte_seconds", "average_bytes", "servers", "server_days", "events")}
		for _, ur := range order {
			cells := []string{ur.Start, ur.End, ur.Kind}
			for _, v := range ur.group {
				cells = append(cells, cell(v))
			}
			cells = append(cells, ur.Bytes, ur.ByteSeconds, ur.AverageBytes, optUint(ur.Servers), optUint(ur.ServerDays), strconv.FormatUint(ur.Events, 10))
			t.add(cells...)
		}
		writeCSV(w, "usage-"+tenant, t)
		return
	}
	ans := usageAnswer{TenantID: tenant, From: formatIn(sp.From, loc), To: formatIn(sp.To, loc), TZ: loc.String(),
		Granularity: g.String(), Kinds: kinds, GroupBy: groupBy, Rows: make([]usageRow, 0, len(order))}
	if ans.GroupBy == nil {
		ans.GroupBy = []string{}
	}
	for _, ur := range order {
		ans.Rows = append(ans.Rows, *ur)
	}
	writeJSON(w, http.StatusOK, ans)
}

func optUint(p *uint64) string {
	if p == nil {
		return ""
	}
	return strconv.FormatUint(*p, 10)
}

// ---- invoice

type invoiceLine struct {
	Item          string  `json:"item"`
	Kind          string  `json:"kind"`
	External      *bool   `json:"external,omitempty"`
	From          string  `json:"from"`
	To            string  `json:"to"`
	Tier          int     `json:"tier"`
	TierFrom      string  `json:"tier_from"`
	TierTo        *string `json:"tier_to"`
	Quantity      string  `json:"quantity"`
	QuantityExact string  `json:"quantity_exact"`
	Unit          string  `json:"unit"`
	UnitPrice     string  `json:"unit_price"`
	Amount        string  `json:"amount"`
	Currency      string  `json:"currency"`
}

type invoiceSegment struct {
	From                      string            `json:"from"`
	To                        string            `json:"to"`
	MonthDays                 int               `json:"month_days"`
	MonthSeconds              int64             `json:"month_seconds"`
	BandwidthInBytes          string            `json:"bandwidth_in_bytes"`
	BandwidthOutBytes         string            `json:"bandwidth_out_bytes"`
	StorageByteSeconds        string            `json:"storage_byte_seconds"`
	LicenseServerDays         int64             `json:"license_server_days"`
	LicenseExternalServerDays int64             `json:"license_external_server_days"`
	RateVersions              map[string]string `json:"rate_versions"`
}

type invoiceAnswer struct {
	TenantID string           `json:"tenant_id"`
	From     string           `json:"from"`
	To       string           `json:"to"`
	TZ       string           `json:"tz"`
	Currency string           `json:"currency"`
	GBBytes  string           `json:"gb_bytes"`
	Lines    []invoiceLine    `json:"lines"`
	Total    string           `json:"total"`
	Segments []invoiceSegment `json:"segments"`
	// Lead is the usage of the period's first month before the period, which
	// graduated tiers continue from (not billed here).
	Lead []invoiceSegment `json:"lead_segments"`
}

// quantityString is the exact decimal when it ends within 30 places (every
// GB of bytes does), else rounded half to even to 12 places.
func quantityString(q *big.Rat) string {
	if s, ok := formatExact(q, 30); ok {
		return s
	}
	return formatRat(q, 12)
}

func (s *Server) invoice(w http.ResponseWriter, r *http.Request, tenant string) {
	p, err := parseParams(r.URL.RawQuery, routeParams("/v1/tenants/{tid}/invoice")...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	loc, err := parseZone(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := parseFormat(p, r.Header.Get("Accept"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sp, err := parseSpan(p, loc, s.cfg.Now(), maxInvoiceDays, time.Hour)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rates := s.rates.Load()
	plan, err := rates.Plan(tenant, Period{From: sp.From, To: sp.To, Loc: loc})
	var np *NoPriceError
	var pe *PeriodError
	if errors.As(err, &np) || errors.As(err, &pe) {
		s.fail(w, r, badParam(sp.By, "%v", err))
		return
	}
	if err != nil {
		s.fail(w, r, zoneError(err))
		return
	}
	ctx, cancel := s.queryContext(r)
	defer cancel()
	readings, err := s.store.Readings(ctx, plan)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inv, err := rates.Price(plan, readings)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ans := invoiceAnswer{TenantID: tenant, From: formatIn(sp.From, loc), To: formatIn(sp.To, loc), TZ: loc.String(),
		Currency: inv.Currency, GBBytes: rates.GBBytes.String(), Lines: []invoiceLine{}, Total: formatUnits(inv.Total, inv.MinorUnits),
		Segments: []invoiceSegment{}, Lead: []invoiceSegment{}}
	for _, l := range inv.Lines {
		seg, last := plan.Segments[l.Segment], plan.Segments[l.Segment+l.Segments-1]
		il := invoiceLine{Item: string(l.Item), Kind: l.Item.Kind(), From: formatIn(seg.From, loc), To: formatIn(last.To, loc),
			Tier: l.Tier, TierFrom: quantityString(l.TierFrom), Quantity: quantityString(l.Quantity), QuantityExact: l.Quantity.RatString(),
			Unit: l.Item.Unit(), UnitPrice: quantityString(l.UnitPrice), Amount: formatUnits(l.Amount, inv.MinorUnits), Currency: inv.Currency}
		if l.TierTo != nil {
			t := quantityString(l.TierTo)
			il.TierTo = &t
		}
		if l.Item == ItemLicense || l.Item == ItemLicenseExternal {
			ext := l.Item == ItemLicenseExternal
			il.External = &ext
		}
		ans.Lines = append(ans.Lines, il)
	}
	for i, su := range inv.Segments {
		seg := plan.Segments[i]
		is := invoiceSegment{From: formatIn(su.From, loc), To: formatIn(su.To, loc), MonthDays: su.MonthDays, MonthSeconds: su.MonthSeconds,
			BandwidthInBytes: su.BandwidthInBytes.String(), BandwidthOutBytes: su.BandwidthOutBytes.String(),
			StorageByteSeconds: su.StorageByteSeconds.String(), LicenseServerDays: su.ServerDays, LicenseExternalServerDays: su.ExternalServerDays,
			RateVersions: map[string]string{}}
		for it, eff := range seg.Effective {
			is.RateVersions[string(it)] = eff.UTC().Format(time.RFC3339)
		}
		if seg.Lead {
			ans.Lead = append(ans.Lead, is)
		} else {
			ans.Segments = append(ans.Segments, is)
		}
	}
	if f == formatCSV {
		t := &csvTable{header: []string{"item", "kind", "external", "from", "to", "tier", "quantity", "unit", "unit_price", "amount", "currency"}}
		for _, l := range ans.Lines {
			ext := ""
			if l.External != nil {
				ext = strconv.FormatBool(*l.External)
			}
			t.add(l.Item, l.Kind, ext, l.From, l.To, strconv.Itoa(l.Tier), l.Quantity, l.Unit, l.UnitPrice, l.Amount, l.Currency)
		}
		t.add("total", "", "", ans.From, ans.To, "", "", "", "", ans.Total, ans.Currency)
		writeCSV(w, "invoice-"+tenant, t)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// ---- events

type eventOut struct {
	EntryID     string  `json:"entry_id"`
	Kind        string  `json:"kind"`
	EventID     string  `json:"event_id"`
	Replaces    string  `json:"replaces"`    // the event id it corrects, "" for none
	Counted     bool    `json:"counted"`     // false once a correction replaced it
	ReplacedBy  string  `json:"replaced_by"` // the event that counted instead when it was replaced
	EventType   string  `json:"event_type"`
	Region      string  `json:"region"`
	DataCenter  string  `json:"data_center"`
	ResourceID  string  `json:"resource_id"`
	ServerID    string  `json:"server_id"`
	ServerName  string  `json:"server_name"`
	External    bool    `json:"external"`
	StartTime   *string `json:"start_time"`
	EndTime     *string `json:"end_time"`
	EventTime   *string `json:"event_time"`
	Time        string  `json:"time"`
	Quantity    string  `json:"quantity"`
	ByteSeconds string  `json:"byte_seconds"`
}

type eventsAnswer struct {
	TenantID   string     `json:"tenant_id"`
	From       string     `json:"from"`
	To         string     `json:"to"`
	Events     []eventOut `json:"events"`
	NextCursor *string    `json:"next_cursor"`
}

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, tenant string) {
	p, err := parseParams(r.URL.RawQuery, routeParams("/v1/tenants/{tid}/events")...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	loc, err := parseZone(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	kinds, err := parseKinds(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := parseLimit(p, 100, maxEventsLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	after, err := parseCursor(p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := parseFormat(p, r.Header.Get("Accept"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sp, err := parseSpan(p, loc, s.cfg.Now(), maxUsageDays, time.Second)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := EventsQuery{Tenant: tenant, From: sp.From, To: sp.To, After: after, Limit: limit + 1}
	if len(kinds) < len(UsageKinds) {
		q.Kinds = kinds
	}
	ctx, cancel := s.queryContext(r)
	defer cancel()
	evs, err := s.store.Events(ctx, q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ans := eventsAnswer{TenantID: tenant, From: formatIn(sp.From, loc), To: formatIn(sp.To, loc), Events: []eventOut{}}
	if len(evs) > limit {
		evs = evs[:limit]
		last := evs[limit-1]
		c := encodeCursor(EventCursor{Time: last.Time.Unix(), Kind: last.Kind, EntryID: last.EntryID})
		ans.NextCursor = &c
	}
	for _, e := range evs {
		ans.Events = append(ans.Events, eventOut{EntryID: e.EntryID, Kind: e.Kind, EventID: e.EventID,
			Replaces: e.ReferenceID, Counted: e.ReplacedBy == "", ReplacedBy: e.ReplacedBy, EventType: e.EventType,
			Region: e.Region, DataCenter: e.DataCenter, ResourceID: e.ResourceID, ServerID: e.ServerID, ServerName: e.ServerName,
			External: e.External, StartTime: optTime(e.StartTime), EndTime: optTime(e.EndTime), EventTime: optTime(e.EventTime),
			Time: e.Time.UTC().Format(time.RFC3339), Quantity: strconv.FormatUint(e.Quantity, 10), ByteSeconds: e.ByteSeconds.String()})
	}
	if ans.NextCursor != nil {
		w.Header().Set("Feedmeter-Next-Cursor", *ans.NextCursor)
	}
	if f == formatCSV {
		t := &csvTable{header: []string{"entry_id", "kind", "event_id", "replaces", "counted", "replaced_by", "event_type", "region", "data_center", "resource_id", "server_id",
			"server_name", "external", "start_time", "end_time", "event_time", "time", "quantity", "byte_seconds"}}
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		for _, e := range ans.Events {
			t.add(cell(e.EntryID), e.Kind, cell(e.EventID), cell(e.Replaces), strconv.FormatBool(e.Counted), cell(e.ReplacedBy), e.EventType, cell(e.Region), cell(e.DataCenter), cell(e.ResourceID),
				cell(e.ServerID), cell(e.ServerName), strconv.FormatBool(e.External), str(e.StartTime), str(e.EndTime), str(e.EventTime),
				e.Time, e.Quantity, e.ByteSeconds)
		}
		writeCSV(w, "events-"+tenant, t)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// ---- ranking

type tenantRank struct {
	Rank     int    `json:"rank"`
	TenantID string `json:"tenant_id"`
	Value    string `json:"value"`
	Events   uint64 `json:"events"`
}

type topAnswer struct {
	From    string       `json:"from"`
	To      string       `json:"to"`
	Kind    *string      `json:"kind"`
	Unit    string       `json:"unit"`
	Tenants []tenantRank `json:"tenants"`
}

func (s *Server) topTenants(w http.ResponseWriter, r *http.Request) {
	p, err := parseParams(r.URL.RawQuery, routeParams("/v1/usage/tenants")...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := TopQuery{}
	if p.has("kind") {
		q.Kind = p.get("kind")
		if !slices.Contains(UsageKinds, q.Kind) {
			s.fail(w, r, badParam("kind", "%q is not one of %s (one kind)", printable(q.Kind), strings.Join(UsageKinds, ", ")))
			return
		}
	}
	if q.Limit, err = parseLimit(p, 10, maxTenantLimit); err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := parseFormat(p, r.Header.Get("Accept"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sp, err := parseSpan(p, time.UTC, s.cfg.Now(), maxUsageDays, time.Hour)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q.From, q.To = sp.From, sp.To
	ctx, cancel := s.queryContext(r)
	defer cancel()
	top, err := s.store.TopTenants(ctx, q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ans := topAnswer{From: formatIn(sp.From, time.UTC), To: formatIn(sp.To, time.UTC), Tenants: []tenantRank{}}
	switch q.Kind {
	case "":
		ans.Unit = "events"
	case string(model.KindStorage):
		ans.Unit = "byte_seconds"
	case string(model.KindLicense):
		ans.Unit = "server_days"
	default:
		ans.Unit = "bytes"
	}
	if q.Kind != "" {
		ans.Kind = &q.Kind
	}
	for i, t := range top {
		ans.Tenants = append(ans.Tenants, tenantRank{Rank: i + 1, TenantID: t.Tenant, Value: t.Value.String(), Events: t.Events})
	}
	if f == formatCSV {
		t := &csvTable{header: []string{"rank", "tenant_id", "value", "unit", "events"}}
		for _, tr := range ans.Tenants {
			t.add(strconv.Itoa(tr.Rank), cell(tr.TenantID), tr.Value, ans.Unit, strconv.FormatUint(tr.Events, 10))
		}
		writeCSV(w, "tenants", t)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}
