package query

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// chromium returns the path of Debian's chromium ($FEEDMETER_CHROMIUM
// overrides), skipping the test when there is none (failing it when CI=true).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FEEDMETER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required in CI (apt-get install chromium)")
	}
	t.Skip("no chromium; apt-get install chromium")
	return ""
}

// screenshotPath is where the test saves what Chromium showed:
// $FEEDMETER_SCREENSHOT_DIR, else bin/screenshots at the repository root.
func screenshotPath(t *testing.T, name string) string {
	dir := os.Getenv("FEEDMETER_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join(chtest.RepoRoot(t), "bin", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// TestUsagePageInChromium drives the usage page in a real headless Chromium
// against a server on ClickHouse loaded through the sink: an admin picks
// tenant 1001's October in Berlin (31 days), a tenant signs in and sees its
// own November (30 days). The charts hold one bar per day, the invoice total
// is the API's, no request leaves the server's origin, no script error
// happens, and a screenshot is saved.
func TestUsagePageInChromium(t *testing.T) {
	exe := chromium(t)
	f := newAPIFixture(t)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1500),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()

	for _, c := range []struct {
		name, who, hash, tenant, query string
		days                           int
	}{
		{"admin-1001-october-berlin", "admin", "#tenant=1001&period=2026-10&tz=Europe/Berlin", "1001", "period=2026-10&tz=Europe/Berlin", 31},
		{"tenant-1002-november", "1002", "#period=2026-11", "1002", "period=2026-11&tz=UTC", 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := chromedp.NewContext(actx)
			defer cancel()
			ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
			defer cancelT()

			var mu sync.Mutex
			var requests, problems []string
			if err := chromedp.Listen(ctx, func(ev any) {
				mu.Lock()
				defer mu.Unlock()
				switch e := ev.(type) {
				case *network.EventRequestWillBeSent:
					requests = append(requests, e.Request.URL)
				case *runtime.EventExceptionThrown:
					problems = append(problems, e.ExceptionDetails.Text)
				case *runtime.EventConsoleAPICalled:
					if e.Type == "error" {
						problems = append(problems, "console.error")
					}
				}
			}); err != nil {
				t.Fatalf("chromium: %v", err)
			}
			if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
				t.Fatalf("chromium: %v", err)
			}

			var ans invoiceAnswerT
			f.client(t, c.who).getJSON("/v1/tenants/"+c.tenant+"/invoice?"+c.query, &ans)

			if err := chromedp.Do(ctx,
				chromedp.Navigate(f.srv.URL+"/"+c.hash),
				chromedp.WaitVisible(chromedp.ID("token")),
				chromedp.SendKeys(chromedp.ID("token"), f.toks[c.who]),
				chromedp.Click(chromedp.ID("signin")),
				chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"] #report`)),
			); err != nil {
				t.Fatalf("chromium: %v", err)
			}
			run := func(what string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("chromium: %s: %v", what, err)
				}
			}
			bars, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`Object.fromEntries(["bandwidthIn","bandwidthOut","storage","license"].map(k =>
				[k, document.querySelectorAll("#chart-" + k + " rect.bar").length]))`))
			run("count bars", err)
			total, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("invoice-total")))
			run("read total", err)
			title, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("report-title")))
			run("read title", err)
			who, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("who")))
			run("read who", err)
			lines, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#invoice-lines tr.line").length`))
			run("count lines", err)
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			run("screenshot", err)
			path := screenshotPath(t, "usage-page-"+c.name+".png")
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot: %s (%d bytes)", path, len(png))

			for _, k := range UsageKinds {
				if bars[k] != c.days {
					t.Errorf("chart %s has %d bars, want %d days", k, bars[k], c.days)
				}
			}
			if total != ans.Total || total == "" {
				t.Errorf("page total %q, API total %q", total, ans.Total)
			}
			if lines != len(ans.Lines) {
				t.Errorf("page shows %d invoice lines, the API %d", lines, len(ans.Lines))
			}
			if !strings.Contains(title, c.tenant) {
				t.Errorf("title %q does not name tenant %s", title, c.tenant)
			}
			if c.who != "admin" && who != "tenant "+c.who {
				t.Errorf("signed in as %q", who)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, u := range requests {
				if !strings.HasPrefix(u, f.srv.URL+"/") && !strings.HasPrefix(u, "data:") {
					t.Errorf("the page fetched %s: it must need nothing but its own server", u)
				}
			}
			if len(problems) > 0 {
				t.Errorf("script errors: %v", problems)
			}
		})
	}
}
