package feedsim

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// regions are the Cloud Feeds regions a tenant may live in, with a data
// center of each.
var regions = [...][2]string{
	{"DFW", "DFW1"}, {"ORD", "ORD1"}, {"IAD", "IAD3"}, {"LON", "LON3"}, {"HKG", "HKG1"}, {"SYD", "SYD2"},
}

// serverNames are the stems of server names; some need escaping in XML
// and JSON on purpose.
var serverNames = [...]string{
	"web", "db", "app", "files", "mail", "build", "cache", "backup-host",
	"laptop & desk", `NAS "attic"`, "<lab>", "serveur-été", "O'Brien's PC",
}

// Streams of the seeded generator: tenant i's data is drawn from stream
// i+1 and its CUF facts from streamCUF+i; the others follow.
const (
	streamTenants = 0
	streamLive    = 1 << 40
	streamFaults  = 1<<40 + 1
	streamAPI     = 1<<40 + 2
	streamCUF     = 1 << 41
)

// generate builds the tenants and their history. It is a pure function of
// cfg: the same flags give the same bytes.
func generate(cfg *Config) []*tenant {
	r := newRNG(cfg.Seed, streamTenants)
	ids := map[string]bool{}
	tenants := make([]*tenant, cfg.Tenants)
	for i := range tenants {
		var id string
		for id == "" || ids[id] {
			id = strconv.Itoa(r.between(1000, 9_999_999))
		}
		ids[id] = true
		tenants[i] = &tenant{id: id}
	}
	start := cfg.Start.UTC().Truncate(24 * time.Hour).Unix()
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				generateTenant(cfg, tenants[i], i, start)
			}
		}()
	}
	for i := range tenants {
		work <- i
	}
	close(work)
	wg.Wait()
	return tenants
}

func generateTenant(cfg *Config, t *tenant, index int, start int64) {
	r := newRNG(cfg.Seed, uint64(index)+1)
	reg := regions[r.intn(len(regions))]
	t.region, t.dc = reg[0], reg[1]
	n := cfg.Agents
	if n == 0 {
		n = r.between(2, 6)
	}
	t.byAgent = make(map[uuid]int, n)
	t.byServer = map[uuid]int{}
	names := map[string]bool{}
	serverIDs := map[string]bool{}
	for a := 0; a < n; a++ {
		ag := &agent{id: r.uuid(), hourly: r.chance(0.7), external: r.chance(0.2)}
		ag.rid = ag.id.String()
		if ag.external {
			ag.noServerID = r.chance(0.5)
		}
		if r.chance(0.5) {
			su := r.uuid()
			ag.serverID = su.String()
			if !ag.external {
				t.byServer[su] = a
				if r.chance(0.8) {
					ag.host = fmt.Sprintf("compute-%s-%03d", lower(t.dc), r.between(1, 400))
				}
			}
		} else {
			for ag.serverID == "" || serverIDs[ag.serverID] {
				ag.serverID = strconv.Itoa(r.between(1000, 9_999_999))
			}
		}
		serverIDs[ag.serverID] = true
		for ag.serverName == "" || names[ag.serverName] {
			ag.serverName = fmt.Sprintf("%s-%02d", serverNames[r.intn(len(serverNames))], r.between(1, 99))
		}
		names[ag.serverName] = true
		ag.nameXML = string(appendXMLAttr(nil, ag.serverName))
		ag.nameJSON = string(appendJSONStr(nil, ag.serverName))
		// Storage in use: 1 GiB to 50 TiB; the first agent of every third
		// tenant holds more than 2^53 bytes, past what a float64 counts.
		ag.storage = r.logUniform(1<<30, 50<<40)
		if a == 0 && index%3 == 0 {
			ag.storage = r.logUniform(1<<53+1, 1<<62)
		}
		ag.config = r.uuid()
		t.agents = append(t.agents, ag)
		t.byAgent[ag.id] = a
	}
	es := make([]entry, 0, estimate(t, cfg.Days))
	for a, ag := range t.agents {
		es = generateAgent(r, es, ag, uint16(a), start, cfg.Days)
	}
	// Feed order is publication order; equal times keep generation order.
	slices.SortStableFunc(es, func(a, b entry) int { return cmp.Compare(a.published, b.published) })
	t.backup = newFeed("backup/events", t, r.uuid(), start*1000)
	t.servers = newFeed("servers/events", t, r.uuid(), start*1000)
	t.backup.entries = make([]entry, 0, len(es))
	t.backup.byID = make(map[uuid]int32, len(es))
	for _, e := range es {
		for {
			e.id = r.uuid()
			if t.backup.appendLocked(e) {
				break
			}
		}
	}
	t.backup.gen = len(t.backup.entries)
	if cfg.CUF.on() {
		addCUF(cfg.CUF, t.backup, newRNG(cfg.Seed, streamCUF+uint64(index)))
	}
}

func estimate(t *tenant, days int) int {
	n := 0
	for _, a := range t.agents {
		if a.hourly {
			n += 24 * 3
		} else {
			n += 3
		}
		n += 4
	}
	return n * days
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// lag is how long after the end of its interval an entry is published.
func lag(r *rng) int64 { return int64(r.between(500, 600_000)) }

func generateAgent(r *rng, es []entry, ag *agent, a uint16, start int64, days int) []entry {
	step := int64(86400)
	if ag.hourly {
		step = 3600
	}
	bwMax := uint64(50 << 30)
	if ag.hourly {
		bwMax = 5 << 30
	}
	for d := 0; d < days; d++ {
		day := start + int64(d)*86400
		for s := day; s < day+86400; s += step {
			end := s + step
			// Storage drifts: mostly grows, sometimes shrinks.
			delta := r.logUniform(1, max(ag.storage/500, 2))
			if r.chance(0.3) && ag.storage > delta+1<<20 {
				ag.storage -= delta
			} else if ag.storage <= math.MaxUint64-delta {
				ag.storage += delta
			}
			es = append(es, entry{kind: kStorage, agent: a, start: s, dur: uint32(step), value: ag.storage,
				published: end*1000 + lag(r)})
			if r.chance(0.85) {
				v := uint64(0)
				if !r.chance(0.03) {
					v = r.logUniform(1<<10, bwMax)
				}
				es = append(es, entry{kind: kBandwidthIn, agent: a, start: s, dur: uint32(step), value: v,
					published: end*1000 + lag(r)})
			}
			if r.chance(0.5) {
				es = append(es, entry{kind: kBandwidthOut, agent: a, start: s, dur: uint32(step),
					value: r.logUniform(1<<10, bwMax/4), published: end*1000 + lag(r)})
			}
		}
		if !ag.noServerID {
			es = append(es, entry{kind: kLicense, agent: a, start: day, dur: 86400,
				published: (day+86400)*1000 + lag(r)})
		}
		at := day + int64(r.intn(86400))
		es = append(es, entry{kind: kSnapshot, agent: a, start: at, published: at*1000 + lag(r)})
		if d == 0 {
			at := day + int64(r.intn(3600))
			es = append(es, entry{kind: kSystem, etype: 3 /* CREATE */, agent: a, start: at, published: at*1000 + lag(r)})
		}
		if r.chance(0.4) {
			at := day + int64(r.intn(86400))
			es = append(es, entry{kind: kSystem, etype: uint8(r.intn(len(systemTypes))), agent: a, start: at,
				published: at*1000 + lag(r)})
		}
	}
	return es
}
