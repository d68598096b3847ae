package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// TestCursorRoundTrip: the cursor of any entry id up to 40 KB comes back
// as itself, also one full of the characters json.Marshal escapes for
// HTML, and fits serve's 64 KiB request header.
func TestCursorRoundTrip(t *testing.T) {
	for _, id := range []string{
		"urn:uuid:8d89673c-c989-11e1-895a-0b3d632a8a89",
		strings.Repeat("&", 347),
		strings.Repeat("<>", 1200),
		strings.Repeat("a", 2017),
		strings.Repeat("x", 40000),
		"tab\there \"quoted\" \u2028 ünïcode",
	} {
		want := EventCursor{Time: 1791000000, Kind: "storage", EntryID: id}
		c := encodeCursor(want)
		if len(c) > 60<<10 {
			t.Errorf("%d-byte id: cursor of %d bytes", len(id), len(c))
		}
		p, err := parseParams("cursor="+url.QueryEscape(c), "cursor")
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseCursor(p)
		if err != nil || got == nil || *got != want {
			t.Errorf("%d-byte id: cursor read back as %+v, %v", len(id), got, err)
		}
	}
}

// TestZoneFilesThatAreNotZones: names in a system's tz database that are
// not IANA zones are a 400 on tz, not a zone with wrong or the host's
// offsets.
func TestZoneFilesThatAreNotZones(t *testing.T) {
	for _, name := range []string{"Local", "localtime", "posixrules", "Factory", "posix/Factory", "posix/localtime", "right/Europe/Berlin", "right/UTC"} {
		p, err := parseParams("tz="+url.QueryEscape(name), "tz")
		if err != nil {
			t.Fatal(err)
		}
		var pe *ParamError
		if _, err := parseZone(p); !errors.As(err, &pe) || pe.Param != "tz" {
			t.Errorf("tz=%s: %v, want a 400 on tz", name, err)
		}
	}
	for _, name := range []string{"Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "posix/Europe/Berlin"} {
		p, _ := parseParams("tz="+url.QueryEscape(name), "tz")
		if loc, err := parseZone(p); err != nil || loc.String() != name {
			t.Errorf("tz=%s: %v, %v", name, loc, err)
		}
	}
}

// tooManyRows answers every usage with more sums than allowed.
type tooManyRows struct{ checkingStore }

func (tooManyRows) Usage(_ context.Context, q UsageQuery) ([]UsageSum, error) {
	if q.MaxRows != maxUsageRows {
		panic("usage asked without the row limit")
	}
	return nil, fmt.Errorf("usage of tenant %s: %w", q.Tenant, &TooManyRowsError{Max: q.MaxRows})
}

// fullRows answers usage with as many sums as allowed: with the licences
// of a month, one row too many.
type fullRows struct{ checkingStore }

func (fullRows) Usage(_ context.Context, q UsageQuery) ([]UsageSum, error) {
	out := make([]UsageSum, q.MaxRows)
	for i := range out {
		out[i] = UsageSum{Kind: "storage", Group: []string{strconv.Itoa(i)}, Quantity: big.NewInt(1), ByteSeconds: big.NewInt(1)}
	}
	return out, nil
}

// TestTooManyRows: an answer past the row limit is a 400 naming group_by
// (or granularity without one), not a 500 or a server out of memory; the
// limit holds for the usage and the licence rows together.
func TestTooManyRows(t *testing.T) {
	tokens, toks := testTokens(t, "1001")
	rates := mustCard(t, apiRates)
	srv := newTestServer(t, tooManyRows{}, rates, tokens)
	full := newTestServer(t, fullRows{}, rates, tokens)
	for _, c := range []struct {
		base, path, param string
	}{
		{srv.URL, "/v1/tenants/1001/usage?period=2026-10&group_by=server", "group_by"},
		{srv.URL, "/v1/tenants/1001/usage?period=2026-10", "granularity"},
		{full.URL, "/v1/tenants/1001/usage?period=2026-10&granularity=month&group_by=server&kind=storage,license", "group_by"},
	} {
		code, body, _ := apiClient{t, c.base, toks["1001"]}.get(c.path)
		var e apiError
		err := json.Unmarshal(body, &e)
		if err != nil || code != 400 || e.Error.Parameter != c.param || !strings.Contains(e.Error.Message, "100000 rows") {
			t.Errorf("%s: %d %+v, %v", c.path, code, e, err)
		}
	}
}
