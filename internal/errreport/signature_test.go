package errreport_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/errreport"
)

func crash(path, msg string, exit int) errreport.Report {
	return errreport.Report{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at, ImagePath: path, ExitCode: intp(exit), Message: msg}
}

// TestSignature_GroupsOccurrences: reports of one defect that differ only in what varies
// between occurrences (version, numbers, addresses, IDs, paths, quoted values, spacing)
// have one signature and one issue ID.
func TestSignature_GroupsOccurrences(t *testing.T) {
	t.Parallel()
	withSignal := func(r errreport.Report, sig string) errreport.Report { r.ExitCode = nil; r.Signal = sig; return r }
	cases := []struct {
		name string
		a, b errreport.Report
	}{
		{"another version", crash("apps/dw100/2.0.0", "heater fault", 2), crash("apps/dw100/2.0.1", "heater fault", 2)},
		{"numbers", crash("apps/dw100/2", "heater at 93 C after 12.5 s", 2), crash("apps/dw100/2", "heater at 101 C after 3 s", 2)},
		{"hex addresses", withSignal(crash("apps/a/1", "nil pointer at 0x7ffd1234abcd pc=0x4a2b", 0), "SIGSEGV"),
			withSignal(crash("apps/a/1", "nil pointer at 0x00c000012000 pc=0x4a30", 0), "SIGSEGV")},
		{"long hex", crash("apps/a/1", "blob deadbeefcafe0123 missing", 1), crash("apps/a/1", "blob 0123456789abcdef missing", 1)},
		{"uuids", crash("apps/a/1", "request 0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f timed out", 1),
			crash("apps/a/1", "request 11111111-2222-3333-4444-555555555555 timed out", 1)},
		{"ulids", crash("apps/a/1", "job 01JXA7Q3ZK4M9V6T2B8R5N1C0D failed", 1), crash("apps/a/1", "job 01JXB000000000000000000000 failed", 1)},
		{"paths", crash("apps/a/1", "open /var/lib/app/cache/42.db: no space left", 1), crash("apps/a/1", "open /tmp/x: no space left", 1)},
		{"relative paths", crash("apps/a/1", "read ./conf/a.json failed", 1), crash("apps/a/1", "read ../b.json failed", 1)},
		{"quoted", crash("apps/a/1", `unknown program "eco 50"`, 1), crash("apps/a/1", `unknown program "quick"`, 1)},
		{"single-quoted", crash("apps/a/1", "can't parse 'abc': bad", 1), crash("apps/a/1", "can't parse 'x y z': bad", 1)},
		{"urls", crash("apps/a/1", "get https://api.example.com/v1/x?id=3: 503", 1), crash("apps/a/1", "get http://10.0.0.1:8080/: 503", 1)},
		{"whitespace", crash("apps/a/1", "heater\n\tfault  here", 1), crash("apps/a/1", "heater fault here ", 1)},
		{"report ID and time", crash("apps/a/1", "x", 1), func() errreport.Report {
			r := crash("apps/a/1", "x", 1)
			r.ID = "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f"
			r.At = at.AddDate(1, 0, 0)
			return r
		}()},
		{"stderr and uptime", crash("apps/a/1", "x", 1), func() errreport.Report {
			r := crash("apps/a/1", "x", 1)
			r.StderrTail, r.UptimeSeconds = "panic: boom\n", 99
			return r
		}()},
		{"dropped count", errreport.Report{Kind: errreport.Agent, Code: errreport.CodeQueueFull, Dropped: 3, Message: "dropped 3 reports"},
			errreport.Report{Kind: errreport.Agent, Code: errreport.CodeQueueFull, Dropped: 900, Message: "dropped 900 reports"}},
		{"update target version", errreport.Report{Kind: errreport.UpdateFailed, ImagePath: "os/moat/1.0.0", Step: errreport.StepInstall, Target: "os/moat/1.1.0", Code: "disk_full"},
			errreport.Report{Kind: errreport.UpdateFailed, ImagePath: "os/moat/1.0.1", Step: errreport.StepInstall, Target: "os/moat/1.2.0", Code: "disk_full"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sa, sb := errreport.Signature(c.a), errreport.Signature(c.b)
			if sa != sb {
				t.Errorf("Signature(a) = %q\nSignature(b) = %q\nwant equal", sa, sb)
			}
			if ia, ib := errreport.IssueID(sa), errreport.IssueID(sb); ia != ib || !errreport.ValidIssueID(ia) {
				t.Errorf("IssueID = %s and %s, want one valid ID", ia, ib)
			}
		})
	}
}

