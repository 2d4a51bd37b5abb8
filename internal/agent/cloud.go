package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/agent/periph"
)

// newLink is the cloud link of Config.Cloud: the current attestation session's
// certificate, the running app's diagnostics, the outbox under StateDir/cloud.
func (a *Agent) newLink() (*cloudlink.Link, error) {
	c := a.cfg.Cloud
	return cloudlink.New(cloudlink.Config{
		Broker: c.Broker, CAs: c.CAs, DeviceID: a.deviceID, Product: a.cfg.Product,
		QueueDir: filepath.Join(a.cfg.StateDir, "cloud"), Now: a.cfg.Now, Logger: a.log.With("component", "cloudlink"),
		MaxQueueBytes: c.MaxQueueBytes, MaxQueueMessages: c.MaxQueueMessages,
		Certificate: a.cloudCertificate, CertificateChanged: a.certificateChanged, Diagnose: a.diagnose,
	})
}

var (
	errNoSession = errors.New("the device has not attested yet")
	errNoApp     = errors.New("no app is running")
)

func (a *Agent) cloudCertificate(ctx context.Context) (tls.Certificate, error) {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s == nil {
		return tls.Certificate{}, errNoSession
	}
	return s.att.Certificate(ctx)
}

// certificateChanged is the current session's change channel; a new session kicks the link
// itself (setSession).
func (a *Agent) certificateChanged() <-chan struct{} {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.att.Changed()
}

// diagnose runs a diagnostic in the running app through its local API.
func (a *Agent) diagnose(ctx context.Context, command string, args json.RawMessage) (json.RawMessage, error) {
	a.mu.Lock()
	srv := a.app
	a.mu.Unlock()
	if srv == nil {
		return nil, errNoApp
	}
	return srv.Diagnose(ctx, command, args)
}

func (a *Agent) setApp(srv *periph.Server) {
	a.mu.Lock()
	a.app = srv
	a.mu.Unlock()
}

// telemetry takes the app's telemetry.publish: to Config.Telemetry, else the cloud link,
// else nowhere.
func (a *Agent) telemetry(ctx context.Context, topic string, payload json.RawMessage) error {
	switch {
	case a.cfg.Telemetry != nil:
		return a.cfg.Telemetry(ctx, topic, payload)
	case a.link != nil:
		err := a.link.Publish(ctx, topic, payload)
		if errors.Is(err, cloudlink.ErrRefused) {
			return fmt.Errorf("%w: %w", periph.ErrTelemetryRefused, err)
		}
		return err
	}
	a.log.DebugContext(ctx, "telemetry dropped: no cloud configured", "topic", topic)
	return nil
}
