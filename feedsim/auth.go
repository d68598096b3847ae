package feedsim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// identity is a small Rackspace Identity v2.0: API-key users and their
// tokens.
type identity struct {
	mu     sync.Mutex
	users  map[string]string // name → API key
	ttl    time.Duration
	tokens map[string]*token
}

type token struct {
	user    string
	expires time.Time
}

func (id *identity) init(users map[string]string, ttl time.Duration) {
	id.users = users
	id.ttl = ttl
	id.tokens = map[string]*token{}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// identityError writes Identity's error shape: {"<kind>":{"code":…,"message":…}}.
func identityError(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]any{kind: map[string]any{"code": status, "message": msg}})
}

// handleTokens is POST /v2.0/tokens with
// {"auth":{"RAX-KSKEY:apiKeyCredentials":{"username":…,"apiKey":…}}}
// (or passwordCredentials with the API key as password).
func (s *Server) handleTokens(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth *struct {
			APIKey *struct {
				Username string `json:"username"`
				APIKey   string `json:"apiKey"`
			} `json:"RAX-KSKEY:apiKeyCredentials"`
			Password *struct {
				Username string `json:"username"`
				Password string `json:"password"`
			} `json:"passwordCredentials"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.Auth == nil ||
		(req.Auth.APIKey == nil && req.Auth.Password == nil) {
		identityError(w, http.StatusBadRequest, "badRequest", "Invalid json request body")
		return
	}
	var user, key string
	if a := req.Auth.APIKey; a != nil {
		user, key = a.Username, a.APIKey
	} else {
		user, key = req.Auth.Password.Username, req.Auth.Password.Password
	}
	if user == "" || key == "" {
		identityError(w, http.StatusBadRequest, "badRequest", "Invalid json request body")
		return
	}
	id := &s.ident
	id.mu.Lock()
	want, ok := id.users[user]
	if !ok || want != key {
		id.mu.Unlock()
		identityError(w, http.StatusUnauthorized, "unauthorized", "Username or api key is invalid.")
		return
	}
	var raw [16]byte
	rand.Read(raw[:])
	tok := hex.EncodeToString(raw[:])
	expires := s.now().Add(id.ttl).UTC()
	if len(id.tokens) >= 10_000 {
		for k, t := range id.tokens {
			if !s.now().Before(t.expires) {
				delete(id.tokens, k)
			}
		}
	}
	id.tokens[tok] = &token{user: user, expires: expires}
	id.mu.Unlock()

	tenantID := ""
	if len(s.tenants) > 0 {
		tenantID = s.tenants[0].id
	}
	base := baseURL(r)
	var endpoints []map[string]string
	for _, t := range s.tenants {
		endpoints = append(endpoints, map[string]string{
			"region": t.region, "tenantId": t.id, "publicURL": base + "/backup/events/" + t.id,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"access": map[string]any{
		"token": map[string]any{
			"id":                       tok,
			"expires":                  expires.Format("2006-01-02T15:04:05.000Z"),
			"tenant":                   map[string]string{"id": tenantID, "name": tenantID},
			"RAX-AUTH:authenticatedBy": []string{"APIKEY"},
		},
		"user": map[string]any{"id": user, "name": user, "roles": []map[string]string{
			{"name": "identity:user-admin", "description": "User Admin Role."},
		}},
		"serviceCatalog": []map[string]any{{
			"name": "cloudFeeds", "type": "rax:feeds", "endpoints": endpoints,
		}},
	}})
}

// authorize checks X-Auth-Token and answers 401 when it is missing, unknown
// or expired. It returns the token (empty with NoAuth).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, js bool) (string, bool) {
	if s.cfg.NoAuth {
		return "", true
	}
	tok := r.Header.Get("X-Auth-Token")
	var msg string
	switch {
	case tok == "":
		msg = "No valid token provided. Please use the 'X-Auth-Token' header with a valid token."
	default:
		s.ident.mu.Lock()
		t, ok := s.ident.tokens[tok]
		switch {
		case !ok:
			msg = "Token not found."
		case !s.now().Before(t.expires):
			msg = "Token expired."
		}
		s.ident.mu.Unlock()
	}
	if msg == "" {
		return tok, true
	}
	unauthorized(w, r, msg, js)
	return "", false
}

func unauthorized(w http.ResponseWriter, r *http.Request, msg string, js bool) {
	w.Header().Set("WWW-Authenticate", "Keystone uri='"+baseURL(r)+"/v2.0'")
	if js || !isFeedPath(r) {
		identityError(w, http.StatusUnauthorized, "unauthorized", msg)
		return
	}
	writeFeedError(w, http.StatusUnauthorized, msg, false)
}

func isFeedPath(r *http.Request) bool {
	p := r.URL.Path
	return len(p) > 8 && (p[:8] == "/backup/" || p[:9] == "/servers/")
}

// expire ends a token now (the early-expiry fault).
func (id *identity) expire(tok string, now time.Time) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if t, ok := id.tokens[tok]; ok {
		t.expires = now
	}
}
