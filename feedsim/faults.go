package feedsim

import (
	"net/http"
	"strconv"
	"time"
)

// injectFault draws the request's fault from the seeded generator. It
// answers the request itself for 429, 503, 500 and an early token expiry
// (done), sleeps for a slow one, and tells the handler to drop the
// connection mid-body (drop). The faults exclude one another: one draw
// picks at most one.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, tok string, js bool) (drop, done bool) {
	s.fmu.Lock()
	f := s.faults
	if f.RateLimited+f.Unavailable+f.Internal+f.Drop+f.Slow+f.Expire == 0 {
		s.fmu.Unlock()
		return false, false
	}
	u := s.frng.float()
	s.fmu.Unlock()
	pick := func(p float64) bool {
		if u < p {
			return true
		}
		u -= p
		return false
	}
	switch {
	case pick(f.RateLimited):
		secs := int((s.cfg.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		writeFeedError(w, http.StatusTooManyRequests, "Rate limit exceeded, retry later.", js)
		return false, true
	case pick(f.Unavailable):
		writeFeedError(w, http.StatusServiceUnavailable, "Service is not available. Try again later.", js)
		return false, true
	case pick(f.Internal):
		writeFeedError(w, http.StatusInternalServerError, "Internal server error.", js)
		return false, true
	case pick(f.Expire):
		if tok != "" {
			s.ident.expire(tok, s.now())
			unauthorized(w, r, "Token expired.", js)
			return false, true
		}
	case pick(f.Drop):
		return true, false
	case pick(f.Slow):
		t := time.NewTimer(s.cfg.SlowDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return false, true
		}
	}
	return false, false
}
