package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"regexp"

	"github.com/feedmeter/feedmeter/query"
)

func init() {
	commands["token"] = command{
		summary: "make an API token for feedmeter serve: token new --tenant ID | --admin",
		run:     runToken,
	}
}

var tokenTenant = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// runToken prints a new token on stdout's first line and, on the second,
// the entry to add to the tokens file (its SHA-256, never the token). Exit 2
// on a bad command line.
func runToken(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	usage := func() {
		fmt.Fprintln(stderr, "usage: feedmeter token new (--tenant ID | --admin) [--name LABEL]\n\n"+
			"Prints a new bearer token and the line for the tokens file of `feedmeter serve --tokens`.\n"+
			"The file keeps only the token's SHA-256: store the token itself where its user can reach it.")
	}
	if len(args) == 0 || args[0] != "new" {
		usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("token new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", "", "the tenant the token may read")
	admin := fs.Bool("admin", false, "the token may read every tenant")
	name := fs.String("name", "", "a label for the tokens file (who holds it)")
	fs.Usage = func() {
		usage()
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args[1:], 0); !ok {
		return code
	}
	switch {
	case *admin && *tenant != "":
		fmt.Fprintln(stderr, "feedmeter token new: give --tenant or --admin, not both")
		return 2
	case !*admin && *tenant == "":
		fmt.Fprintln(stderr, "feedmeter token new: give --tenant ID or --admin")
		return 2
	case !*admin && !tokenTenant.MatchString(*tenant):
		fmt.Fprintf(stderr, "feedmeter token new: --tenant %q is not a tenant id\n", *tenant)
		return 2
	}
	tok, hash, err := query.NewToken()
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter token new: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintln(stdout, query.TokenLine(hash, query.Principal{Admin: *admin, Tenant: *tenant, Name: *name}))
	return 0
}
