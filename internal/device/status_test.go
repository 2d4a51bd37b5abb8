package device_test

import (
	"testing"

	"github.com/moat-iot/moat/internal/device"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	should := device.Should{OSTarget: "os/moat/2.0.0", AppTarget: "apps/dw/2.0.0"}
	now := device.Running{OSTarget: "os/moat/2.0.0", OSVersion: "2.0.0", AppTarget: "apps/dw/2.0.0", AppVersion: "2.0.0"}
	old := device.Running{OSTarget: "os/moat/1.0.0", OSVersion: "1.0.0", AppTarget: "apps/dw/2.0.0", AppVersion: "2.0.0"}
	for _, c := range []struct {
		name     string
		should   device.Should
		attested bool
		refusal  string
		running  device.Running
		update   string
		want     string
	}{
		{"never attested", should, false, "", device.Running{}, "failed", device.StateNever},
		{"refused", should, true, device.RefusedBlocked, now, "failed", device.StateRefused},
		{"runs what it should", should, true, "", now, "", device.StateCurrent},
		{"runs it after an old failure", should, true, "", now, "rolled_back", device.StateCurrent},
		{"older OS", should, true, "", old, "downloading", device.StatePending},
		{"older OS, failed", should, true, "", old, "failed", device.StateFailed},
		{"older OS, rolled back", should, true, "", old, "rolled_back", device.StateFailed},
		{"no app assigned", device.Should{OSTarget: "os/moat/1.0.0"}, true, "", old, "", device.StateCurrent},
		{"nothing assigned", device.Should{}, true, "", device.Running{}, "", device.StateCurrent},
	} {
		if got := device.Classify(c.should, c.attested, c.refusal, c.running, c.update); got != c.want {
			t.Errorf("%s: Classify(%+v, %v, %q, %+v, %q) = %s, want %s", c.name, c.should, c.attested, c.refusal, c.running, c.update, got, c.want)
		}
	}
}
