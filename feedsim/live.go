package feedsim

import (
	"math"
	"time"
)

// tickLive appends the live entries owed since the last tick: Rate a
// second across tenants, drawn from the seeded live generator, stamped with
// the current time.
func (s *Server) tickLive(now time.Time) {
	if s.cfg.Rate <= 0 {
		return
	}
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.lastRun.IsZero() {
		s.lastRun = now
		return
	}
	dt := now.Sub(s.lastRun).Seconds()
	s.lastRun = now
	if dt <= 0 {
		return
	}
	s.carry += s.cfg.Rate * min(dt, 10)
	k := int(math.Floor(s.carry))
	s.carry -= float64(k)
	for i := 0; i < k; i++ {
		s.appendLive(now)
	}
}

// appendLive adds one live entry; the caller holds liveMu.
func (s *Server) appendLive(now time.Time) {
	r := s.live
	t := s.tenants[r.intn(len(s.tenants))]
	a := r.intn(len(t.agents))
	ag := t.agents[a]
	step := int64(86400)
	if ag.hourly {
		step = 3600
	}
	end := now.Unix()
	e := entry{agent: uint16(a), start: end - step, dur: uint32(step)}
	switch u := r.intn(100); {
	case u < 30:
		e.kind, e.value = kStorage, ag.storage
	case u < 60:
		e.kind, e.value = kBandwidthIn, r.logUniform(1<<10, 5<<30)
	case u < 80:
		e.kind, e.value = kBandwidthOut, r.logUniform(1<<10, 1<<30)
	case u < 86 && !ag.noServerID:
		e.kind, e.start, e.dur = kLicense, end-86400, 86400
	case u < 92:
		e.kind, e.start, e.dur = kSnapshot, end, 0
	default:
		e.kind, e.etype, e.start, e.dur = kSystem, uint8(r.intn(len(systemTypes))), end, 0
	}
	t.backup.add(r, e, now)
}

// add appends e to the feed, published now, with a fresh id from r.
func (f *feed) add(r *rng, e entry, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.published = now.UnixMilli()
	for {
		e.id = r.uuid()
		if f.appendLocked(e) {
			return
		}
	}
}
