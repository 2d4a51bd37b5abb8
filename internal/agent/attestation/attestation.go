// Package attestation is the device side of attestation-gated identity (DESIGN rule 1): it
// proves to the security service, with the device's identity key and a fresh nonce, what
// the device booted, and keeps the short-lived X.509 client certificate the service issues
// in return, renewing it before it expires. Everything the device says to the device API
// goes over mutual TLS with that certificate ([Client.TLSConfig], [Client.HTTPClient],
// [Client.API]).
//
// # Attestation
//
// One attestation is: ask for a single-use nonce (POST /api/v1/device/attestation/nonces,
// no client certificate), call Config.Measure for the measurements of the booted OS and
// application images and whether the device runs in development mode, sign evidence
// (internal/attest: device ID, nonce, the device clock, development mode, measurements)
// with Config.Identity, and post it (POST /api/v1/device/attestations). The response is
// the PEM chain: the device certificate, then the tenant CA's. The chain is accepted only
// if it holds 1 to 8 CERTIFICATE blocks and nothing else, the leaf certifies this device's
// identity key, the leaf is signed by the next certificate when there is one, and it has
// not expired by the device clock. It is then written to StateDir/certificate.pem (mode
// 0600, atomically: temporary file, fsync, rename, fsync of the directory) for other parts
// of the device runtime, and becomes the current certificate, held in memory. The file is
// output only: the package never reads it back. One attestation may take at most 1 min.
//
// # When the device attests
//
//   - The first [Client.Certificate] (or [Client.Run], or TLS handshake) after [New] always
//     attests. A new process is a reboot, and the measurements may have changed, so a
//     certificate from before it is never reused, even if the file holds one that is valid.
//   - A certificate's renewal time is two thirds of its lifetime plus a random jitter of up
//     to 1/50 of the lifetime (so devices that attested together do not renew together),
//     always before it expires. The lifetime runs from the later of the certificate's
//     NotBefore and the moment the device received it, to its NotAfter. Before its renewal
//     time the current certificate is returned as is; from then on a call to Certificate
//     attests.
//   - [Client.Run] sleeps on a timer until the renewal time and then attests: an idle device
//     uses no CPU between renewals. It attests at once if there is no certificate yet.
//   - After a failed attestation the next one waits for a capped exponential backoff: 1 s
//     after the first failure, doubling up to 5 min, each delay drawn from its upper half at
//     random; a success resets it. Until the retry time, Certificate makes no attempt: it
//     returns the current certificate while that is still valid, or else the error of the
//     failed attempt. Run attests again at the retry time, and keeps retrying as long as it
//     runs.
//   - Concurrent callers share one attestation: whoever finds the certificate due starts
//     it, the others wait for its outcome (TestCertificate_ConcurrentCallersShareOneAttestation).
//     Measure is therefore never called concurrently. If the caller that started it gives
//     up (its context is done), a waiting caller whose context is still live starts anew.
//
// # Refusals and other failures
//
// A refusal by the service (403 attestation_refused; the service never says why, only
// support staff see the reason) is an error wrapping [ErrRefused] and the *client.Error.
// The device then keeps nothing: the current certificate is dropped, even when it has not
// expired, and StateDir/certificate.pem is removed (TestCertificate_RefusedKeepsNothing).
// Network failures, other server errors, a failing Measure and a malformed response do not
// wrap ErrRefused; they keep a certificate that is still valid. Failing to write the file
// does not lose a certificate the service issued: it is used from memory, the stale file is
// removed, and the failure is logged at Error level.
//
// # What it trusts and enforces
//
// It trusts Config.ServerCAs for the server's TLS certificate (nothing else: not the
// system roots), the identity key behind Config.Identity, Config.Measure to report what
// actually booted (the verified-boot chain's job), and the device clock. It does not verify
// the chain up to the platform root: the service is the party that must trust the
// certificate. It enforces that the key never leaves its [identity.Signer] (TLS signs
// through [identity.CryptoSigner]), that only a certificate for this device's key is ever
// presented, and that no certificate outlives a refusal. Every TLS handshake of a client
// built on [Client.TLSConfig] asks [Client.Certificate] (waiting at most 30 s), so a new
// connection always presents a current certificate. [Client.HTTPClient] also calls
// Certificate before each request and closes its idle connections after every renewal or
// refusal, so a connection pooled before does not keep presenting the old certificate
// (TestCertificate_RenewsAfterTwoThirdsOfLifetime). A connection busy with a request
// during a renewal returns to the pool with the old certificate, which then still has a
// third of its lifetime left.
//
// Logs (Config.Logger): Info when the device attested (device ID, certificate serial,
// expiry, renewal time), Warn on a refusal or a failed attempt (with the retry delay),
// Error when the state directory cannot be written. Nonces, evidence and certificates are
// never logged.
//
// Concurrency: a Client is safe for concurrent use. Run at most one [Client.Run] per
// Client, and at most one Client per StateDir.
package attestation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
)

