package sandbox_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/moat-iot/moat/internal/agent/sandbox"
)

// procProbe is what the "procfs" app reports: for each way of naming itself in /proc
// (/proc/self, /proc/thread-self, /proc/<pid>, and /proc/self/task/<tid> and
// /proc/<pid>/task/<tid> for every thread) its status fields, and the result ("ok" or the
// error) of each forbidden operation, by path.
type procProbe struct {
	Aliases []string
	Status  map[string]map[string]string
	Ops     map[string]string
}

// forbiddenWrites are procfs writes an unprivileged process may not make on itself: each
// needs a capability (oom_score_adj below its current value: CAP_SYS_RESOURCE; loginuid:
// CAP_AUDIT_CONTROL; uid_map, gid_map and setgroups outside a new user namespace;
// attr/current: a security-module transition).
var forbiddenWrites = map[string]string{
	"oom_score_adj": "-1000",
	"loginuid":      "0",
	"uid_map":       "0 0 1",
	"gid_map":       "0 0 1",
	"setgroups":     "deny",
	"attr/current":  "unconfined",
}

func procfsApp() int {
	pid := os.Getpid()
	p := procProbe{Status: map[string]map[string]string{}, Ops: map[string]string{}}
	p.Aliases = []string{"/proc/self", "/proc/thread-self", "/proc/" + strconv.Itoa(pid)}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, tk := range tasks {
		p.Aliases = append(p.Aliases, "/proc/self/task/"+tk.Name(), fmt.Sprintf("/proc/%d/task/%s", pid, tk.Name()))
	}
	for _, a := range p.Aliases {
		p.Status[a] = statusFields(filepath.Join(a, "status"))
		for file, value := range forbiddenWrites {
			name := filepath.Join(a, file)
			p.Ops["write "+name] = result(os.WriteFile(name, []byte(value), 0))
		}
	}
	// The runtime (the app's parent) and init: their secrets and their views of the system.
	for _, other := range []string{"/proc/" + os.Getenv("SANDBOX_TEST_RUNTIME_PID"), "/proc/1"} {
		for _, file := range []string{"environ", "mem", "auxv", "syscall", "stack"} {
			name := filepath.Join(other, file)
			p.Ops["read "+name] = result(readSome(name))
		}
		for _, dir := range []string{"root", "cwd", "fd", "map_files"} {
			name := filepath.Join(other, dir)
			_, err := os.ReadDir(name)
			p.Ops["list "+name] = result(err)
		}
		name := filepath.Join(other, "mem")
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		p.Ops["open for writing "+name] = result(err)
	}
	// Other apps' directories and the runtime's key directory.
	for _, dir := range []string{os.Getenv("SANDBOX_TEST_OTHER_APP"), os.Getenv("SANDBOX_TEST_OTHER_RUN"), os.Getenv("SANDBOX_TEST_KEYDIR")} {
		_, err := os.ReadDir(dir)
		p.Ops["list "+dir] = result(err)
		name := filepath.Join(dir, "file")
		p.Ops["read "+name] = result(readSome(name))
		p.Ops["create "+filepath.Join(dir, "planted")] = result(os.WriteFile(filepath.Join(dir, "planted"), []byte("x"), 0o600))
	}
	if err := json.NewEncoder(os.Stdout).Encode(p); err != nil {
		return 1
	}
	return 0
}

// readSome opens name and reads a little of it.
func readSome(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 64))
	return err
}

// TestSandbox_RefusesProcfsAliasesAndOtherDirs is ATTACKS row 28 (Azure Sphere 20.08: a
// check made on /proc/self was bypassed through /proc/self/task/<tid>): the app, in the
// root-only namespace mode, tries each forbidden procfs operation on itself through every
// alias of itself, reads the runtime's and init's secrets through /proc, and opens another
// app's slot, another app's run directory and the runtime's key directory. Every one is
// refused, and every alias shows an empty bounding set and no_new_privs.
func TestSandbox_RefusesProcfsAliasesAndOtherDirs(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root: the namespace mode must be tested there")
		}
		t.Skip("network namespaces need root (CI runs as root)")
	}
	f := startRuntime(t, appCred)
	base, _ := appRoot(t)
	otherApp := filepath.Join(t.TempDir(), "slots", "app-b", "root") // t.TempDir is 0700, as a state directory
	otherRun, err := os.MkdirTemp(base, "run-other")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(otherRun) })
	if err := sandbox.MakeRunDir(otherRun, &sandbox.Credential{UID: 65533, GID: 65533}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(otherApp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{otherApp, otherRun, filepath.Dir(f.secret)} {
		if err := os.WriteFile(filepath.Join(dir, "file"), []byte("secret"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, stdout := spec(t, "procfs", sandbox.IsolationNamespace, appCred, f)
	s.Env = append(s.Env, "SANDBOX_TEST_RUNTIME_PID="+strconv.Itoa(os.Getpid()),
		"SANDBOX_TEST_OTHER_APP="+otherApp, "SANDBOX_TEST_OTHER_RUN="+otherRun, "SANDBOX_TEST_KEYDIR="+filepath.Dir(f.secret))
	exit := run(t, t.Context(), s)
	if exit.Code != 0 {
		t.Fatalf("procfs app: %v; stderr: %s", exit, exit.Stderr)
	}
	var p procProbe
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		t.Fatalf("procfs app output %q: %v", stdout.Bytes(), err)
	}
	if len(p.Aliases) < 5 {
		t.Fatalf("aliases probed = %q, want self, thread-self, the PID and at least one task by both paths", p.Aliases)
	}
	// 6 writes per alias, 2 x 10 on the runtime and init, 3 x 3 on the directories.
	if want := 6*len(p.Aliases) + 20 + 9; len(p.Ops) != want {
		t.Errorf("%d operations tried, want %d", len(p.Ops), want)
	}
	for op, res := range p.Ops {
		if res == "ok" {
			t.Errorf("%s: allowed, want it refused", op)
		}
	}
	zero := "0000000000000000"
	for _, a := range p.Aliases {
		st := p.Status[a]
		if st["CapBnd"] != zero || st["CapEff"] != zero || st["CapPrm"] != zero || st["NoNewPrivs"] != "1" {
			t.Errorf("%s/status: CapBnd %q, CapEff %q, CapPrm %q, NoNewPrivs %q; want no capability and no_new_privs",
				a, st["CapBnd"], st["CapEff"], st["CapPrm"], st["NoNewPrivs"])
		}
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(f.secret), "planted")); err == nil {
		t.Errorf("the app planted %q in the runtime's key directory", b)
	}
}