// TestSignature_SeparatesDefects: reports that differ in what identifies a defect have
// different signatures.
func TestSignature_SeparatesDefects(t *testing.T) {
	t.Parallel()
	base := crash("apps/dw100/2.0.0", "heater fault", 2)
	with := func(f func(*errreport.Report)) errreport.Report { r := base; f(&r); return r }
	cases := []struct {
		name string
		b    errreport.Report
	}{
		{"kind", with(func(r *errreport.Report) { r.Kind = errreport.Agent; r.ExitCode = nil })},
		{"image name", with(func(r *errreport.Report) { r.ImagePath = "apps/dw200/2.0.0" })},
		{"os or app", with(func(r *errreport.Report) { r.ImagePath = "os/dw100/2.0.0" })},
		{"exit code", with(func(r *errreport.Report) { r.ExitCode = intp(3) })},
		{"signal", with(func(r *errreport.Report) { r.ExitCode = nil; r.Signal = "SIGSEGV" })},
		{"code", with(func(r *errreport.Report) { r.Code = "overheat" })},
		{"message words", with(func(r *errreport.Report) { r.Message = "pump fault" })},
		{"no message", with(func(r *errreport.Report) { r.Message = "" })},
		{"message case", with(func(r *errreport.Report) { r.Message = "Heater fault" })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if a, b := errreport.Signature(base), errreport.Signature(c.b); a == b {
				t.Errorf("Signature = %q for both, want different", a)
			}
		})
	}
	upd := errreport.Report{Kind: errreport.UpdateFailed, ImagePath: "os/moat/1.0.0", Step: errreport.StepInstall, Target: "os/moat/1.1.0"}
	for name, b := range map[string]errreport.Report{
		"step":   {Kind: errreport.UpdateFailed, ImagePath: "os/moat/1.0.0", Step: errreport.StepBoot, Target: "os/moat/1.1.0"},
		"target": {Kind: errreport.UpdateFailed, ImagePath: "os/moat/1.0.0", Step: errreport.StepInstall, Target: "apps/dw100/1.1.0"},
	} {
		if errreport.Signature(upd) == errreport.Signature(b) {
			t.Errorf("%s: Signature = %q for both, want different", name, errreport.Signature(b))
		}
	}
	capA := errreport.Report{Kind: errreport.CapabilityDenied, ImagePath: "apps/a/1", Capability: "host:evil.example:443"}
	capB := errreport.Report{Kind: errreport.CapabilityDenied, ImagePath: "apps/a/1", Capability: "gpio:5"}
	if errreport.Signature(capA) == errreport.Signature(capB) {
		t.Errorf("capability: Signature = %q for both, want different", errreport.Signature(capA))
	}
	// A field cannot pose as another: a code that holds a newline and "message=" (refused
	// by Validate, but Signature must not be fooled) is not the message.
	fake := errreport.Report{Kind: errreport.Agent, Code: "x\nmessage=y"}
	real := errreport.Report{Kind: errreport.Agent, Code: "x", Message: "y"}
	if errreport.Signature(fake) == errreport.Signature(real) {
		t.Errorf("Signature(code with a newline) = Signature(code and message) = %q", errreport.Signature(real))
	}
}

