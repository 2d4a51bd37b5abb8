package update_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/director"
)

// TestUpdate_ResentAssignmentIsUnchangedOlderIsReplayed attacks the rule that lets a
// device hold its assignment across checks (issue 15: the server answers an unchanged
// check with 304 and the device checks the bytes it holds): only a byte-identical copy of
// the last accepted assignment is "unchanged"; an older assignment of the same server, or
// another one with the same counter, is still refused as replayed, and a held copy is
// still verified (an expired one is refused, as a freeze).
func TestUpdate_ResentAssignmentIsUnchangedOlderIsReplayed(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	state := t.TempDir()
	older := w.assign(deviceID, 4, p.image(1))
	c := w.newClient(state)
	if _, err := c.Check(t.Context(), older); err != nil {
		t.Fatalf("Check(counter 4) = %v", err)
	}
	current := w.assign(deviceID, 5, p.image(1))
	plan, err := c.Check(t.Context(), current)
	if err != nil || plan.Unchanged {
		t.Fatalf("Check(counter 5) = %+v, %v; want a new plan", plan, err)
	}
	held, err := c.Held()
	if err != nil || string(held) != string(current) {
		t.Fatalf("Held() = %d bytes, %v; want the accepted assignment byte for byte", len(held), err)
	}

	c = w.newClient(state) // a restart: what is held was persisted
	plan, err = c.Check(t.Context(), current)
	if err != nil || !plan.Unchanged || plan.Counter != 5 || len(plan.Images) != 1 {
		t.Fatalf("Check(the held bytes again) = %+v, %v; want the same plan, Unchanged", plan, err)
	}
	if got := counter(t, state); got != "5\n" {
		t.Errorf("counter file = %q, want 5", got)
	}
	for name, a := range map[string][]byte{
		"the older assignment":               older,
		"another envelope with that counter": w.assign(deviceID, 5, p.image(1)),
		"another with that counter, empty":   w.assign(deviceID, 5),
	} {
		if _, err := c.Check(t.Context(), a); !errors.Is(err, director.ErrReplayed) {
			t.Errorf("Check(%s) = %v, want director.ErrReplayed", name, err)
		}
	}
	// A held copy of an older assignment (the held file behind the counter) is not
	// "unchanged" either.
	if err := os.WriteFile(filepath.Join(state, "assignment"), older, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(t.Context(), older); !errors.Is(err, director.ErrReplayed) {
		t.Errorf("Check(older, held behind the counter) = %v, want director.ErrReplayed", err)
	}
	if err := os.WriteFile(filepath.Join(state, "assignment"), current, 0o600); err != nil {
		t.Fatal(err)
	}

	// An unchanged assignment is verified again: past its expiry it is refused.
	cfg := w.config(state)
	cfg.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	late, err := update.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Check(t.Context(), current); !errors.Is(err, director.ErrExpired) {
		t.Errorf("Check(the held bytes, expired) = %v, want director.ErrExpired", err)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 6, p.image(1))); err != nil {
		t.Errorf("Check(counter 6) = %v", err)
	}
}
