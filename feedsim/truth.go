package feedsim

import (
	"bytes"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Truth is what a tenant's backup feed holds, as GET /_sim/truth reports it:
// per kind and UTC day (of startTime, or of eventTime for snapshots and
// system events), over the entries visible now (the head delay withholds
// the newest). Entries served malformed are not counted; they are listed.
//
// Each day and kind has two sums. The served one (DayTruth's Usage) counts
// every entry served: what ingest publishes, copies and corrected events
// included. Billed counts each usage event once, corrections applied, by the
// rules of doc.go ("Identity and corrections"); without Config.CUF the two
// are equal. Every entry served and not malformed is exactly one of billed,
// republished, conflict or replaced, on its own day and kind:
// Entries = Billed.Entries + Republished + Conflicts + Replaced.
type Truth struct {
	AsOf string `json:"as_of"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"` // exclusive
	// CUF is the identity facts of the generated history, in the --cuf
	// syntax ("none").
	CUF     string        `json:"cuf"`
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
	// Conflicts lists the entries that publish an event again with other
	// content: not billed (the first copy is), to be rejected. Feed order.
	Conflicts []ConflictInfo `json:"conflicts"`
}

// DayTruth is one kind on one day.
type DayTruth struct {
	Day  string `json:"day"`
	Kind string `json:"kind"` // bandwidthIn, bandwidthOut, storage, license, other
	// Usage sums every entry served (its JSON members are DayTruth's own, as
	// they always were).
	Usage
	// Billed sums the events a bill counts: each event (tenant, CUF id,
	// kind) once, as first published, and of each tree of corrections only
	// the event that counts.
	Billed Usage `json:"billed"`
	// Republished counts entries that publish an event again with the same
	// content (not billed, not an error); Conflicts those that publish it
	// again with other content (rejected); Replaced the events a correction
	// replaces (the originals and the corrections corrected in turn or
	// outdated by a later sibling).
	Republished int `json:"republished"`
	Conflicts   int `json:"conflicts"`
	Replaced    int `json:"replaced"`
}

// Usage sums entries of one kind on one day. Byte counts are decimal
// strings: exact whatever their size.
type Usage struct {
	Entries int `json:"entries"`
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

// ConflictInfo names an entry whose event was published before with other
// content.
type ConflictInfo struct {
	ID      string `json:"id"`       // its atom id (urn:uuid:…)
	KeptID  string `json:"kept_id"`  // the atom id of the copy billed (published first)
	EventID string `json:"event_id"` // their CUF event id
	Day     string `json:"day"`      // of the conflicting entry
	Kind    string `json:"kind"`
}

type dayKind struct {
	day  int64
	kind string
}

type acc struct {
	served, billed                   sums
	republished, conflicts, replaced int
}

type sums struct {
	n, snaps       int
	bw, st, stSecs u128
	servers        map[string]struct{}
}

func (s *sums) add(e *entry, ag *agent) {
	s.n++
	if e.summary() {
		return
	}
	switch e.kind {
	case kBandwidthIn, kBandwidthOut:
		s.bw.add64(e.value)
	case kStorage:
		s.st.add64(e.value)
		s.stSecs.addMul(e.value, uint64(e.dur))
	case kLicense, kSnapshot:
		key := ag.serverID
		if e.kind == kSnapshot {
			s.snaps++
			if ag.noServerID {
				key = "name:" + ag.serverName
			}
		}
		if s.servers == nil {
			s.servers = map[string]struct{}{}
		}
		s.servers[key] = struct{}{}
	}
}

func (s *sums) usage() Usage {
	return Usage{Entries: s.n, BandwidthBytes: s.bw.String(), StorageBytes: s.st.String(),
		StorageByteSeconds: s.stSecs.String(), LicensedServers: len(s.servers), LicenseSnapshots: s.snaps}
}

// truth computes the truth of tenants between the Unix days [from, to).
func (s *Server) truth(tenants []*tenant, from, to int64) Truth {
	now := s.now()
	out := Truth{AsOf: now.UTC().Format("2006-01-02T15:04:05.000Z"), CUF: s.cfg.CUF.String(), Tenants: []TenantTruth{}}
	thresh := s.threshold()
	delay := s.cfg.HeadDelay.Milliseconds()
	for _, t := range tenants {
		f := t.backup
		tt := TenantTruth{Tenant: t.id, Days: []DayTruth{}, Malformed: []MalformedInfo{}, Conflicts: []ConflictInfo{}}
		accs := map[dayKind]*acc{}
		f.mu.RLock()
		n := f.visible(now.UnixMilli(), delay)
		tt.Entries = n
		if n > 0 {
			tt.NewestID = "urn:uuid:" + f.entries[n-1].id.String()
		}
		bill, kept := f.bill(n, thresh)
		for i := 0; i < n; i++ {
			e := &f.entries[i]
			day := floorDiv(e.start, 86400)
			if day < from || day >= to {
				continue
			}
			k := e.modelKind()
			if bill[i] == billMalformed {
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
			ag := t.agents[e.agent]
			a.served.add(e, ag)
			switch bill[i] {
			case billCounted:
				a.billed.add(e, ag)
			case billRepublished:
				a.republished++
			case billConflict:
				a.conflicts++
				tt.Conflicts = append(tt.Conflicts, ConflictInfo{
					ID: "urn:uuid:" + e.id.String(), KeptID: "urn:uuid:" + f.entries[kept[i]].id.String(),
					EventID: f.linkOf(e).eventID().String(), Day: string(appendDay(nil, day)), Kind: k,
				})
			case billReplaced:
				a.replaced++
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
				Day: string(appendDay(nil, k.day)), Kind: k.kind, Usage: a.served.usage(), Billed: a.billed.usage(),
				Republished: a.republished, Conflicts: a.conflicts, Replaced: a.replaced,
			})
		}
		out.Tenants = append(out.Tenants, tt)
	}
	return out
}

// billing is what a bill makes of an entry.
type billing uint8

const (
	billCounted     billing = iota // billed
	billRepublished                // its event was published before, with the same content
	billConflict                   // its event was published before, with other content
	billReplaced                   // a correction replaces its event
	billMalformed                  // served malformed: no event at all
)

// bill decides what a bill makes of each of the first n entries, by the
// rules of doc.go ("Identity and corrections"), and for each conflict the
// index of the copy kept. The caller holds f.mu.
func (f *feed) bill(n int, thresh uint64) ([]billing, map[int]int) {
	out := make([]billing, n)
	kept := map[int]int{}
	for i := range out {
		if f.malformed(i, thresh, false) {
			out[i] = billMalformed
		}
	}
	if f.links == nil {
		// Every entry is an event of its own that corrects none.
		return out, kept
	}
	// Identity: the first copy of (event id, kind) in feed order is the
	// event.
	type key struct {
		id   uuid
		kind string
	}
	first := map[key]int{}
	children := map[key][]int{} // by the id they correct
	var events []int
	for i := 0; i < n; i++ {
		if out[i] == billMalformed {
			continue
		}
		e := &f.entries[i]
		l := f.linkOf(e)
		k := key{l.eventID(), e.modelKind()}
		if j, ok := first[k]; ok {
			if o := &f.entries[j]; e.kind == o.kind && e.etype == o.etype && e.agent == o.agent && e.start == o.start &&
				e.dur == o.dur && e.value == o.value && l == f.linkOf(o) {
				out[i] = billRepublished
			} else {
				out[i], kept[i] = billConflict, j
			}
			continue
		}
		first[k] = i
		events = append(events, i)
		if l.ref != (uuid{}) {
			children[key{l.ref, k.kind}] = append(children[key{l.ref, k.kind}], i)
		}
	}
	// Corrections: of each tree only the event its root leads to counts,
	// going down to the child published last (ties: the greater event id).
	var roots []key
	seen := map[key]bool{}
	for _, i := range events {
		e := &f.entries[i]
		l := f.linkOf(e)
		k := key{l.eventID(), e.modelKind()}
		if l.ref == (uuid{}) {
			if len(children[k]) > 0 {
				out[i] = billReplaced
				roots = append(roots, k)
			}
			continue
		}
		out[i] = billReplaced
		if r := (key{l.ref, k.kind}); !seen[r] {
			if _, published := first[r]; !published {
				roots = append(roots, r) // a virtual root: its event never came
			}
			seen[r] = true
		}
	}
	// Published times compare to the second, as the sink's do (usage_events
	// keeps whole seconds): two corrections of one event published in the
	// same second are told apart by their event ids.
	later := func(i, j int) bool {
		a, b := &f.entries[i], &f.entries[j]
		if pa, pb := floorDiv(a.published, 1000), floorDiv(b.published, 1000); pa != pb {
			return pa > pb
		}
		ia, ib := f.linkOf(a).eventID(), f.linkOf(b).eventID()
		return bytes.Compare(ia[:], ib[:]) > 0
	}
	for _, k := range roots {
		leaf := -1
		for cs := children[k]; len(cs) > 0; cs = children[k] {
			leaf = cs[0]
			for _, c := range cs[1:] {
				if later(c, leaf) {
					leaf = c
				}
			}
			k = key{f.linkOf(&f.entries[leaf]).eventID(), k.kind}
		}
		out[leaf] = billCounted
	}
	return out, kept
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
