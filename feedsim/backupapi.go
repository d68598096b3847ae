package feedsim

import (
	"net/http"
	"sync"
	"time"
)

// apiState is a tenant's Cloud Backup API state.
type apiState struct {
	mu sync.Mutex
}

// apiGlobal is the API state shared by tenants.
type apiGlobal struct {
	mu  sync.Mutex
	rng *rng
}

func (g *apiGlobal) init(seed uint64) { g.rng = newRNG(seed, streamAPI) }

func (s *Server) apiRoutes(mux *http.ServeMux) {}

func (s *Server) completeBackups(now time.Time) {}
