package query

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Principal is who a request acts for: an admin, or one tenant.
type Principal struct {
	Admin  bool
	Tenant string // the only tenant a tenant token may read; "" for an admin
	Name   string // a label from the tokens file, for logs
}

// mayRead reports whether p may read tenant's data.
func (p Principal) mayRead(tenant string) bool { return p.Admin || p.Tenant == tenant }

// Tokens maps the SHA-256 of each bearer token to its principal. The file
// holds only the hashes, so a leaked tokens file grants nothing.
type Tokens struct {
	byHash map[[sha256.Size]byte]Principal
}

// TokenPrefix starts every token NewToken makes (it makes them easy to find
// in logs and secret scanners).
const TokenPrefix = "fm_"

// NewToken returns a new random token (256 bits) and its SHA-256 in hex.
func NewToken() (token, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("make a token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

// HashToken returns the hex SHA-256 of token, as the tokens file holds it.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// TokenLine returns the tokens-file entry for a token's hash: a YAML list
// item under `tokens:`.
func TokenLine(hash string, p Principal) string {
	var b strings.Builder
	b.WriteString("  - {sha256: " + hash)
	if p.Admin {
		b.WriteString(", admin: true")
	} else {
		b.WriteString(", tenant: " + strconv.Quote(p.Tenant))
	}
	if p.Name != "" {
		b.WriteString(", name: " + strconv.Quote(p.Name))
	}
	b.WriteString("}")
	return b.String()
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// LoadTokens reads a tokens file.
func LoadTokens(path string) (*Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	t, err := ParseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens reads a tokens file:
//
//	tokens:
//	  - {sha256: <64 hex digits>, tenant: "1234", name: "billing export"}
//	  - {sha256: <64 hex digits>, admin: true}
//
// Each entry has exactly one of tenant and admin: true.
func ParseTokens(data []byte) (*Tokens, error) {
	var raw struct {
		Tokens []struct {
			SHA256 string    `yaml:"sha256"`
			Tenant yaml.Node `yaml:"tenant"`
			Admin  bool      `yaml:"admin"`
			Name   string    `yaml:"name"`
		} `yaml:"tokens"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty document (io.EOF) is a file with no tokens.
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	t := &Tokens{byHash: map[[sha256.Size]byte]Principal{}}
	var errs []error
	for i, e := range raw.Tokens {
		where := fmt.Sprintf("token %d", i+1)
		h := strings.ToLower(strings.TrimSpace(e.SHA256))
		if !hexHash.MatchString(h) {
			errs = append(errs, fmt.Errorf("%s: sha256 %q is not 64 hex digits (the file holds hashes, never tokens)", where, e.SHA256))
			continue
		}
		var key [sha256.Size]byte
		hex.Decode(key[:], []byte(h))
		tenant := e.Tenant.Value
		switch {
		case e.Admin && tenant != "":
			errs = append(errs, fmt.Errorf("%s: both admin and tenant %q", where, tenant))
			continue
		case !e.Admin && !tenantID.MatchString(tenant):
			errs = append(errs, fmt.Errorf("%s: tenant %q is not a tenant id (or set admin: true)", where, tenant))
			continue
		}
		if _, dup := t.byHash[key]; dup {
			errs = append(errs, fmt.Errorf("%s: the same hash appears twice", where))
			continue
		}
		t.byHash[key] = Principal{Admin: e.Admin, Tenant: tenant, Name: e.Name}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// Len returns the number of tokens.
func (t *Tokens) Len() int { return len(t.byHash) }

// Lookup returns the principal of token.
func (t *Tokens) Lookup(token string) (Principal, bool) {
	p, ok := t.byHash[sha256.Sum256([]byte(token))]
	return p, ok
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}
