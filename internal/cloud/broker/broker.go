package broker

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-iot/moat/internal/telemetry"
)

// StoredPrefix is telemetry.StoredPrefix: where nats-server's MQTT stores QoS 1
// messages.
const StoredPrefix = telemetry.StoredPrefix

// Names of the streams nats-server's MQTT uses that Open creates itself, with moat's
// subjects and limits (nats-server uses a stream that exists as it finds it).
const (
	mqttMsgsStream     = "$MQTT_msgs"
	mqttRetainedStream = "$MQTT_rmsgs"
)

const (
	internalUser = "moat-cloud-internal"
	routeUser    = "moat-route"
	readyTimeout = 30 * time.Second
	// authTimeout bounds the time from the TCP accept to an MQTT CONNECT, TLS
	// handshake included.
	authTimeout = 5 * time.Second
)

// Broker is a running embedded nats-server with its MQTT listener. Its methods are
// safe for concurrent use.
type Broker struct {
	srv      *server.Server
	log      *slog.Logger
	secret   string
	mqttAddr net.Addr
	tenant   string

	closeOnce sync.Once
}

// Tenant is the tenant the broker admits devices of: Config.TenantID, or the one the CA
// certificates name.
func (b *Broker) Tenant() string { return b.tenant }

// Open starts the broker and returns once it accepts connections and the streams are
// in place.
func Open(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	tr, _ := parseTrust(cfg.DeviceCAs, cfg.TenantID) // Validate parsed it
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	opts, err := serverOptions(cfg, &authenticator{
		trust:          tr,
		now:            cfg.Now,
		log:            cfg.Logger,
		onConnect:      cfg.OnConnect,
		internalUser:   internalUser,
		internalSecret: secret,
	})
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	srv.SetLoggerV2(natsLogger{cfg.Logger}, cfg.Logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	srv.Start()
	b := &Broker{srv: srv, log: cfg.Logger, secret: secret, tenant: tr.tenant}
	if !srv.ReadyForConnections(readyTimeout) {
		b.shutdown()
		return nil, errors.New("start broker: not ready for connections in time")
	}
	if err := b.resolveMQTTAddr(); err != nil {
		b.shutdown()
		return nil, err
	}
	if err := b.setUpStreams(cfg); err != nil {
		b.shutdown()
		return nil, err
	}
	cfg.Logger.Info("broker started", slog.String("mqtt_addr", b.mqttAddr.String()),
		slog.String("tenant_id", tr.tenant), slog.Bool("sync_always", cfg.SyncAlways))
	return b, nil
}

func newSecret() (string, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", fmt.Errorf("make internal secret: %w", err)
	}
	return hex.EncodeToString(k[:]), nil
}

func serverOptions(cfg Config, auth *authenticator) (*server.Options, error) {
	host, port, err := splitHostPort(cfg.MQTTAddr)
	if err != nil {
		return nil, fmt.Errorf("mqtt_addr: %w", err)
	}
	if port == 0 {
		port = -1 // nats-server: -1 picks a free port, 0 means no listener
	}
	replicas := max(cfg.StreamReplicas, 1)
	opts := &server.Options{
		ServerName: cfg.ServerName,
		// No NATS client port at all: the only network listener for clients is MQTT
		// over TLS, so nothing on the network can present the in-process client's
		// secret (a cluster needs a loopback one, see clusterOptions). Attacked by
		// TestBroker_RejectsNATSClients and TestServerOptions_NoNATSClientPort.
		DontListen: true,
		NoSigs:     true,
		// No monitoring port, no leafnodes, no gateways, no websocket.
		JetStream:    true,
		StoreDir:     cfg.StoreDir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cmp.Or(cfg.SyncInterval, DefaultSyncInterval),
		// Bounds every message (rule 5): the largest payload of the contract.
		MaxPayload:                 int32(telemetry.MaxReplyBytes),
		CustomClientAuthentication: auth,
		MQTT: server.MQTTOpts{
			Host: host,
			Port: port,
			TLSConfig: &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{cfg.ServerCert},
				// Any certificate gets through the handshake; Check verifies it
				// against the tenant CAs with deviceca.VerifyDevice at cfg.Now
				// (crypto/tls would use the wall clock and know nothing of tenants).
				ClientAuth: tls.RequireAnyClientCert,
			},
			TLSTimeout:     authTimeout.Seconds(),
			AuthTimeout:    authTimeout.Seconds(),
			StreamReplicas: replicas,
		},
	}
	if cfg.ClusterListen != "" {
		if err := clusterOptions(cfg, opts); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

// clusterOptions joins the server to the NATS cluster of the other moat cloud
// processes. Routes authenticate with ClusterSecret both ways.
func clusterOptions(cfg Config, opts *server.Options) error {
	host, port, err := splitHostPort(cfg.ClusterListen)
	if err != nil {
		return fmt.Errorf("cluster_listen: %w", err)
	}
	if port == 0 {
		port = -1
	}
	// nats-server starts routing only once its NATS client listener is up (route.go,
	// StartRouting waits for clientListenReady), which DontListen never starts. So a
	// clustered server listens for NATS clients on a random loopback port, where only
	// the in-process secret (256 random bits, never written anywhere) authenticates:
	// a client without TLS is checked as the in-process client
	// (TestCheck_RejectsNonMQTTClients).
	opts.DontListen = false
	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.Cluster = server.ClusterOpts{
		Name:     cfg.ClusterName,
		Host:     host,
		Port:     port,
		Username: routeUser,
		Password: cfg.ClusterSecret,
	}
	for _, r := range cfg.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("routes: %w", err)
		}
		u.User = url.UserPassword(routeUser, cfg.ClusterSecret)
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q", p)
	}
	return host, port, nil
}

