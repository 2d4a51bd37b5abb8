package broker

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// fakeClient is a server.ClientAuthentication that Check sees as the given kind, with
// TLS state or none.
type fakeClient struct {
	kind     int
	tls      *tls.ConnectionState
	opts     server.ClientOpts
	str      string
	id       uint64
	register *server.User
}

func (f *fakeClient) GetOpts() *server.ClientOpts                 { return &f.opts }
func (f *fakeClient) GetTLSConnectionState() *tls.ConnectionState { return f.tls }
func (f *fakeClient) RegisterUser(u *server.User)                 { f.register = u }
func (f *fakeClient) RemoteAddress() net.Addr                     { return &net.TCPAddr{} }
func (f *fakeClient) GetNonce() []byte                            { return nil }
func (f *fakeClient) Kind() int                                   { return f.kind }
func (f *fakeClient) GetID() uint64                               { return f.id }
func (f *fakeClient) String() string                              { return f.str }

func testAuthenticator() *authenticator {
	return &authenticator{
		now:            time.Now,
		log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		internalUser:   internalUser,
		internalSecret: strings.Repeat("s", 64),
	}
}

// Only the in-process client with the secret gets in without a certificate; routes,
// leafnodes and the like never through this authenticator.
func TestCheck_RejectsNonMQTTClients(t *testing.T) {
	t.Parallel()
	a := testAuthenticator()
	secret := a.internalSecret
	tests := []struct {
		name string
		c    *fakeClient
		want bool
	}{
		{"in-process with secret", &fakeClient{kind: server.CLIENT, opts: server.ClientOpts{Username: internalUser, Password: secret}}, true},
		{"wrong secret", &fakeClient{kind: server.CLIENT, opts: server.ClientOpts{Username: internalUser, Password: secret[:63] + "t"}}, false},
		{"no secret", &fakeClient{kind: server.CLIENT, opts: server.ClientOpts{Username: internalUser}}, false},
		{"other user", &fakeClient{kind: server.CLIENT, opts: server.ClientOpts{Username: "admin", Password: secret}}, false},
		{"route", &fakeClient{kind: server.ROUTER, opts: server.ClientOpts{Username: internalUser, Password: secret}}, false},
		{"leafnode", &fakeClient{kind: server.LEAF, opts: server.ClientOpts{Username: internalUser, Password: secret}}, false},
		{"TLS without certificate", &fakeClient{kind: server.CLIENT, tls: &tls.ConnectionState{}, opts: server.ClientOpts{Username: internalUser, Password: secret}}, false},
	}
	for _, tt := range tests {
		if got := a.Check(tt.c); got != tt.want {
			t.Errorf("%s: Check = %v, want %v", tt.name, got, tt.want)
		}
		if tt.want && (tt.c.register == nil || tt.c.register.Permissions == nil || tt.c.register.Permissions.Publish == nil) {
			t.Errorf("%s: registered %+v, want the internal permissions", tt.name, tt.c.register)
		}
	}
}

// No NATS client listener: nothing on the network can present the in-process secret.
func TestServerOptions_NoNATSClientPort(t *testing.T) {
	t.Parallel()
	opts, err := serverOptions(Config{MQTTAddr: "127.0.0.1:0"}, testAuthenticator())
	if err != nil {
		t.Fatal(err)
	}
	if !opts.DontListen || opts.HTTPPort != 0 || opts.LeafNode.Port != 0 || opts.Websocket.Port != 0 || opts.Gateway.Port != 0 || opts.Cluster.Port != 0 {
		t.Errorf("serverOptions listens on more than MQTT: %+v", opts)
	}
	if c := opts.MQTT.TLSConfig; c == nil || c.ClientAuth != tls.RequireAnyClientCert || c.MinVersion < tls.VersionTLS12 {
		t.Errorf("MQTT TLS = %+v, want a client certificate and TLS 1.2+", c)
	}
}

// The form nats-server gives the MQTT client ID in (mqtt.go: c.ncs.Store(fmt.Sprintf(
// "%s - %q", c, c.mqtt.cid)) after "<addr> - mid:<n>").
func TestMQTTClientID(t *testing.T) {
	t.Parallel()
	id := strings.Repeat("ab", 32)
	tests := []struct {
		s      string
		connID uint64
		want   string
		ok     bool
	}{
		{fmt.Sprintf("%s - %q", "127.0.0.1:5555 - mid:7", id), 7, id, true},
		{fmt.Sprintf("%s - %q", "[::1]:5555 - mid:12", id), 12, id, true},
		{fmt.Sprintf("%s - %q", "127.0.0.1:5555 - mid:7", id), 8, "", false},                  // another connection's
		{"127.0.0.1:5555 - mid:7", 7, "", false},                                              // not yet stored
		{"127.0.0.1:5555 - cid:7 - \"" + id + "\"", 7, "", false},                             // a NATS client
		{"127.0.0.1:5555 - mid:7 - " + id, 7, "", false},                                      // not quoted
		{"127.0.0.1:5555 - mid:7 - \"" + id + "\" - \"x\"", 7, "", false},                     // trailing
		{"127.0.0.1:5555 - mid:7 - \"\"", 7, "", false},                                       // empty
		{fmt.Sprintf("%s - %q", "127.0.0.1:5555 - mid:7", "a\" - \"b"), 7, "a\" - \"b", true}, // quotes escape
		{"", 0, "", false},
	}
	for _, tt := range tests {
		got, ok := mqttClientID(tt.s, tt.connID)
		if got != tt.want || ok != tt.ok {
			t.Errorf("mqttClientID(%q, %d) = %q, %v, want %q, %v", tt.s, tt.connID, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzMQTTClientID: the client ID part is chosen by whoever connects.
func FuzzMQTTClientID(f *testing.F) {
	f.Add("127.0.0.1:5555 - mid:7 - \"abc\"", uint64(7))
	f.Add("127.0.0.1:5555 - mid:7 - \"a\\\" - \\\"b\"", uint64(7))
	f.Add("x - mid: - \"", uint64(0))
	f.Fuzz(func(t *testing.T, s string, connID uint64) {
		cid, ok := mqttClientID(s, connID)
		if !ok {
			return
		}
		if cid == "" || !strings.HasSuffix(s, fmt.Sprintf(" - mid:%d - %q", connID, cid)) {
			t.Fatalf("mqttClientID(%q, %d) = %q: not the quoted suffix", s, connID, cid)
		}
	})
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	err := Config{ClusterName: "x"}.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want every problem")
	}
	for _, want := range []string{"mqtt_addr", "server_cert", "device_cas", "store_dir", "now", "logger",
		"max_msgs_per_device", "max_age", "max_bytes", "cluster_listen"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a problem with %s", err, want)
		}
	}
	err = Config{ClusterListen: "127.0.0.1:0", ClusterName: "moat", ServerName: "a", ClusterSecret: "short"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "cluster_secret") {
		t.Errorf("Validate() = %v, want a problem with cluster_secret", err)
	}
}
