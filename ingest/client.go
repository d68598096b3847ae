package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ClientConfig configures a Client. The zero value of each field means its
// stated default.
type ClientConfig struct {
	// IdentityURL is the Identity v2.0 tokens endpoint
	// (…/v2.0/tokens); "" sends no X-Auth-Token.
	IdentityURL string
	// Username and APIKey are the Identity credentials. They come from the
	// environment or a file, never from a flag, and are never logged.
	Username, APIKey string
	// Format asks for XML or JSON pages (FormatAuto: XML).
	Format Format
	// Limit is the page size, 1..1000 (default 1000).
	Limit int
	// RequestsPerSecond caps requests across all tenants (0: no cap).
	RequestsPerSecond float64
	// Attempts is how many times one request is tried before the error is
	// returned (default 12).
	Attempts int
	// MinBackoff and MaxBackoff bound the exponential backoff with full
	// jitter between attempts (defaults 100ms and 10s); a Retry-After is
	// honoured up to MaxRetryAfter (default 60s).
	MinBackoff, MaxBackoff, MaxRetryAfter time.Duration
	// HTTP is the client used (default: a client with a 60s timeout).
	HTTP *http.Client
	// Log receives retries and recoveries (default: discarded).
	Log *slog.Logger
	// OnRetry, when set, is called with the HTTP status (0 for a transport
	// error or a truncated body) of each attempt that will be retried.
	OnRetry func(status int)
}

// Validate reports the first field out of range.
func (c *ClientConfig) Validate() error {
	if c.Limit < 0 || c.Limit > 1000 {
		return fmt.Errorf("limit %d is not in 1..1000", c.Limit)
	}
	if c.IdentityURL != "" && (c.Username == "" || c.APIKey == "") {
		return errors.New("an identity URL needs a username and an API key (FEEDMETER_USERNAME, FEEDMETER_API_KEY)")
	}
	if c.RequestsPerSecond < 0 {
		return fmt.Errorf("requests per second %v is negative", c.RequestsPerSecond)
	}
	return nil
}

func (c *ClientConfig) defaults() {
	if c.Limit == 0 {
		c.Limit = 1000
	}
	if c.Format == FormatAuto {
		c.Format = FormatXML
	}
	if c.Attempts == 0 {
		c.Attempts = 12
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = time.Minute
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: time.Minute}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Client fetches feed pages, authenticating and retrying as Cloud Feeds
// requires. It is safe for concurrent use.
type Client struct {
	cfg     ClientConfig
	limiter *rate.Limiter

	mu      sync.Mutex
	token   string
	expires time.Time
}

// NewClient returns a client for cfg.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	c := &Client{cfg: cfg, limiter: rate.NewLimiter(rate.Inf, 1)}
	if cfg.RequestsPerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), max(1, int(cfg.RequestsPerSecond)))
	}
	return c, nil
}

// ErrMarkerNotFound is returned by Fetch when the feed answers 404 to a
// marker: the entry is gone from the feed (Cloud Feeds expires entries).
var ErrMarkerNotFound = errors.New("marker not found in the feed")

// StatusError is a response the client does not retry (or stopped
// retrying).
type StatusError struct {
	URL    string
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: %d %s: %s", e.URL, e.Status, http.StatusText(e.Status), e.Body)
}

