package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/server"
)

// The replica settings are bounded: an advance interval below a second would hammer the
// database with lease claims, above an hour would hold stages open long past their soak;
// a token-check cache TTL beyond a minute would let a revocation whose notification was
// lost go unseen for longer than mgmt allows.
func TestServer_RefusesOutOfRangeReplicaSettings(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		set  func(*server.Config)
		want string
	}{
		"advance interval negative":  {func(c *server.Config) { c.RolloutAdvanceInterval = -time.Second }, "rollout-advance-interval"},
		"advance interval 50ms":      {func(c *server.Config) { c.RolloutAdvanceInterval = 50 * time.Millisecond }, "rollout-advance-interval"},
		"advance interval two hours": {func(c *server.Config) { c.RolloutAdvanceInterval = 2 * time.Hour }, "rollout-advance-interval"},
		"auth cache TTL zero":        {func(c *server.Config) { c.AuthCacheTTL = 0 }, "auth-cache-ttl"},
		"auth cache TTL two minutes": {func(c *server.Config) { c.AuthCacheTTL = 2 * time.Minute }, "auth-cache-ttl"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := server.DefaultConfig()
			tc.set(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate(%s) = %v, want an error naming %s", name, err, tc.want)
			}
		})
	}
	// 0 is the default interval; 100ms is the shortest (moat demo and tests use it).
	for _, d := range []time.Duration{0, server.MinRolloutAdvanceInterval, time.Second, time.Hour} {
		cfg := server.DefaultConfig()
		cfg.RolloutAdvanceInterval, cfg.AuthCacheTTL = d, time.Minute
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%s interval, 1m TTL) = %v, want nil", d, err)
		}
	}
	if d := server.DefaultConfig(); d.RolloutAdvanceInterval != server.RolloutAdvanceInterval || d.AuthCacheTTL != 5*time.Second {
		t.Errorf("DefaultConfig() = interval %s, TTL %s, want %s and 5s", d.RolloutAdvanceInterval, d.AuthCacheTTL, server.RolloutAdvanceInterval)
	}
}
