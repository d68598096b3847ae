package feedsim

import (
	"sync"
	"sync/atomic"

	"github.com/feedmeter/feedmeter/model"
)

// kind is what an entry is. The four Cloud Backup usage products come
// first, then the license snapshot, system events and the servers feed's
// Nova external events.
type kind uint8

const (
	kBandwidthIn  kind = iota // bandwidthIn v1, USAGE
	kBandwidthOut             // bandwidthOut v1, USAGE
	kStorage                  // storage v1, USAGE
	kLicense                  // license v1, USAGE
	kSnapshot                 // license product version 3, USAGE_SNAPSHOT
	kSystem                   // an event without product: UP, DOWN, INFO…
	kServer                   // a Nova external event (servers feed)
	numKinds
)

// kindInfo is how a kind is written.
type kindInfo struct {
	product string // local name of the product namespace, "" without product
	prefix  string // XML prefix of the product namespace (as in the seed)
	term    string // category term
	model   string // model.Kind the parser should give it
}

var kinds = [numKinds]kindInfo{
	kBandwidthIn:  {string(model.KindBandwidthIn), "cb-bin", "cloudbackup.bandwidthIn.agent.usage", string(model.KindBandwidthIn)},
	kBandwidthOut: {string(model.KindBandwidthOut), "cb-bout", "cloudbackup.bandwidthOut.agent.usage", string(model.KindBandwidthOut)},
	kStorage:      {string(model.KindStorage), "cb-store", "cloudbackup.storage.agent.usage", string(model.KindStorage)},
	kLicense:      {string(model.KindLicense), "cb-lic", "cloudbackup.license.agent.usage", string(model.KindLicense)},
	kSnapshot:     {string(model.KindLicense), "cb-lic", "cloudbackup.license.agent.usage_snapshot", string(model.KindLicense)},
	kSystem:       {"", "", "", string(model.KindOther)},
	kServer:       {"", "", "", string(model.KindOther)},
}

// systemTypes are the event types of system entries, indexed by entry.etype.
var systemTypes = [...]string{"UP", "DOWN", "INFO", "CREATE", "UPDATE", "DELETE", "SUSPEND", "UNSUSPEND", "EXTENDED", "ERROR"}

// systemTerms are their category terms ("cloudbackup.agent.up").
var systemTerms = func() [len(systemTypes)]string {
	var t [len(systemTypes)]string
	for i, s := range systemTypes {
		b := []byte("cloudbackup.agent.")
		for _, c := range []byte(s) {
			b = append(b, c|0x20)
		}
		t[i] = string(b)
	}
	return t
}()

// summaryTerms are the category terms of USAGE_SUMMARY entries
// ("cloudbackup.bandwidthIn.agent.usage_summary").
var summaryTerms = func() [numKinds]string {
	var t [numKinds]string
	for k := kBandwidthIn; k <= kLicense; k++ {
		t[k] = kinds[k].term + "_summary"
	}
	return t
}()

// term returns the entry's product category term.
func (e *entry) term() string {
	switch {
	case e.kind == kSystem:
		return systemTerms[e.etype]
	case e.kind == kServer:
		return serverTerm
	case e.summary():
		return summaryTerms[e.kind]
	}
	return kinds[e.kind].term
}

// Flags of a USAGE entry (kBandwidthIn to kLicense), kept in etype.
const (
	// fMidnight: its endTime, a midnight, is written as 24:00:00 of the day
	// before.
	fMidnight uint8 = 1 << iota
	// fSummary: a USAGE_SUMMARY of the kind's usage over its interval, not
	// usage itself (model kind other).
	fSummary
)

// usage reports whether e is a USAGE or USAGE_SUMMARY entry: an interval
// with a product quantity.
func (e *entry) usage() bool { return e.kind <= kLicense }

func (e *entry) summary() bool { return e.usage() && e.etype&fSummary != 0 }

func (e *entry) midnight() bool { return e.usage() && e.etype&fMidnight != 0 }

// modelKind is the model.Kind the parser gives the entry.
func (e *entry) modelKind() string {
	if e.summary() {
		return string(model.KindOther)
	}
	return kinds[e.kind].model
}

// entry is one feed entry, kept small (48 bytes) and rendered on request.
// Everything else an entry shows comes from its tenant and agent, or is
// derived from its id (the event id), or for the few entries of the CUF
// facts from its link.
type entry struct {
	id        uuid   // atom:id is urn:uuid:<id>
	published int64  // Unix ms of atom:updated and atom:published
	start     int64  // Unix s of startTime, or of eventTime
	value     uint64 // bytes for bandwidth and storage; for kServer an index into feed.nova
	dur       uint32 // s from startTime to endTime; 0 when the event has eventTime
	agent     uint16 // index in tenant.agents
	kind      kind
	etype     uint8 // kSystem: index in systemTypes; USAGE kinds: flags (fMidnight, fSummary)
}

