package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/feedmeter/feedmeter/ingest"
)

func init() {
	commands["parse"] = command{
		summary: "parse a feed page or entry (XML or JSON) into NDJSON events",
		run:     runParse,
	}
}

// runParse prints one JSON event per line on stdout and one line per reject
// on stderr. Exit 0: all entries parsed; 1: some were rejected; 2: the input
// is not a feed page or entry at all (or the command line is wrong).
func runParse(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "auto", "input format: auto, xml or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: feedmeter parse [--format auto|xml|json] [FILE|-]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, 1); !ok {
		return code
	}
	f, err := ingest.ParseFormat(*format)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter parse: --format: %v\n", err)
		return 2
	}
	name := "-"
	if fs.NArg() == 1 {
		name = fs.Arg(0)
	}
	var data []byte
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter parse: %v\n", err)
		return 2
	}
	page, err := ingest.ParsePage(data, f)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter parse: %s: %v\n", name, err)
		return 2
	}
	w := bufio.NewWriter(stdout)
	var buf []byte
	for i := range page.Events {
		buf = page.Events[i].AppendJSON(buf[:0])
		buf = append(buf, '\n')
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "feedmeter parse: write: %v\n", err)
		return 2
	}
	if page.Recovered != "" && !page.Entry {
		fmt.Fprintf(stderr, "warning: %s: %s; entries were read one by one\n", name, page.Recovered)
	}
	for _, r := range page.Rejects {
		fmt.Fprintln(stderr, r.String())
	}
	if len(page.Rejects) > 0 {
		return 1
	}
	return 0
}
