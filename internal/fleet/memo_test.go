package fleet_test

import (
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/director"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
)

// TestInputsMemo_LostChangeReachesTheAssignmentWithinItsAge: a deployment written to the
// store with no change event (another replica's, whose NOTIFY was lost) is not seen by
// an assignment computed from the group's inputs read just before it (the memo is in
// play), and is seen by every assignment computed fleetsvc.InputsMemoMaxAge later: a lost event
// costs at most that on the update path, never the assignment cache's 15 minutes.
func TestInputsMemo_LostChangeReachesTheAssignmentWithinItsAge(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	read := time.Now()
	deployLost(t, f, "Production", v2)
	assigned := func() string {
		t.Helper()
		data, err := h.dc.GetAssignment(ctx) // no If-None-Match: computed and signed anew
		if err != nil {
			t.Fatal(err)
		}
		h.accept(t, data)
		return h.path(director.KindApp)
	}
	if got := assigned(); time.Since(read) < fleetsvc.InputsMemoMaxAge/2 && got == v2.Path {
		t.Fatal("the lost deployment was seen at once: the memo is not in play, the test proves nothing")
	}
	f.offset.Add(int64(fleetsvc.InputsMemoMaxAge))
	defer f.offset.Store(0)
	if got := assigned(); got != v2.Path {
		t.Errorf("app %s after the memo's age, want the lost deployment's %s", got, v2.Path)
	}
}