// agent is a Cloud Backup agent on a server.
type agent struct {
	id         uuid
	rid        string // resourceId: the agent id as text
	serverID   string // an integer or a UUID
	serverName string
	nameXML    string // serverName escaped for an XML attribute
	nameJSON   string // serverName as a JSON string, quotes included
	external   bool   // the server is outside Rackspace
	noServerID bool   // its snapshots carry no serverID and it sends no license v1
	hourly     bool   // usage every hour, else every day
	storage    uint64 // bytes in use now
	config     uuid   // its backup configuration (Cloud Backup API)
	host       string // Nova compute host; "" when not assigned to one
}

// tenant is one account with its agents and feeds.
type tenant struct {
	id         string
	region, dc string
	agents     []*agent
	byAgent    map[uuid]int
	byServer   map[uuid]int // Nova servers (agents whose serverID is a UUID)
	backup     *feed
	servers    *feed
	api        apiState // Cloud Backup API state, guarded by api.mu
}

// feed is one tenant's feed: entries oldest first, the order of the
// underlying store; pages show them newest first.
type feed struct {
	name   string // "backup/events" or "servers/events"
	tenant *tenant
	id     uuid  // the feed's atom:id
	empty  int64 // Unix ms shown as the updated time of a feed without entries

	mu      sync.RWMutex
	entries []entry
	byID    map[uuid]int32
	// links tie the CUF facts' entries to other events, by atom id:
	// republished and conflicting copies to their original, corrections to
	// the event they correct (nil without the facts).
	links map[uuid]cufLink
	nova  []novaEvent // payloads of kServer entries
	// gen is how many entries were generated from the flags (not live).
	gen int

	// served records, two bits an entry, whether the entry's malformed
	// fault was decided (by its first serving) and its outcome, so that an
	// entry once served keeps its shape even when the malformed rate
	// changes. Grown under mu's write lock, read and set atomically.
	decided []atomic.Uint32
	bad     []atomic.Uint32
}

// cufLink ties an entry to other events (Config.CUF).
type cufLink struct {
	// src is the atom id of the entry whose event this entry publishes
	// again (a republished or conflicting copy): the event id and whatever
	// else of the event is derived from an id come from it. Zero: the
	// entry's own id.
	src uuid
	// ref is the event id this entry's event corrects (its referenceId);
	// zero when it corrects none.
	ref uuid
}

// linkOf returns e's link, src filled in. The caller holds mu.
func (f *feed) linkOf(e *entry) cufLink {
	var l cufLink
	if f.links != nil {
		l = f.links[e.id]
	}
	if l.src == (uuid{}) {
		l.src = e.id
	}
	return l
}

// eventID is the CUF event id of an entry whose link is l.
func (l cufLink) eventID() uuid { return l.src.derive(eventIDKey) }

func newFeed(name string, t *tenant, id uuid, empty int64) *feed {
	return &feed{name: name, tenant: t, id: id, empty: empty, byID: map[uuid]int32{}}
}

// appendLocked adds an entry; the caller holds mu for writing. It returns
// false when the id is taken.
func (f *feed) appendLocked(e entry) bool {
	if _, dup := f.byID[e.id]; dup {
		return false
	}
	if n := len(f.entries); n > 0 && e.published < f.entries[n-1].published {
		e.published = f.entries[n-1].published
	}
	f.byID[e.id] = int32(len(f.entries))
	f.entries = append(f.entries, e)
	if words := (len(f.entries) + 31) / 32; words > len(f.decided) {
		f.decided = growBits(f.decided, words)
		f.bad = growBits(f.bad, words)
	}
	return true
}

func growBits(b []atomic.Uint32, words int) []atomic.Uint32 {
	if words <= cap(b) {
		return b[:words]
	}
	n := make([]atomic.Uint32, words, max(words, 2*cap(b)))
	for i := range b {
		n[i].Store(b[i].Load())
	}
	return n
}

// visible returns how many entries (from the oldest) may be served at
// Unix ms now: those published at least delay ms ago. The caller holds mu.
func (f *feed) visible(nowMs, delayMs int64) int {
	cut := nowMs - delayMs
	n := len(f.entries)
	if n == 0 || f.entries[n-1].published <= cut {
		return n
	}
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.entries[m].published <= cut {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// malformed reports whether entry i is served malformed, deciding it by
// hash against threshold when it has not been served yet, and records the
// decision when record is set. The caller holds mu (for reading at least).
func (f *feed) malformed(i int, threshold uint64, record bool) bool {
	w, bit := i/32, uint32(1)<<(i%32)
	if f.decided[w].Load()&bit != 0 {
		return f.bad[w].Load()&bit != 0
	}
	bad := threshold != 0 && f.entries[i].id.hash(malformedKey) < threshold
	if record {
		if bad {
			f.bad[w].Or(bit)
		}
		f.decided[w].Or(bit)
	}
	return bad
}

// malformedKey keys the hash that picks malformed entries and their variant.
const malformedKey = 0x6d616c666f726d64
