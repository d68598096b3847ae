package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// runCmd runs the feedmeter command line in-process.
func runCmd(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// TestParseGolden runs `feedmeter parse` on every sample in testdata/ and
// compares stdout with <file>.golden.ndjson and stderr with
// <file>.golden.stderr (absent when empty).
func TestParseGolden(t *testing.T) {
	var files []string
	for _, pattern := range []string{"../../testdata/*/*.xml", "../../testdata/*/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 16 {
		t.Fatalf("only %d samples", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimPrefix(file, "../../testdata/"), func(t *testing.T) {
			stdout, stderr, code := runCmd(t, "", "parse", file)
			// The golden stderr names the file as the README's commands do.
			stderr = strings.ReplaceAll(stderr, "../../", "")
			goldOut, goldErr := file+".golden.ndjson", file+".golden.stderr"
			if *update {
				writeGolden(t, goldOut, stdout, true)
				writeGolden(t, goldErr, stderr, false)
			}
			wantOut, err := os.ReadFile(goldOut)
			if err != nil {
				t.Fatalf("%v (run: make golden)", err)
			}
			wantErr, err := os.ReadFile(goldErr)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if stdout != string(wantOut) {
				t.Errorf("stdout differs from %s:\n got:\n%s\nwant:\n%s", goldOut, stdout, wantOut)
			}
			if stderr != string(wantErr) {
				t.Errorf("stderr differs from %s:\n got:\n%s\nwant:\n%s", goldErr, stderr, wantErr)
			}
			wantCode := 0
			if strings.Contains(stderr, "reject ") {
				wantCode = 1
			}
			if code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
			for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if line != "" && !strings.HasPrefix(line, "reject ") && !strings.HasPrefix(line, "warning: ") {
					t.Errorf("stray stderr line %q", line)
				}
			}
		})
	}
}

func writeGolden(t *testing.T, name, content string, keepEmpty bool) {
	t.Helper()
	if content == "" && !keepEmpty {
		if err := os.Remove(name); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseExitCodes(t *testing.T) {
	cases := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stderr string
	}{
		{"stdin entry", mustRead(t, "../../testdata/seed/license-v1.json"), []string{"parse", "-"}, 0, ""},
		{"stdin default", mustRead(t, "../../testdata/seed/bandwidthIn.xml"), []string{"parse"}, 0, ""},
		{"forced format mismatch", mustRead(t, "../../testdata/seed/bandwidthIn.xml"), []string{"parse", "--format", "json"}, 2, "not a json feed page or entry: malformed JSON"},
		{"not a feed", "<html/>", []string{"parse"}, 2, "root element is <html>, not an Atom feed or entry"},
		{"empty", "", []string{"parse"}, 2, "the input is empty"},
		{"bad format flag", "", []string{"parse", "--format", "yaml"}, 2, `--format: format "yaml"`},
		{"missing file", "", []string{"parse", "/nonexistent/page.xml"}, 2, "no such file"},
		{"two files", "", []string{"parse", "a", "b"}, 2, `unexpected argument "b"`},
		{"unknown command", "", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"no command", "", nil, 2, "usage: feedmeter"},
		{"version", "", []string{"version"}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, c.stdin, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, c.code, stderr)
			}
			if !strings.Contains(stderr, c.stderr) {
				t.Fatalf("stderr %q does not say %q", stderr, c.stderr)
			}
			if c.code == 0 && c.args != nil && c.args[0] == "parse" && strings.Count(stdout, "\n") != 1 {
				t.Fatalf("stdout %q: want one event", stdout)
			}
			if c.name == "version" && !strings.HasPrefix(stdout, "feedmeter ") {
				t.Fatalf("version printed %q", stdout)
			}
		})
	}
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
