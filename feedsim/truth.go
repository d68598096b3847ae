package feedsim

import (
	"net/http"
	"sort"
	"strings"
	"time"
)

// Truth is what a tenant's backup feed holds, as GET /_sim/truth reports it:
// per kind and UTC day (of startTime, or of eventTime for snapshots and
// system events), over the entries visible now (the head delay withholds
// the newest). Entries served malformed are not counted; they are listed.
type Truth struct {
	AsOf    string        `json:"as_of"`
	From    string        `json:"from,omitempty"`
	To      string        `json:"to,omitempty"` // exclusive
	Tenants []TenantTruth `json:"tenants"`
}

// TenantTruth is one tenant's part of Truth.
type TenantTruth struct {
	Tenant string `json:"tenant"`
	// Entries is how many entries the feed serves now (all days, malformed
	// included); NewestID the newest of them: a reader that has processed
	// it has seen everything this truth covers.
	Entries   int             `json:"entries"`
	NewestID  string          `json:"newest_id,omitempty"`
	Days      []DayTruth      `json:"days"`
	Malformed []MalformedInfo `json:"malformed"`
}

// DayTruth is one kind on one day. Byte counts are decimal strings: exact
// whatever their size.
type DayTruth struct {
	Day     string `json:"day"`
	Kind    string `json:"kind"` // bandwidthIn, bandwidthOut, storage, license, other
	Entries int    `json:"entries"`
	// BandwidthBytes sums bandwidthIn or bandwidthOut.
	BandwidthBytes string `json:"bandwidth_bytes"`
	// StorageBytes sums the storage values; StorageByteSeconds sums storage
	// × (endTime − startTime) in seconds.
	StorageBytes       string `json:"storage_bytes"`
	StorageByteSeconds string `json:"storage_byte_seconds"`
	// LicensedServers counts distinct servers with a license entry (v1 or
	// snapshot) that day: by serverID, or by serverName when a snapshot has
	// no serverID. LicenseSnapshots counts the snapshots among Entries.
	LicensedServers  int `json:"licensed_servers"`
	LicenseSnapshots int `json:"license_snapshots"`
}

// MalformedInfo names an entry served malformed.
type MalformedInfo struct {
	ID    string `json:"id"`
	Day   string `json:"day"`
	Kind  string `json:"kind"`
	Fault string `json:"fault"` // broken, missing or wrong-type
}

type dayKind struct {
	day  int64
	kind string
}

type acc struct {
	n, snaps       int
	bw, st, stSecs u128
	servers        map[string]struct{}
}

// truth computes the truth of tenants between the Unix days [from, to).
func (s *Server) truth(tenants []*tenant, from, to int64) Truth {
	now := s.now()
	out := Truth{AsOf: now.UTC().Format("2006-01-02T15:04:05.000Z"), Tenants: []TenantTruth{}}
	thresh := s.threshold()
	delay := s.cfg.HeadDelay.Milliseconds()
	for _, t := range tenants {
		f := t.backup
		tt := TenantTruth{Tenant: t.id, Days: []DayTruth{}, Malformed: []MalformedInfo{}}
		accs := map[dayKind]*acc{}
		f.mu.RLock()
		n := f.visible(now.UnixMilli(), delay)
		tt.Entries = n
		if n > 0 {
			tt.NewestID = "urn:uuid:" + f.entries[n-1].id.String()
		}
		for i := 0; i < n; i++ {
			e := &f.entries[i]
			day := floorDiv(e.start, 86400)
			if day < from || day >= to {
				continue
			}
			k := kinds[e.kind].model
			if f.malformed(i, thresh, false) {
				tt.Malformed = append(tt.Malformed, MalformedInfo{
					ID: "urn:uuid:" + e.id.String(), Day: string(appendDay(nil, day)), Kind: k,
					Fault: variantNames[malformedVariant(e)],
				})
				continue
			}
			a := accs[dayKind{day, k}]
			if a == nil {
				a = &acc{}
				accs[dayKind{day, k}] = a
			}
			a.n++
			switch e.kind {
			case kBandwidthIn, kBandwidthOut:
				a.bw.add64(e.value)
			case kStorage:
				a.st.add64(e.value)
				a.stSecs.addMul(e.value, uint64(e.dur))
			case kLicense, kSnapshot:
				ag := t.agents[e.agent]
				key := ag.serverID
				if e.kind == kSnapshot {
					a.snaps++
					if ag.noServerID {
						key = "name:" + ag.serverName
					}
				}
				if a.servers == nil {
					a.servers = map[string]struct{}{}
				}
				a.servers[key] = struct{}{}
			}
		}
		f.mu.RUnlock()
		keys := make([]dayKind, 0, len(accs))
		for k := range accs {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].day != keys[j].day {
				return keys[i].day < keys[j].day
			}
			return keys[i].kind < keys[j].kind
		})
		for _, k := range keys {
			a := accs[k]
			tt.Days = append(tt.Days, DayTruth{
				Day: string(appendDay(nil, k.day)), Kind: k.kind, Entries: a.n,
				BandwidthBytes: a.bw.String(), StorageBytes: a.st.String(), StorageByteSeconds: a.stSecs.String(),
				LicensedServers: len(a.servers), LicenseSnapshots: a.snaps,
			})
		}
		out.Tenants = append(out.Tenants, tt)
	}
	return out
}

// handleTruth is GET /_sim/truth?tenant=…&from=…&to=…: tenant may repeat or
// be a comma list (default: all); from and to are dates (2026-10-01) or
// RFC 3339 times, from inclusive and to exclusive, by UTC day.
func (s *Server) handleTruth(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	var ts []*tenant
	for _, list := range v["tenant"] {
		for _, id := range strings.Split(list, ",") {
			if id = strings.TrimSpace(id); id == "" {
				continue
			}
			t := s.byID[id]
			if t == nil {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown tenant " + id})
				return
			}
			ts = append(ts, t)
		}
	}
	if ts == nil {
		ts = s.tenants
	}
	from, to := int64(-1<<40), int64(1<<40)
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &from}, {"to", &to}} {
		x := v.Get(p.name)
		if x == "" {
			continue
		}
		d, err := parseDay(x)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": p.name + ": " + err.Error()})
			return
		}
		*p.dst = d
	}
	out := s.truth(ts, from, to)
	out.From, out.To = v.Get("from"), v.Get("to")
	writeJSON(w, http.StatusOK, out)
}

// parseDay reads a date or an RFC 3339 time as a Unix day.
func parseDay(x string) (int64, error) {
	t, err := time.Parse("2006-01-02", x)
	if err != nil {
		t, err = time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return 0, err
		}
	}
	return floorDiv(t.Unix(), 86400), nil
}

// Truth returns the truth of every tenant over all days.
func (s *Server) Truth() Truth { return s.truth(s.tenants, -1<<40, 1<<40) }