func TestSignature_Text(t *testing.T) {
	t.Parallel()
	r := errreport.Report{Kind: errreport.AppCrash, ImagePath: "apps/dw100/2.0.0", Signal: "SIGSEGV", Code: "panic",
		Message: "nil map write at 0xc000a1 in /app/main.go:42 for \"eco\""}
	want := "kind=app_crash\nimage=apps/dw100\nsignal=SIGSEGV\ncode=panic\nmessage=nil map write at <addr> in <path>:<n> for \"<str>\""
	if got := errreport.Signature(r); got != want {
		t.Errorf("Signature = %q, want %q", got, want)
	}
	if got := errreport.IssueID(want); len(got) != len("iss_")+20 || !errreport.ValidIssueID(got) {
		t.Errorf("IssueID = %q, want iss_ and 20 hex digits", got)
	}
	for _, bad := range []string{"", "iss_", "iss_0123456789ABCDEF0123", "iss_0123456789abcdef012", "x" + errreport.IssueID(want)} {
		if errreport.ValidIssueID(bad) {
			t.Errorf("ValidIssueID(%q) = true, want false", bad)
		}
	}
}

func TestNormalizeMessage(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                   "",
		"read/write failed":                  "read/write failed",
		"retry 3 of 5":                       "retry <n> of <n>",
		"at 0xDEADBEEF":                      "at <addr>",
		"don't stop":                         "don't stop",
		"C:\\Program Files\\x":               "<path> Files\\x",
		"eth0 down":                          "eth<n> down",
		"v2.0.1 refused":                     "v<n> refused",
		"a\tb\n\nc":                          "a b c",
		"open apps/dw100/2.0.0/app.bin: EIO": "open <path>: EIO",
	} {
		if got := errreport.NormalizeMessage(in); got != want {
			t.Errorf("NormalizeMessage(%q) = %q, want %q", in, got, want)
		}
	}
	long := errreport.NormalizeMessage(strings.Repeat("1 ", 2000))
	if len(long) > errreport.MaxSignatureMessageBytes {
		t.Errorf("NormalizeMessage(long) is %d bytes, want at most %d", len(long), errreport.MaxSignatureMessageBytes)
	}
}

// FuzzSignature: whatever a message holds, normalising never panics, is bounded, valid
// UTF-8 on one line, and idempotent; the signature's lines are the known keys only. The
// seed corpus is in testdata/fuzz/FuzzSignature.
func FuzzSignature(f *testing.F) {
	for _, r := range valid() {
		f.Add(r.Message, r.ImagePath, r.Code)
	}
	f.Add(`x "a\nb" 'c`, "apps/a/1", "c")
	f.Add("deadbeefcafe1x at 0x12 /p/q 'r' https://h/'s'", "os/a/b/c", "")
	f.Fuzz(func(t *testing.T, msg, path, code string) {
		n := errreport.NormalizeMessage(msg)
		if len(n) > errreport.MaxSignatureMessageBytes || !utf8.ValidString(n) || strings.ContainsAny(n, "\n\r\t") {
			t.Fatalf("NormalizeMessage(%q) = %q: want at most %d bytes of valid UTF-8 on one line", msg, n, errreport.MaxSignatureMessageBytes)
		}
		if again := errreport.NormalizeMessage(n); again != n {
			t.Fatalf("NormalizeMessage is not idempotent:\n in   %q\n once %q\n twice %q", msg, n, again)
		}
		sig := errreport.Signature(errreport.Report{Kind: errreport.Agent, ImagePath: path, Code: code, Message: msg})
		for line := range strings.SplitSeq(sig, "\n") {
			key, _, _ := strings.Cut(line, "=")
			switch key {
			case "kind", "image", "code", "message":
			default:
				t.Fatalf("Signature has line %q: want only kind, image, code and message", line)
			}
		}
		if !errreport.ValidIssueID(errreport.IssueID(sig)) {
			t.Fatalf("IssueID(%q) is not valid", sig)
		}
	})
}
