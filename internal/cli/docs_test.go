package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/problem"
)

var update = flag.Bool("update", false, "rewrite docs/cli.md from the command tree")

const docsPath = "../../docs/cli.md"

// TestDocs keeps docs/cli.md generated from the command tree.
func TestDocs(t *testing.T) {
	var buf bytes.Buffer
	env := Env{Stdout: io.Discard, Stderr: io.Discard}
	if err := writeDocs(&buf, Root(&env)); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(docsPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatalf("%v; run 'go test ./internal/cli -run TestDocs -update'", err)
	}
	if diff := cmp.Diff(string(old), buf.String()); diff != "" {
		t.Errorf("docs/cli.md is out of date; run 'go test ./internal/cli -run TestDocs -update' (-file +generated):\n%s", diff)
	}
}

// ownedElsewhere are commands whose help another change fills in; until it does, their
// missing long help is logged rather than failed.
var ownedElsewhere = map[string]bool{"moat demo": true}

// TestHelp checks that every command has a one-line summary and a long help that ends with
// EXAMPLES, and that --help prints them and exits 0.
func TestHelp(t *testing.T) {
	t.Parallel()
	env := Env{Stdout: io.Discard, Stderr: io.Discard}
	walk(Root(&env), func(c *ffcli.Command, path []string) {
		name := strings.Join(path, " ")
		t.Run(strings.Join(path[1:], "_"), func(t *testing.T) {
			t.Parallel()
			if c.ShortHelp == "" || strings.Contains(c.ShortHelp, "\n") {
				t.Errorf("%s: ShortHelp = %q, want one line", name, c.ShortHelp)
			}
			desc, examples := splitHelp(c.LongHelp)
			if desc == "" || len(examples) == 0 {
				if ownedElsewhere[name] {
					t.Logf("%s has no long help with EXAMPLES yet", name)
					return
				}
				t.Errorf("%s: LongHelp needs a description and an EXAMPLES section", name)
			}
			for _, ex := range examples {
				if ex != "" && !strings.HasPrefix(ex, "moat ") && !strings.Contains(ex, " moat ") {
					t.Errorf("%s: example %q does not run moat", name, ex)
				}
			}
			var out, errb bytes.Buffer
			code := Main(t.Context(), append(path[1:], "--help"), Env{Stdout: &out, Stderr: &errb, ConfigDir: t.TempDir()})
			if code != ExitOK {
				t.Errorf("moat %s --help = exit %d, want 0", strings.Join(path[1:], " "), code)
			}
			help := errb.String()
			for _, want := range []string{c.ShortHelp, "USAGE", "EXAMPLES"} {
				if !strings.Contains(help, want) {
					t.Errorf("moat %s --help does not show %q:\n%s", strings.Join(path[1:], " "), want, help)
				}
			}
		})
	})
}

// TestExitCodes checks the CLI's exit codes against the problem kinds they stand for.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	documented := map[int]bool{}
	for _, e := range exitCodes {
		documented[e.Code] = true
	}
	for k := problem.Kind(0); k.Status() != 0; k++ {
		if got := exitForStatus(k.Status()); got != k.ExitCode() {
			t.Errorf("exitForStatus(%d) = %d, want %d (problem kind %v)", k.Status(), got, k.ExitCode(), k)
		}
		if !documented[k.ExitCode()] {
			t.Errorf("exit code %d of problem kind %v is not documented", k.ExitCode(), k)
		}
	}
	tests := []struct {
		err  error
		want int
	}{
		{&client.Error{Status: 400, Code: "name_required"}, 3},
		{&client.Error{Status: 401, Code: "unauthenticated"}, 4},
		{&client.Error{Status: 403, Code: "role_required"}, 5},
		{&client.Error{Status: 404, Code: "product_not_found"}, 6},
		{&client.Error{Status: 409, Code: "name_taken"}, 7},
		{&client.Error{Status: 412, Code: "etag_mismatch"}, 8},
		{&client.Error{Status: 428, Code: "if_match_required"}, 8},
		{&client.Error{Status: 503}, 9},
		{&client.Error{Status: 500, Code: "internal"}, 10},
		{&client.Error{Status: 502}, 10},
		{changedMeanwhile(&client.Error{Status: 412, Code: "etag_mismatch"}, "product", "DW100"), 8},
		{usagef("bad"), 2},
		{errors.New("dial tcp: connection refused"), 1},
		{errHelpShown, 0},
	}
	for _, tt := range tests {
		if got := report(io.Discard, tt.err); got != tt.want {
			t.Errorf("report(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	if got := exitForStatus(http.StatusFound); got != ExitError {
		t.Errorf("exitForStatus(302) = %d, want %d", got, ExitError)
	}
}

func TestReport_ExplainsStaleWrite(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	report(&b, changedMeanwhile(&client.Error{Status: 412, Code: "etag_mismatch"}, "product", "DW100"))
	if !strings.Contains(b.String(), "someone else") || !strings.Contains(b.String(), "again") {
		t.Errorf("report(stale write) = %q, want it to say someone else changed it and to retry", b.String())
	}
}

func TestParseInterleaved(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    []string
		wantPos []string
		wantOut string
	}{
		{[]string{"a", "-o", "json", "b"}, []string{"a", "b"}, "json"},
		{[]string{"a", "--", "-o"}, []string{"a", "-o"}, ""},
		{[]string{"-", "x"}, []string{"-", "x"}, ""},
		{[]string{"a", "-o", "json", "--", "-b"}, []string{"a", "-b"}, "json"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		out := fs.String("o", "", "")
		pos, err := parseInterleaved(fs, tt.args)
		if err != nil {
			t.Errorf("parseInterleaved(%q) = %v", tt.args, err)
			continue
		}
		if diff := cmp.Diff(tt.wantPos, pos); diff != "" || *out != tt.wantOut {
			t.Errorf("parseInterleaved(%q) = %q, -o %q; want %q, -o %q", tt.args, pos, *out, tt.wantPos, tt.wantOut)
		}
	}
}
