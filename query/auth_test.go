package query

import (
	"net/http"
	"strings"
	"testing"
)

func TestTokensRoundTrip(t *testing.T) {
	tok, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < 40 || HashToken(tok) != hash {
		t.Fatalf("token %q hash %q", tok, hash)
	}
	adminTok, adminHash, _ := NewToken()
	file := "tokens:\n" + TokenLine(hash, Principal{Tenant: "1234", Name: `the "billing" export`}) + "\n" +
		TokenLine(adminHash, Principal{Admin: true}) + "\n"
	if strings.Contains(file, tok) || strings.Contains(file, adminTok) {
		t.Fatal("the tokens file holds a token")
	}
	tk, err := ParseTokens([]byte(file))
	if err != nil {
		t.Fatalf("%v\n%s", err, file)
	}
	if p, ok := tk.Lookup(tok); !ok || p.Admin || p.Tenant != "1234" || p.Name != `the "billing" export` {
		t.Errorf("tenant token: %+v %v", p, ok)
	}
	if p, ok := tk.Lookup(adminTok); !ok || !p.Admin {
		t.Errorf("admin token: %+v %v", p, ok)
	}
	for _, bad := range []string{"", hash, tok + " ", strings.ToUpper(tok)} {
		if _, ok := tk.Lookup(bad); ok {
			t.Errorf("Lookup(%q) succeeded", bad)
		}
	}
	if p := (Principal{Tenant: "1234"}); !p.mayRead("1234") || p.mayRead("12345") || p.mayRead("") {
		t.Error("tenant principal reads too much")
	}
}

func TestParseTokensErrors(t *testing.T) {
	h := strings.Repeat("a", 64)
	for name, file := range map[string]string{
		"a token, not a hash": "tokens:\n  - {sha256: fm_abc, tenant: \"1\"}\n",
		"short hash":          "tokens:\n  - {sha256: abc, tenant: \"1\"}\n",
		"admin and tenant":    "tokens:\n  - {sha256: " + h + ", tenant: \"1\", admin: true}\n",
		"neither":             "tokens:\n  - {sha256: " + h + "}\n",
		"bad tenant":          "tokens:\n  - {sha256: " + h + ", tenant: \"a b\"}\n",
		"duplicate":           "tokens:\n  - {sha256: " + h + ", admin: true}\n  - {sha256: " + h + ", tenant: \"1\"}\n",
		"unknown field":       "tokens:\n  - {sha256: " + h + ", admin: true, token: x}\n",
		"not YAML":            "tokens: [",
	} {
		if _, err := ParseTokens([]byte(file)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if tk, err := ParseTokens(nil); err != nil || tk.Len() != 0 {
		t.Errorf("empty file: %v", err)
	}
	// Upper-case hex is the same hash.
	tk, err := ParseTokens([]byte("tokens:\n  - {sha256: " + strings.ToUpper(HashToken("x")) + ", tenant: \"9\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tk.Lookup("x"); !ok {
		t.Error("upper-case hash not found")
	}
}

func TestBearer(t *testing.T) {
	f := func(h []string, want string, ok bool) {
		t.Helper()
		r, _ := http.NewRequest("GET", "/", nil)
		for _, v := range h {
			r.Header.Add("Authorization", v)
		}
		got, gotOK := bearer(r)
		if got != want || gotOK != ok {
			t.Errorf("%q: %q %v, want %q %v", h, got, gotOK, want, ok)
		}
	}
	f([]string{"Bearer fm_x"}, "fm_x", true)
	f([]string{"bearer   fm_x  "}, "fm_x", true)
	f([]string{"Basic fm_x"}, "", false)
	f([]string{"Bearer"}, "", false)
	f([]string{"Bearer "}, "", false)
	f([]string{"fm_x"}, "", false)
	f(nil, "", false)
	f([]string{"Bearer a", "Bearer b"}, "", false)
}
