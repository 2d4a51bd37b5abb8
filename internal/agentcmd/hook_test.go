package agentcmd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hookEnv is the environment variable of the fault-injection pause (testhooks.go); the
// literal is repeated here because the untagged build, this test's, does not define it.
const hookEnv = "MOAT_AGENT_TEST_PAUSE"

// TestShippedBinaries_HaveNoTestHook: moat-agent and moat built the normal way hold
// neither the pause hook's environment variable nor its code (issue 10, defect 10: a
// production agent could be made to hang at an update step). A build with the
// moat_testhooks tag, which internal/agent's process tests use, does hold it: the check
// can see a hook.
func TestShippedBinaries_HaveNoTestHook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	t.Parallel()
	dir := t.TempDir()
	build := func(name, pkg string, tags ...string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		args := []string{"build", "-o", out}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
		}
		return out
	}
	hasHook := func(bin string) []string {
		t.Helper()
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		if bytes.Contains(data, []byte(hookEnv)) {
			found = append(found, "the string "+hookEnv)
		}
		syms, err := exec.Command("go", "tool", "nm", bin).Output()
		if err != nil {
			t.Fatalf("go tool nm %s: %v", bin, err)
		}
		for l := range strings.Lines(string(syms)) {
			if strings.Contains(l, "agentcmd.pauseAt") {
				found = append(found, "the symbol "+strings.TrimSpace(l))
			}
		}
		return found
	}
	for name, pkg := range map[string]string{"moat-agent": "../../cmd/moat-agent", "moat": "../../cmd/moat"} {
		if found := hasHook(build(name, pkg)); len(found) > 0 {
			t.Errorf("%s holds the test hook: %s", name, strings.Join(found, ", "))
		}
	}
	if found := hasHook(build("moat-agent-testhooks", "../../cmd/moat-agent", "moat_testhooks")); len(found) == 0 {
		t.Error("moat-agent built with -tags moat_testhooks holds no hook: the check sees nothing")
	}
}
