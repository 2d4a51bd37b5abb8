package director_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/director"
)

// withWindows is the valid assignment with two install windows, a deferral bound and a
// security app image that ignores the windows.
func withWindows() director.Assignment {
	a := validAssignment()
	a.InstallWindows = []director.Window{
		{From: issuedAt.Add(2 * time.Hour), Until: issuedAt.Add(5 * time.Hour)},
		{From: issuedAt.Add(26 * time.Hour), Until: issuedAt.Add(29 * time.Hour)},
	}
	a.MaxDeferralSeconds = 86400
	a.Images[1].IgnoreWindow = true
	return a
}

// TestIssueVerify_WindowsRoundTrip: windows, the deferral bound and IgnoreWindow are signed
// and verified as issued; Issue normalises window times to UTC seconds; an assignment
// without them encodes exactly as before (Format 1 unchanged).
func TestIssueVerify_WindowsRoundTrip(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	a := withWindows()
	got, err := director.Verify(mustIssue(t, key, a), &key.PublicKey, expectA())
	if err != nil {
		t.Fatalf("Verify(with windows) = %v", err)
	}
	if d := cmp.Diff(a, got); d != "" {
		t.Errorf("Verify(Issue(a)) differs (-a +got):\n%s", d)
	}

	berlin, _ := time.LoadLocation("Europe/Berlin")
	local := withWindows()
	local.InstallWindows[0].From = local.InstallWindows[0].From.In(berlin).Add(300 * time.Millisecond)
	if got, err := director.Verify(mustIssue(t, key, local), &key.PublicKey, expectA()); err != nil || !got.InstallWindows[0].From.Equal(a.InstallWindows[0].From) || got.InstallWindows[0].From.Location() != time.UTC {
		t.Errorf("Issue(window in Berlin with a fraction) verified as %v, %v; want %v UTC", got.InstallWindows, err, a.InstallWindows[0].From)
	}

	plain := signedOf(t, mustIssue(t, key, validAssignment()))
	for _, field := range []string{"install_windows", "max_deferral_seconds", "ignore_window"} {
		if bytes.Contains(plain, []byte(field)) {
			t.Errorf("an assignment without windows encodes %q: %s", field, plain)
		}
	}
}

// TestValidate_RefusesBadWindows: windows that overlap, touch, run backwards, come
// unsorted, are too many, are not in UTC seconds, and deferral bounds out of range are
// refused, by Issue and by Verify (re-signed by the director key).
func TestValidate_RefusesBadWindows(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	h := func(n int) time.Time { return issuedAt.Add(time.Duration(n) * time.Hour) }
	for _, tc := range []struct {
		name string
		f    func(*director.Assignment)
	}{
		{"overlapping", func(a *director.Assignment) {
			a.InstallWindows = []director.Window{{From: h(1), Until: h(3)}, {From: h(2), Until: h(4)}}
		}},
		{"touching", func(a *director.Assignment) {
			a.InstallWindows = []director.Window{{From: h(1), Until: h(2)}, {From: h(2), Until: h(4)}}
		}},
		{"unsorted", func(a *director.Assignment) {
			a.InstallWindows = []director.Window{{From: h(5), Until: h(6)}, {From: h(1), Until: h(2)}}
		}},
		{"backwards", func(a *director.Assignment) { a.InstallWindows = []director.Window{{From: h(3), Until: h(2)}} }},
		{"empty", func(a *director.Assignment) { a.InstallWindows = []director.Window{{From: h(3), Until: h(3)}} }},
		{"missing until", func(a *director.Assignment) { a.InstallWindows = []director.Window{{From: h(3)}} }},
		{"too many", func(a *director.Assignment) {
			for i := range director.MaxWindows + 1 {
				a.InstallWindows = append(a.InstallWindows, director.Window{From: h(2 * i), Until: h(2*i + 1)})
			}
		}},
		{"negative deferral", func(a *director.Assignment) { a.MaxDeferralSeconds = -1 }},
		{"deferral over 7 days", func(a *director.Assignment) { a.MaxDeferralSeconds = 7*86400 + 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := validAssignment()
			tc.f(&a)
			if err := a.Validate(); err == nil {
				t.Errorf("Validate() = nil")
			}
			if _, err := director.Issue(key, a); err == nil {
				t.Errorf("Issue() = nil error")
			}
			if _, err := director.Verify(resigned(t, marshal(t, a)), &key.PublicKey, expectA()); !errors.Is(err, director.ErrMalformed) {
				t.Errorf("Verify(re-signed) = %v, want %v", err, director.ErrMalformed)
			}
		})
	}
	// Exactly MaxWindows is fine.
	a := validAssignment()
	for i := range director.MaxWindows {
		a.InstallWindows = append(a.InstallWindows, director.Window{From: h(2 * i), Until: h(2*i + 1)})
	}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate(%d windows) = %v", director.MaxWindows, err)
	}
}

// TestVerify_RejectsAmbiguousWindowEncoding: ATTACKS row 22 for the new fields. An empty
// window list, a zero bound or a false ignore_window written out, a window time with an
// offset or a fraction: none is the canonical encoding, so none is accepted, even signed.
func TestVerify_RejectsAmbiguousWindowEncoding(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	signed := signedOf(t, mustIssue(t, key, withWindows()))
	plain := signedOf(t, mustIssue(t, key, validAssignment()))
	for name, tc := range map[string]struct {
		signed []byte
		want   error
	}{
		"empty-window-list":     {replaceOnce(t, plain, `]}`, `],"install_windows":[]}`), director.ErrNotCanonical},
		"zero-deferral":         {replaceOnce(t, plain, `]}`, `],"max_deferral_seconds":0}`), director.ErrNotCanonical},
		"false-ignore-window":   {replaceOnce(t, plain, `"security_version":2`, `"security_version":2,"ignore_window":false`), director.ErrNotCanonical},
		"window-with-offset":    {replaceOnce(t, signed, `"from":"2026-03-01T14:00:00Z"`, `"from":"2026-03-01T15:00:00+01:00"`), director.ErrMalformed},
		"window-with-fraction":  {replaceOnce(t, signed, `"from":"2026-03-01T14:00:00Z"`, `"from":"2026-03-01T14:00:00.5Z"`), director.ErrMalformed},
		"duplicate-ignore":      {replaceOnce(t, signed, `"ignore_window":true`, `"ignore_window":false,"ignore_window":true`), director.ErrNotCanonical},
		"unknown-window-field":  {replaceOnce(t, signed, `"from":"2026-03-01T14:00:00Z"`, `"from":"2026-03-01T14:00:00Z","x":1`), director.ErrMalformed},
		"null-window-list":      {replaceOnce(t, plain, `]}`, `],"install_windows":null}`), director.ErrNotCanonical},
		"string-deferral-bound": {replaceOnce(t, signed, `"max_deferral_seconds":86400`, `"max_deferral_seconds":"86400"`), director.ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := director.Verify(resigned(t, tc.signed), &key.PublicKey, expectA()); !errors.Is(err, tc.want) {
				t.Errorf("Verify(%s) = %v, want %v", tc.signed, err, tc.want)
			}
		})
	}
}

func TestWindow_Contains(t *testing.T) {
	t.Parallel()
	w := director.Window{From: issuedAt, Until: issuedAt.Add(time.Hour)}
	for at, want := range map[time.Duration]bool{-time.Second: false, 0: true, 59 * time.Minute: true, time.Hour: false} {
		if got := w.Contains(issuedAt.Add(at)); got != want {
			t.Errorf("Contains(from%+v) = %v, want %v", at, got, want)
		}
	}
}