// Fetch GETs one page of feed with the query q (limit is added) and parses
// it. It retries what can be retried and re-authenticates once on a 401.
func (c *Client) Fetch(ctx context.Context, feed string, q url.Values) (*Page, error) {
	q.Set("limit", strconv.Itoa(c.cfg.Limit))
	u := feed + "?" + q.Encode()
	reauthed := false
	var last error
	for attempt := 1; ; attempt++ {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, err
		}
		page, status, retryAfter, err := c.get(ctx, u)
		if err == nil {
			return page, nil
		}
		last = err
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case status == http.StatusNotFound:
			return nil, fmt.Errorf("GET %s: %w", u, ErrMarkerNotFound)
		case status == http.StatusUnauthorized:
			if reauthed || c.cfg.IdentityURL == "" {
				return nil, fmt.Errorf("GET %s: unauthorized after authenticating again: %w", u, err)
			}
			reauthed = true
			c.dropToken()
			c.cfg.Log.Warn("feed answered 401: authenticating again", "url", u)
			continue
		case status == http.StatusBadRequest || status == http.StatusForbidden:
			return nil, err
		}
		if attempt >= c.cfg.Attempts {
			return nil, fmt.Errorf("giving up after %d attempts: %w", attempt, last)
		}
		if c.cfg.OnRetry != nil {
			c.cfg.OnRetry(status)
		}
		wait := c.backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, c.cfg.MaxRetryAfter)
		}
		c.cfg.Log.Debug("retrying", "url", u, "status", status, "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// backoff is exponential with full jitter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.MinBackoff << min(attempt-1, 20)
	if d > c.cfg.MaxBackoff || d <= 0 {
		d = c.cfg.MaxBackoff
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// get does one attempt. status is 0 for transport errors and truncated
// bodies.
func (c *Client) get(ctx context.Context, u string) (*Page, int, time.Duration, error) {
	tok, err := c.authToken(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	if c.cfg.Format == FormatJSON {
		req.Header.Set("Accept", "application/vnd.rackspace.atom+json")
	} else {
		req.Header.Set("Accept", "application/atom+xml")
	}
	if tok != "" {
		req.Header.Set("X-Auth-Token", tok)
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	// A body cut short (a dropped connection) fails here: Content-Length
	// and chunked framing both tell.
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("GET %s: reading the body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, retryAfter(resp.Header.Get("Retry-After")),
			&StatusError{URL: u, Status: resp.StatusCode, Body: string(bytes.TrimSpace(body[:min(len(body), 300)]))}
	}
	page, err := ParsePage(body, c.cfg.Format)
	if err != nil {
		// A complete 200 that is not a page: retried, in case a proxy
		// or a cut-off body produced it.
		return nil, 0, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	if page.Entry {
		return nil, 0, 0, fmt.Errorf("GET %s: answered a single entry, not a feed page", u)
	}
	if page.Recovered != "" && page.Format == FormatXML && !bytes.Contains(body[max(0, len(body)-64):], []byte("feed>")) {
		// Not well-formed and not ended: treat as cut short. (A JSON page
		// is recovered only when its brackets close.)
		return nil, 0, 0, fmt.Errorf("GET %s: the page does not end (%s)", u, page.Recovered)
	}
	return page, http.StatusOK, 0, nil
}

// retryAfter reads a Retry-After of seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

func (c *Client) dropToken() {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
}

// authToken returns a valid Identity token, asking for a new one when the
// cached one is missing or about to expire.
func (c *Client) authToken(ctx context.Context) (string, error) {
	if c.cfg.IdentityURL == "" {
		return "", nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Until(c.expires) > 30*time.Second {
		return c.token, nil
	}
	var body bytes.Buffer
	json.NewEncoder(&body).Encode(map[string]any{"auth": map[string]any{
		"RAX-KSKEY:apiKeyCredentials": map[string]string{"username": c.cfg.Username, "apiKey": c.cfg.APIKey},
	}})
	var lastErr error
	for attempt := 1; attempt <= c.cfg.Attempts; attempt++ {
		tok, exp, status, err := c.requestToken(ctx, body.Bytes())
		if err == nil {
			c.token, c.expires = tok, exp
			return tok, nil
		}
		lastErr = err
		if status == http.StatusUnauthorized || status == http.StatusBadRequest || status == http.StatusForbidden || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(c.backoff(attempt)):
		}
	}
	return "", fmt.Errorf("authenticate as %q at %s: %w", c.cfg.Username, c.cfg.IdentityURL, lastErr)
}

func (c *Client) requestToken(ctx context.Context, body []byte) (string, time.Time, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.IdentityURL, bytes.NewReader(body))
	if err != nil {
		return "", time.Time{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return "", time.Time{}, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", time.Time{}, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", time.Time{}, resp.StatusCode, fmt.Errorf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var r struct {
		Access struct {
			Token struct {
				ID      string    `json:"id"`
				Expires time.Time `json:"expires"`
			} `json:"token"`
		} `json:"access"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Access.Token.ID == "" {
		return "", time.Time{}, resp.StatusCode, fmt.Errorf("the answer has no access.token.id (%v)", err)
	}
	exp := r.Access.Token.Expires
	if exp.IsZero() {
		exp = time.Now().Add(time.Hour)
	}
	return r.Access.Token.ID, exp, resp.StatusCode, nil
}