func (b *Broker) resolveMQTTAddr() error {
	v, err := b.srv.Varz(nil)
	if err != nil {
		return fmt.Errorf("read broker address: %w", err)
	}
	a, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(v.MQTT.Host, strconv.Itoa(v.MQTT.Port)))
	if err != nil {
		return fmt.Errorf("read broker address: %w", err)
	}
	b.mqttAddr = a
	return nil
}

// setUpStreams creates or updates the device stream and the two MQTT streams whose
// settings moat chooses.
func (b *Broker) setUpStreams(cfg Config) error {
	nc, err := b.Conn()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("set up streams: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	replicas := max(cfg.StreamReplicas, 1)
	for _, sc := range []jetstream.StreamConfig{
		// nats-server's MQTT would create $MQTT_msgs on $MQTT.msgs.>, every QoS 1
		// message. Here it holds only what devices subscribe to (their diagnostics
		// requests); what devices publish is stored in telemetry.Stream instead, so
		// that the PUBACK a device gets means "stored in the stream the ingest
		// reads" (TestBroker_PubAckedSurvivesRestart). Updated first: a device that
		// connected before this runs made nats-server create it on $MQTT.msgs.>,
		// which telemetry.Stream's subjects would overlap.
		{
			Name:      mqttMsgsStream,
			Subjects:  []string{StoredPrefix + telemetry.SubjectPrefix + ".*." + telemetry.KindDiagnostics + ".*"},
			Storage:   jetstream.FileStorage,
			Retention: jetstream.InterestPolicy,
			MaxAge:    cfg.MaxAge,
			Replicas:  replicas,
		},
		{
			Name:     telemetry.Stream,
			Subjects: telemetry.StreamSubjects,
			Storage:  jetstream.FileStorage,
			// A per-subject cap with DiscardOld: a device that floods loses its own
			// oldest messages, never another device's (issue 13, "Bad input";
			// TestBroker_FloodDropsOnlyOwnMessages).
			Retention:         jetstream.LimitsPolicy,
			Discard:           jetstream.DiscardOld,
			MaxMsgsPerSubject: cfg.MaxMsgsPerDevice,
			MaxAge:            cfg.MaxAge,
			MaxBytes:          cfg.MaxBytes,
			Replicas:          replicas,
		},
		// Retained messages can reach no one (see the package doc), so their store
		// is kept small: one per subject, MaxRetainedBytes in all, oldest dropped.
		{
			Name:              mqttRetainedStream,
			Subjects:          []string{"$MQTT.rmsgs.>"},
			Storage:           jetstream.FileStorage,
			Retention:         jetstream.LimitsPolicy,
			Discard:           jetstream.DiscardOld,
			MaxMsgsPerSubject: 1,
			MaxBytes:          MaxRetainedBytes,
			Replicas:          replicas,
		},
	} {
		if err := createStream(ctx, js, sc, cfg.ClusterListen != ""); err != nil {
			return fmt.Errorf("set up stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// createStream creates or updates sc. In a cluster JetStream answers only once the
// servers have found each other and elected a leader, so it tries again until ctx ends.
func createStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, clustered bool) error {
	if !clustered {
		_, err := js.CreateOrUpdateStream(ctx, sc)
		return err
	}
	for {
		// Before a leader is elected a request gets no answer at all: each try
		// waits a little only.
		try, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.CreateOrUpdateStream(try, sc)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// MQTTAddr is the address of the MQTT over TLS listener.
func (b *Broker) MQTTAddr() net.Addr { return b.mqttAddr }

// Conn returns a new in-process client for the cloud's ingest and diagnostics. It may
// do anything but publish on the subjects devices publish on (telemetry, events,
// replies; plain or stored), so what is in the stream under a device's subject came
// from that device. It may consume the stream and publish diagnostics requests
// (telemetry.StoredRequestSubject with JetStream, to reach persistent sessions). The
// caller closes it.
func (b *Broker) Conn() (*nats.Conn, error) {
	nc, err := nats.Connect("",
		nats.InProcessServer(b.srv),
		nats.UserInfo(internalUser, b.secret),
		nats.Name("moat cloud"),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			b.log.Warn("in-process client", slog.Any("error", err))
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect in process: %w", err)
	}
	return nc, nil
}

// mqttQoSHeader is the header nats-server's MQTT reads a stored message's QoS from
// (mqtt.go, mqttNatsHeader): a stored message without it counts as QoS 0 and a QoS 1
// subscription never gets it. TestBroker_SessionSurvivesRestart fails if that changes.
const mqttQoSHeader = "Nmqtt-Pub"

// RequestMsg is the message that carries diagnostics request id to device with QoS 1:
// published with JetStream (PublishMsg), it is stored until the device's QoS 1
// subscription takes it, now or when its persistent session next connects, across
// broker restarts. While no session of the device has subscribed, it is dropped at
// once (the stream keeps messages only for interested consumers): the sender's
// timeout then ends the request.
func RequestMsg(device, id string, payload []byte) (*nats.Msg, error) {
	if !telemetry.ValidDeviceID(device) || !telemetry.ValidRequestID(id) {
		return nil, fmt.Errorf("diagnostics request %.64q for device %.64q: %w", id, device, telemetry.ErrBadAddress)
	}
	m := nats.NewMsg(telemetry.StoredRequestSubject(device, id))
	m.Header.Set(mqttQoSHeader, "1")
	m.Data = payload
	return m, nil
}

// Close shuts the broker down: it closes every connection (MQTT wills are published
// as on any disconnect) and waits until the server is gone. JetStream's store stays
// in StoreDir.
func (b *Broker) Close() error {
	b.shutdown()
	return nil
}

func (b *Broker) shutdown() {
	b.closeOnce.Do(func() {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
		if b.log != nil && b.mqttAddr != nil {
			b.log.Info("broker stopped", slog.String("mqtt_addr", b.mqttAddr.String()))
		}
	})
}

// natsLogger passes nats-server's log lines to slog. Notices (start-up banners,
// listener addresses) are Debug; a refused client is Warn, not Error: a stranger's
// bad certificate is no reason for an operator to act.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.log(slog.LevelDebug, format, v) }
func (n natsLogger) Warnf(format string, v ...any)   { n.log(slog.LevelWarn, format, v) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.log(slog.LevelError, format, v) }
func (n natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelError
	if isClientError(msg) {
		level = slog.LevelWarn
	}
	n.l.Log(context.Background(), level, "nats-server: "+msg)
}
func (n natsLogger) Debugf(format string, v ...any) { n.log(slog.LevelDebug, format, v) }
func (n natsLogger) Tracef(format string, v ...any) {}

func (n natsLogger) log(level slog.Level, format string, v []any) {
	if !n.l.Enabled(context.Background(), level) {
		return
	}
	n.l.Log(context.Background(), level, "nats-server: "+fmt.Sprintf(format, v...))
}

// isClientError tells the errors a client causes (refused, bad TLS, permissions) from
// the server's own.
func isClientError(msg string) bool {
	for _, s := range []string{"Authentication Error", "Authorization Violation", "TLS handshake error",
		"Permissions Violation", "authentication error", "invalid", "unable to connect"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
