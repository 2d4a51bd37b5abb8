package server

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/blob/s3blob"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/store/postgres/notify"
	"github.com/moat-iot/moat/internal/tenant"
)

// Replicas: with PostgreSQL, several servers share the database; each also needs the
// others' blobs (--s3-endpoint) and their wake-ups (LISTEN/NOTIFY, always on with
// PostgreSQL). Background jobs already run under a lease (jobs.go).

// openBlobs opens the blob store: the S3 bucket when s3-endpoint is set, else DATA/blobs.
func openBlobs(ctx context.Context, cfg Config) (blob.Store, error) {
	if cfg.S3Endpoint == "" {
		s, err := fsblob.Open(filepath.Join(cfg.DataDir, "blobs"))
		if err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
		return s, nil
	}
	access, secret, err := readS3Credentials(cfg.S3CredentialsFile)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if cfg.S3CAFile != "" {
		pem, err := os.ReadFile(cfg.S3CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3-ca-file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3-ca-file %s: no PEM certificate in it", cfg.S3CAFile)
		}
	}
	s, err := s3blob.Open(ctx, s3blob.Config{Endpoint: cfg.S3Endpoint, Bucket: cfg.S3Bucket, Region: cfg.S3Region,
		Prefix: cfg.S3Prefix, AccessKey: access, SecretKey: s3blob.Secret(secret), RootCAs: roots})
	if err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	return s, nil
}

// readS3Credentials reads the access key ID and the secret access key, one a line, from
// a file that only its owner may read (as the other key files).
func readS3Credentials(path string) (access string, secret s3blob.Secret, err error) {
	const flag = "s3-credentials-file"
	info, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", flag, err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return "", "", fmt.Errorf("%s %s: mode %v lets others read it; chmod 600", flag, path, info.Mode().Perm())
	}
	if info.Size() > 4096 {
		return "", "", fmt.Errorf("%s %s: larger than 4096 bytes; want two lines", flag, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("%s: %w", flag, err)
	}
	if len(lines) != 2 || strings.ContainsAny(lines[0]+lines[1], " \t") {
		return "", "", fmt.Errorf("%s %s: want two lines, the access key ID and the secret access key", flag, path)
	}
	return lines[0], s3blob.Secret(lines[1]), nil
}

// newNotifier returns the PostgreSQL LISTEN/NOTIFY notifier of a replica, or nil for
// SQLite (one process: Notify's local wake-up is all there is).
func newNotifier(cfg Config, s *Server, reg prometheus.Registerer) (*notify.Notifier, error) {
	if cfg.databaseKind() != "postgres" {
		return nil, nil
	}
	return notify.New(notify.Config{DSN: cfg.Database, Logger: s.log.With("component", "notify"), Registerer: reg})
}

// broadcast is fleet's Config.Broadcast: nil without a notifier.
func broadcast(n *notify.Notifier) func(tenant.ID) {
	if n == nil {
		return nil
	}
	return func(t tenant.ID) { n.Publish(notify.Event{Kind: notify.KindWake, Tenant: t}) }
}

// kindDevice ends the other replicas' cached copies of a device's row (internal/fleet,
// devcache.go): an attestation changed it. The event's tenant field carries the device ID
// (64 hex digits); "every tenant" (a lost LISTEN connection, or events collapsed past the
// notifier's bound) ends every cached row.
const kindDevice notify.Kind = "device"

// broadcastDevice is fleet's Config.BroadcastDevice: nil without a notifier.
func broadcastDevice(n *notify.Notifier) func(device.ID) {
	if n == nil {
		return nil
	}
	return func(id device.ID) { n.Publish(notify.Event{Kind: kindDevice, Tenant: tenant.ID(id)}) }
}

// handleWakes hands the wake-ups other replicas publish to this replica's waiting devices,
// and their device changes to its device cache.
func handleWakes(n *notify.Notifier, f *fleet.Service) error {
	if n == nil {
		return nil
	}
	if err := n.Handle(kindDevice, func(e notify.Event) {
		if e.Tenant == notify.AllTenants {
			f.DevicesChangedAllLocal()
			return
		}
		f.DeviceChangedLocal(device.ID(e.Tenant))
	}); err != nil {
		return err
	}
	return n.Handle(notify.KindWake, func(e notify.Event) {
		if e.Tenant == notify.AllTenants {
			f.WakeAllLocal()
			return
		}
		f.WakeLocal(e.Tenant)
	})
}

// runNotifier runs n until ctx is done; the returned channel closes when it has stopped.
func runNotifier(ctx context.Context, n *notify.Notifier, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	if n == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			log.ErrorContext(ctx, "replica notifications stopped", "err", err)
		}
	}()
	return done
}

// Token checks are cached for a few seconds on each replica (internal/api/mgmt,
// auth_cache.go): a revocation, removal or role change on one replica clears the entry
// there before it answers, and is published here so that every other replica clears it
// at once too (TestReplicas_RevocationStopsTokenOnEveryReplica). The event's tenant field
// carries the token or user ID; a lost LISTEN connection clears every entry, since
// changes may have been missed meanwhile.
const (
	kindAuthToken notify.Kind = "auth-token"
	kindAuthUser  notify.Kind = "auth-user"
)

// publishAuthChange is mgmt's Config.PublishAuthChange: nil without a notifier.
func publishAuthChange(n *notify.Notifier) mgmt.Invalidator {
	if n == nil {
		return nil
	}
	return func(kind, id string) {
		switch kind {
		case mgmt.AuthChangeToken:
			n.Publish(notify.Event{Kind: kindAuthToken, Tenant: tenant.ID(id)})
		case mgmt.AuthChangeUser:
			n.Publish(notify.Event{Kind: kindAuthUser, Tenant: tenant.ID(id)})
		default:
			n.Publish(notify.Event{Kind: kindAuthToken, Tenant: notify.AllTenants})
		}
	}
}

// handleAuthChanges clears this replica's cached token checks on the other replicas' word.
func handleAuthChanges(n *notify.Notifier, api *mgmt.API) error {
	if n == nil {
		return nil
	}
	for k, kind := range map[notify.Kind]string{kindAuthToken: mgmt.AuthChangeToken, kindAuthUser: mgmt.AuthChangeUser} {
		if err := n.Handle(k, func(e notify.Event) {
			if e.Tenant == notify.AllTenants {
				api.InvalidateAuth(mgmt.AuthChangeAll, "")
				return
			}
			api.InvalidateAuth(kind, string(e.Tenant))
		}); err != nil {
			return err
		}
	}
	return nil
}
