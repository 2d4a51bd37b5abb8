package server

import (
	"testing"
	"time"
)

func TestConfig_RolloutAdvanceInterval(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{-time.Second, time.Millisecond, 99 * time.Millisecond, time.Hour + time.Second} {
		c := DefaultConfig()
		c.RolloutAdvanceInterval = d
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(rollout-advance-interval %s) = nil, want an error", d)
		}
	}
	for _, tc := range []struct{ set, want time.Duration }{{0, RolloutAdvanceInterval}, {MinRolloutAdvanceInterval, MinRolloutAdvanceInterval}, {time.Second, time.Second}, {time.Hour, time.Hour}} {
		c := DefaultConfig()
		c.RolloutAdvanceInterval = tc.set
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(rollout-advance-interval %s) = %v, want nil", tc.set, err)
		}
		if got := c.rolloutAdvanceEvery(); got != tc.want {
			t.Errorf("rollout-advance job with rollout-advance-interval %s runs every %s, want %s", tc.set, got, tc.want)
		}
	}
}
