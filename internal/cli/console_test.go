package cli

import (
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/testenv"
)

// TestConsoleLink_PrintsOneTimeLink: moat console link prints a console URL on the server
// with a code, a new one each time.
func TestConsoleLink_PrintsOneTimeLink(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	first := strings.TrimSpace(op.must("console", "link"))
	if !strings.HasPrefix(first, s.URL+"/ui/sign-in/link?code=") || len(first) != len(s.URL+"/ui/sign-in/link?code=")+43 {
		t.Errorf("moat console link = %q, want %s/ui/sign-in/link?code=<43 characters>", first, s.URL)
	}
	if second := strings.TrimSpace(op.must("console", "link")); second == first {
		t.Error("moat console link printed the same link twice")
	}
	op.want(ExitUsage, "console", "link", "extra")
}