// CertificateFile is the file in Config.StateDir that holds the current certificate chain.
const CertificateFile = "certificate.pem"

// Limits.
const (
	// attemptTimeout bounds one attestation: two requests, Measure and a signature.
	attemptTimeout = time.Minute
	// handshakeTimeout bounds the attestation a TLS handshake may wait for.
	handshakeTimeout = 30 * time.Second
	// maxChainCerts bounds the issued chain.
	maxChainCerts = 8
	// refusedCode is the problem code of a refused attestation.
	refusedCode = "attestation_refused"
)

// ErrRefused is wrapped by the error of an attestation the security service refused (HTTP
// 403, code attestation_refused). The device holds no certificate afterwards. The runtime
// branches on it to queue an error report; the reason is not told to the device.
var ErrRefused = errors.New("attestation refused")

// Config is what the device runtime gives the attestation client. Every field but Logger
// is required.
type Config struct {
	// ServerURL is the security service, https://HOST[:PORT].
	ServerURL string
	// ServerCAs is the only trust for the server's TLS certificate. To trust the system
	// roots, pass x509.SystemCertPool() explicitly.
	ServerCAs *x509.CertPool
	// Identity is the device identity key (ECDSA P-256) registered with the service.
	Identity identity.Signer
	// StateDir holds certificate.pem. It is created (mode 0700) if missing, and must not be
	// writable by group or others.
	StateDir string
	// Measure returns the measurements of the images the device booted and whether it runs
	// in development mode. It is called once per attestation, never concurrently.
	Measure func(ctx context.Context) ([]attest.Measurement, bool, error)
	// Now is the device's clock.
	Now func() time.Time
	// Logger receives state changes (attested, refused, retrying); nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.ServerURL); c.ServerURL == "" {
		errs = append(errs, errors.New("server_url: required"))
	} else if err != nil {
		errs = append(errs, fmt.Errorf("server_url: %w", err))
	} else if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("server_url: %q is not https://HOST[:PORT][/PATH]", c.ServerURL))
	}
	if c.ServerCAs == nil {
		errs = append(errs, errors.New("server_cas: required"))
	}
	if c.Identity == nil {
		errs = append(errs, errors.New("identity: required"))
	} else if identity.IDFromPublicKey(c.Identity.Public()) == "" {
		errs = append(errs, errors.New("identity: not an ECDSA P-256 key"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir: required"))
	}
	if c.Measure == nil {
		errs = append(errs, errors.New("measure: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	return errors.Join(errs...)
}

// Client attests one device and keeps its certificate.
type Client struct {
	cfg  Config
	id   string
	log  *slog.Logger
	anon *client.Client  // attestation: no client certificate
	atr  *http.Transport // anon's transport
	tls  *tls.Config     // the device's mutual TLS, cloned by TLSConfig
	mtr  *http.Transport // the transport of hc
	hc   *http.Client
	api  *client.Client

	mu       sync.Mutex
	cur      *current      // nil: none (new process, or refused)
	flight   *flight       // the attestation under way, if any
	failures int           // consecutive failed attestations
	retryAt  time.Time     // no attempt before this after a failure
	lastErr  error         // the last failure, while failures > 0
	changed  chan struct{} // closed and replaced after each recorded attempt
}

// current is the certificate in use.
type current struct {
	cert     tls.Certificate
	notAfter time.Time
	renewAt  time.Time
}

// flight is one attestation that concurrent callers share.
type flight struct {
	done      chan struct{}
	cert      tls.Certificate
	err       error
	abandoned bool // the caller that ran it gave up: nothing was recorded
}

// New validates cfg, creates cfg.StateDir if missing and returns a Client that holds no
// certificate yet: the first Certificate attests.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("attestation client config: %w", err)
	}
	if err := prepareStateDir(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("attestation client state: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, id: string(identity.IDFromPublicKey(cfg.Identity.Public())), log: log, changed: make(chan struct{})}
	base := &tls.Config{RootCAs: cfg.ServerCAs, MinVersion: tls.VersionTLS12, Time: cfg.Now}
	c.atr = newTransport(base.Clone())
	c.tls = base.Clone()
	c.tls.GetClientCertificate = c.getClientCertificate
	c.mtr = newTransport(c.tls.Clone())
	c.hc = &http.Client{Transport: &freshTransport{c: c, next: c.mtr}, CheckRedirect: noRedirect}
	var err error
	if c.anon, err = client.New(cfg.ServerURL, client.WithHTTPClient(&http.Client{Transport: c.atr, CheckRedirect: noRedirect})); err != nil {
		return nil, fmt.Errorf("attestation client: %w", err)
	}
	if c.api, err = client.New(cfg.ServerURL, client.WithHTTPClient(c.hc)); err != nil {
		return nil, fmt.Errorf("attestation client: %w", err)
	}
	return c, nil
}

// prepareStateDir creates dir (0700) if missing and refuses one that group or others may
// write, where another user could swap the chain other parts of the runtime read.
func prepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s: mode %04o is writable by group or others", dir, perm)
	}
	return nil
}

// Certificate returns a certificate to present to the device API: the current one if it
// is before its renewal time; otherwise the outcome of an attestation (shared with
// concurrent callers). When an attestation fails for a reason other than a refusal, a
// current certificate that has not expired is returned instead of the error; after a
// failure no new attempt is made before the retry time (see the package doc). A refusal
// wraps ErrRefused. Certificate returns ctx's error if ctx is done first; the attestation
// it waited for then still completes for the others.
func (c *Client) Certificate(ctx context.Context) (tls.Certificate, error) {
	for {
		c.mu.Lock()
		now := c.cfg.Now()
		if c.cur != nil && now.Before(c.cur.renewAt) {
			cert := c.cur.cert
			c.mu.Unlock()
			return cert, nil
		}
		if c.failures > 0 && now.Before(c.retryAt) {
			// Backing off: serve what is still good, or the last failure.
			cur, err := c.cur, c.lastErr
			c.mu.Unlock()
			if cur != nil && now.Before(cur.notAfter) {
				return cur.cert, nil
			}
			return tls.Certificate{}, err
		}
		f, lead := c.flight, false
		if f == nil {
			f, lead = &flight{done: make(chan struct{})}, true
			c.flight = f
		}
		c.mu.Unlock()

		if lead {
			c.run(ctx, f)
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return tls.Certificate{}, ctx.Err()
		}
		if f.abandoned {
			if err := ctx.Err(); err != nil {
				return tls.Certificate{}, err
			}
			continue // the caller that ran it gave up; this one has not
		}
		if f.err == nil {
			return f.cert, nil
		}
		if !errors.Is(f.err, ErrRefused) {
			c.mu.Lock()
			cur := c.cur
			c.mu.Unlock()
			if cur != nil && c.cfg.Now().Before(cur.notAfter) {
				return cur.cert, nil
			}
		}
		return tls.Certificate{}, f.err
	}
}

// run performs the attestation of f and records its outcome.
func (c *Client) run(ctx context.Context, f *flight) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	cur, pemChain, err := c.attest(actx)
	cancel()
	// The next attestation is hours away: keep no idle connection for it.
	c.atr.CloseIdleConnections()
	refused := errors.Is(err, ErrRefused)
	switch {
	case err == nil:
		if werr := atomicfile.Write(c.cfg.StateDir, CertificateFile, pemChain); werr != nil {
			// The service issued it: use it from memory rather than go without.
			c.log.ErrorContext(ctx, "certificate not saved; using it from memory", "device_id", c.id, "err", werr)
			if rerr := removeFile(c.cfg.StateDir, CertificateFile); rerr != nil {
				c.log.ErrorContext(ctx, "stale certificate file not removed", "device_id", c.id, "err", rerr)
			}
		}
	case refused:
		if rerr := removeFile(c.cfg.StateDir, CertificateFile); rerr != nil {
			c.log.ErrorContext(ctx, "certificate file of a refused device not removed", "device_id", c.id, "err", rerr)
		}
	}

	c.mu.Lock()
	now := c.cfg.Now()
	switch {
	case err == nil:
		c.cur, c.failures, c.retryAt, c.lastErr = cur, 0, time.Time{}, nil
		f.cert = cur.cert
	case !refused && ctx.Err() != nil:
		f.abandoned = true // the caller went away: not the server's failure
	default:
		if refused {
			c.cur = nil
		}
		c.failures++
		c.retryAt, c.lastErr = now.Add(backoff(c.failures)), err
	}
	f.err = err
	failures, retryIn := c.failures, c.retryAt.Sub(now)
	c.flight = nil
	close(f.done)
	if !f.abandoned {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	c.mu.Unlock()

	switch {
	case err == nil:
		// New connections present the new certificate.
		c.mtr.CloseIdleConnections()
		c.log.InfoContext(ctx, "device attested", "device_id", c.id, "serial", fmt.Sprintf("%x", cur.cert.Leaf.SerialNumber),
			"not_after", cur.notAfter, "renew_at", cur.renewAt)
	case f.abandoned:
		c.log.DebugContext(ctx, "attestation abandoned by its caller", "device_id", c.id, "err", err)
	case refused:
		c.mtr.CloseIdleConnections()
		c.log.WarnContext(ctx, "attestation refused; certificate dropped", "device_id", c.id, "failures", failures, "retry_in", retryIn)
	default:
		c.log.WarnContext(ctx, "attestation failed", "device_id", c.id, "failures", failures, "retry_in", retryIn, "err", err)
	}
}

// attest gets a nonce, measures, signs and posts evidence, and checks the issued chain.
func (c *Client) attest(ctx context.Context) (*current, []byte, error) {
	n, err := c.anon.CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: c.id})
	if err != nil {
		return nil, nil, fmt.Errorf("attest device %.16s: get nonce: %w", c.id, err)
	}
	ms, dev, err := c.cfg.Measure(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("attest device %.16s: measure: %w", c.id, err)
	}
	ev, err := attest.Sign(c.cfg.Identity, attest.Evidence{DeviceID: c.id, Nonce: n.Nonce, Time: c.cfg.Now(), DevelopmentMode: dev, Measurements: ms})
	if err != nil {
		return nil, nil, fmt.Errorf("attest device %.16s: %w", c.id, err)
	}
	is, err := c.anon.Attest(ctx, ev)
	if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == http.StatusForbidden && ce.Code == refusedCode {
		return nil, nil, fmt.Errorf("attest device %.16s: %w: %w", c.id, ErrRefused, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("attest device %.16s: %w", c.id, err)
	}
	cur, pemChain, err := c.accept([]byte(is.ChainPEM), c.cfg.Now())
	if err != nil {
		return nil, nil, fmt.Errorf("attest device %.16s: issued certificate: %w", c.id, err)
	}
	return cur, pemChain, nil
}

// accept checks an issued chain and returns it as the current certificate and as the PEM
// to store (re-encoded: certificates only).
func (c *Client) accept(chainPEM []byte, now time.Time) (*current, []byte, error) {
	var ders [][]byte
	rest := chainPEM
	for rest = bytes.TrimSpace(rest); len(rest) > 0; rest = bytes.TrimSpace(rest) {
		var b *pem.Block
		if bytes.HasPrefix(rest, []byte("-----BEGIN ")) { // pem.Decode would skip other text
			b, rest = pem.Decode(rest)
		}
		switch {
		case b == nil:
			return nil, nil, errors.New("not a sequence of PEM blocks")
		case b.Type != "CERTIFICATE":
			return nil, nil, fmt.Errorf("a %q PEM block", b.Type)
		case len(ders) == maxChainCerts:
			return nil, nil, fmt.Errorf("more than %d certificates", maxChainCerts)
		}
		ders = append(ders, b.Bytes)
	}
	if len(ders) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, nil, err
	}
	if !c.cfg.Identity.Public().Equal(leaf.PublicKey) {
		return nil, nil, errors.New("not for this device's identity key")
	}
	if len(ders) > 1 {
		issuer, err := x509.ParseCertificate(ders[1])
		if err != nil {
			return nil, nil, err
		}
		if err := leaf.CheckSignatureFrom(issuer); err != nil {
			return nil, nil, fmt.Errorf("not signed by the next certificate of the chain: %w", err)
		}
	}
	if !now.Before(leaf.NotAfter) {
		return nil, nil, fmt.Errorf("expired at %s by the device clock (%s)", leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	var out bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: d}) // writes to a bytes.Buffer do not fail
	}
	start := leaf.NotBefore
	if now.After(start) {
		start = now
	}
	return &current{
		cert:     tls.Certificate{Certificate: ders, PrivateKey: identity.CryptoSigner(c.cfg.Identity), Leaf: leaf},
		notAfter: leaf.NotAfter,
		renewAt:  renewAt(start, leaf.NotAfter),
	}, out.Bytes(), nil
}

// removeFile removes dir/name durably; a missing file is not an error.
func removeFile(dir, name string) error {
	err := os.Remove(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = atomicfile.SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}
