package broker_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/cloud/broker"
	"github.com/moat-iot/moat/internal/telemetry"
)

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Three moat cloud processes' brokers form one NATS cluster: a device connected to one
// is read from another, with the stream kept by all three.
func TestBroker_Cluster(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	const n = 3
	secret := strings.Repeat("k", 40)
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	cfgs := make([]broker.Config, n)
	for i := range cfgs {
		cfg := config(t)
		cfg.ServerName = fmt.Sprintf("cloud-%d", i)
		cfg.ClusterName = "moat-cloud"
		cfg.ClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[i])
		cfg.ClusterSecret = secret
		cfg.StreamReplicas = n
		for j := range n {
			if j != i {
				cfg.Routes = append(cfg.Routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[j]))
			}
		}
		cfgs[i] = cfg
	}
	brokers := make([]*broker.Broker, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { brokers[i], errs[i] = broker.Open(cfgs[i]) })
	}
	wg.Wait()
	for i, b := range brokers {
		if b != nil {
			t.Cleanup(func() { _ = b.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("Open(cloud-%d) = %v", i, errs[i])
		}
	}
	d := newDevice(t)
	if ok, out := publish(t, brokers[0], d, telemetry.TelemetryTopic(d.id), "clustered"); !ok {
		t.Fatalf("publish: %s", out)
	}
	if got := stored(t, brokers[2], subj(telemetry.TelemetryTopic(d.id))); !cmp.Equal(got, []string{"clustered"}) {
		t.Errorf("read from another server = %q, want [clustered]", got)
	}
	// A server without the cluster secret does not join.
	for _, pass := range []string{"", "wrong", secret[1:]} {
		if got := intrude(t, cfgs[0].ClusterListen, pass); !strings.Contains(got, "Authorization Violation") {
			t.Errorf("route CONNECT with password %q: %q, want an authorization violation", pass, got)
		}
	}
	if got := intrude(t, cfgs[0].ClusterListen, secret); strings.Contains(got, "Authorization Violation") {
		t.Errorf("route CONNECT with the secret: %q, want accepted (the test's control)", got)
	}
}

// intrude connects to a route port as a server with password pass and returns what
// the port answers its CONNECT.
func intrude(t *testing.T, addr, pass string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("route port said %q, %v; want INFO", line, err)
	}
	fmt.Fprintf(c, "CONNECT {\"user\":\"moat-route\",\"pass\":%q,\"verbose\":false,\"pedantic\":false,\"name\":\"intruder\",\"cluster\":\"moat-cloud\"}\r\nPING\r\n", pass)
	line, _ := r.ReadString('\n')
	return line
}

func TestConfig_ClusterNeedsSecretAndRoutes(t *testing.T) {
	t.Parallel()
	cfg := config(t)
	cfg.ServerName, cfg.ClusterName, cfg.ClusterListen = "cloud-0", "moat-cloud", "127.0.0.1:0"
	cfg.ClusterSecret = strings.Repeat("k", 40)
	cfg.Routes = []string{"nats-route://127.0.0.1:1"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	for name, bad := range map[string]func(c *broker.Config){
		"no secret":    func(c *broker.Config) { c.ClusterSecret = "" },
		"short secret": func(c *broker.Config) { c.ClusterSecret = "k" },
		"no routes":    func(c *broker.Config) { c.Routes = nil },
		"no server":    func(c *broker.Config) { c.ServerName = "" },
		"route URL":    func(c *broker.Config) { c.Routes = []string{"http://x"} },
	} {
		c := cfg
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
}
