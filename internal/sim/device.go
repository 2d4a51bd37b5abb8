package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/updstate"
)

// phase is what a device is doing, for Stats.
type phase int32

const (
	phaseStarting  phase = iota // made, not started
	phaseAttesting              // getting a certificate
	phaseWaiting                // in the update long-poll
	phaseUpdating               // checking, downloading, installing
	phaseBackoff                // waiting to retry after a failure
)

// Per-request bounds: a long-poll answers within 50 s; anything else within a minute.
const (
	waitTimeout    = 70 * time.Second
	requestTimeout = time.Minute
	fetchTimeout   = 10 * time.Minute
	maxQueued      = 64 // update states or error reports waiting to be sent, per device
)

// device is one simulated device. Its fields after the mutex-free ones are owned by its
// run goroutine; Stats reads only the atomics.
type device struct {
	s     *Sim
	index int
	key   *ecdsa.PrivateKey
	id    string
	crash bool         // reports app_crash while it runs Config.CrashVersion
	cloud *cloudDevice // nil without Config.Cloud

	phase    atomic.Int32
	attested atomic.Bool
	cert     atomic.Pointer[certificate]
	app, os  atomic.Pointer[runImage] // the slots: what it runs

	api  *client.Client // mutual TLS
	tr   *http.Transport
	upd  *update.Client
	held map[string]string // per kind: the target whose verified assignment it holds

	stormSeen int64 // the last Expire this device recovered from (or that came before it started)

	states  []client.UpdateState
	reports []client.ErrorReport
	fails   int
	// installed lists the images installed since the last attestation: committed once the
	// device attests with them, rolled back if that attestation is refused.
	installed []installed
}

// installed is an image in its slot on trial, with what the slot held before.
type installed struct {
	im   update.PlannedImage
	prev *runImage
}

// certificate is a device's current certificate.
type certificate struct {
	tls      tls.Certificate
	notAfter time.Time
	renewAt  time.Time
}

func (s *Sim) newDevice(index int, k *ecdsa.PrivateKey) *device {
	d := &device{s: s, index: index, key: k, id: string(identity.IDFromPublicKey(&k.PublicKey)), held: map[string]string{}}
	d.crash = crashes(d.id, s.cfg.CrashPercent)
	d.cloud = s.newCloudDevice(d)
	d.os.Store(s.world.os)
	d.app.Store(s.world.app)
	d.tr = newDeviceTransport(s.cfg.ServerCAs, d.clientCertificate)
	d.api, _ = client.New(s.cfg.DeviceURL, client.WithHTTPClient(newHTTPClient(d.tr)), client.WithUserAgent(userAgent)) // the URL was checked by New
	return d
}

// crashes picks the devices that crash: the first two bytes of the ID, as a fraction, below
// percent. The same devices each run.
func crashes(id string, percent float64) bool {
	if percent <= 0 || len(id) < 4 {
		return false
	}
	var v uint16
	fmt.Sscanf(id[:4], "%04x", &v) //nolint:errcheck // an ID is hex: checked by identity
	return float64(v)/65536*100 < percent
}

func (d *device) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := d.cert.Load()
	if c == nil {
		return &tls.Certificate{}, nil // none: the server refuses the handshake, the device attests
	}
	return &c.tls, nil
}

func (d *device) setPhase(p phase) { d.phase.Store(int32(p)) }

// run is the device's life: hold a certificate, check its assignment when the long-poll
// says it changed, report, wait again. It never gives up; it ends with ctx.
func (d *device) run(ctx context.Context) {
	defer d.tr.CloseIdleConnections()
	d.stormSeen = d.s.storm.seq.Load()
	var since string
	check := false
	for ctx.Err() == nil {
		err := d.step(ctx, &since, &check)
		if err == nil {
			d.fails = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		d.fails++
		d.s.retries.Add(1)
		if unavailable(err) {
			d.s.unavailable.Add(1)
		}
		if ce, ok := errors.AsType[*client.Error](err); ok && (ce.Status == http.StatusUnauthorized || ce.Status == http.StatusForbidden) {
			d.dropCertificate() // revoked, blocked or expired: attest again
		}
		d.s.log.DebugContext(ctx, "simulated device retries", "device_id", d.id[:16], "failures", d.fails, "err", err)
		d.setPhase(phaseBackoff)
		sleep(ctx, backoff(d.fails, err))
	}
}

// step is one turn of the loop.
func (d *device) step(ctx context.Context, since *string, check *bool) error {
	seen := d.s.storm.seq.Load()
	if len(d.installed) > 0 {
		if err := d.settle(ctx); err != nil {
			return err
		}
	} else if c := d.cert.Load(); c == nil || !d.s.now().Before(c.renewAt) {
		if err := d.attest(ctx); err != nil {
			return err
		}
	}
	if *check {
		if err := d.check(ctx); err != nil {
			return err
		}
		*check = false
	}
	if err := d.flush(ctx); err != nil {
		return err
	}
	wctx, cancel, skip := d.waitContext(ctx, seen)
	if skip {
		return nil // expired during this turn: attest first
	}
	d.setPhase(phaseWaiting)
	u, err := d.api.WaitForUpdates(wctx, client.UpdatesWait{Since: *since})
	cancel()
	if err != nil && d.s.storm.seq.Load() != seen && ctx.Err() == nil {
		return nil // ended by Expire: not a failure
	}
	if err != nil {
		return fmt.Errorf("wait for updates: %w", err)
	}
	// The first answer is a change too, as in the agent.
	*since, *check = u.Generation, *check || u.Changed
	return nil
}

func (d *device) dropCertificate() {
	d.cert.Store(nil)
	d.tr.CloseIdleConnections()
	d.certificateChanged()
}

// attest gets a nonce, signs evidence of what the device runs and keeps the certificate
// the service issues (internal/agent/attestation's steps, in memory).
func (d *device) attest(ctx context.Context) error {
	d.setPhase(phaseAttesting)
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	n, err := d.s.anon.CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: d.id})
	if err != nil {
		return fmt.Errorf("attestation nonce: %w", err)
	}
	var ms []attest.Measurement
	for _, im := range []*runImage{d.os.Load(), d.app.Load()} {
		if im != nil {
			ms = append(ms, im.measurement())
		}
	}
	ev, err := attest.Sign(signer{d.key}, attest.Evidence{DeviceID: d.id, Nonce: n.Nonce, Time: d.s.now(), Measurements: ms})
	if err != nil {
		return err
	}
	is, err := d.s.anon.Attest(ctx, ev)
	if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == http.StatusForbidden {
		d.s.refusals.Add(1)
		d.dropCertificate()
		d.queueReport(client.ErrorReport{Kind: string(errreport.AttestationRefused), Code: "refused", Message: "the security service refused the attestation"})
		return fmt.Errorf("attest: %w", err)
	}
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	c, err := d.accept(is.ChainPEM)
	if err != nil {
		return fmt.Errorf("attest: issued certificate: %w", err)
	}
	d.cert.Store(c)
	d.tr.CloseIdleConnections() // new connections present the new certificate
	d.certificateChanged()
	d.attested.Store(true)
	d.s.attestations.Add(1)
	d.recovered()
	return nil
}

// accept checks an issued chain as the agent does: certificates only, the leaf certifies
// this device's key, signed by the next one, not expired.
func (d *device) accept(chainPEM string) (*certificate, error) {
	var ders [][]byte
	rest := []byte(chainPEM)
	for len(ders) < 8 {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %q PEM block", b.Type)
		}
		ders = append(ders, b.Bytes)
	}
	if len(ders) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, err
	}
	if !d.key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("not for this device's identity key")
	}
	if len(ders) > 1 {
		issuer, err := x509.ParseCertificate(ders[1])
		if err != nil {
			return nil, err
		}
		if err := leaf.CheckSignatureFrom(issuer); err != nil {
			return nil, err
		}
	}
	now := d.s.now()
	if !now.Before(leaf.NotAfter) {
		return nil, errors.New("expired")
	}
	start := leaf.NotBefore
	if now.After(start) {
		start = now
	}
	// Renewed at two thirds of its lifetime, as the agent does (without its jitter: the
	// devices were started over the ramp, which spreads them already).
	renew := start.Add(leaf.NotAfter.Sub(start) / 3 * 2)
	// The parsed leaf is not kept: TLS parses it again at the rare handshake, and 10,000
	// of them would cost tens of MiB.
	return &certificate{tls: tls.Certificate{Certificate: ders, PrivateKey: d.key}, notAfter: leaf.NotAfter, renewAt: renew}, nil
}

// check fetches the assignment, verifies it with the update client, downloads and
// verifies each image the device does not run yet, installs it in the in-memory slot and
// attests with the new measurement.
func (d *device) check(ctx context.Context) error {
	d.setPhase(phaseUpdating)
	if d.upd == nil {
		base := d.s.cfg.DeviceURL + "/api/v1/device/tuf/"
		upd, err := update.New(update.Config{
			MetadataURL: base + "metadata/", TargetsURL: base + "targets/", Root: d.s.world.root, DirectorKey: d.s.world.directorKey,
			DeviceID: d.id, TenantID: d.s.world.tenant, Memory: update.NewMemoryState(), Repository: d.s.repo,
			HTTPClient: newHTTPClient(d.tr), Now: d.s.now, FetchOptions: blob.FetchOptions{Timeout: fetchTimeout},
			MaxMetadataBytes: maxMetadataBytes, Product: d.s.world.product.Name,
		})
		if err != nil {
			return err
		}
		d.upd = upd
	}
	// As the agent does: the held assignment is named to the server, and when it is still
	// current (304) the held bytes are checked again instead of fetched.
	held, err := d.upd.Held()
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, requestTimeout)
	raw, changed, err := d.api.GetAssignmentIfChanged(actx, held)
	cancel()
	if err != nil {
		return fmt.Errorf("assignment: %w", err)
	}
	if !changed {
		raw = held
	}
	plan, err := d.upd.Check(ctx, raw)
	if err != nil {
		if !unavailable(err) {
			d.queueReport(client.ErrorReport{Kind: string(errreport.UpdateFailed), Step: string(errreport.StepVerify), Code: "assignment_refused", Message: clip(err.Error())})
		}
		return fmt.Errorf("check assignment: %w", err)
	}
	for _, im := range plan.Images {
		if d.held[im.Kind] != im.Path {
			d.held[im.Kind] = im.Path
			d.s.hold(im.Path, d.s.now())
		}
	}
	for _, im := range plan.Images {
		if cur := d.slot(im.Kind).Load(); cur != nil && cur.sha256 == im.SHA256 {
			continue
		}
		if err := d.install(ctx, im); err != nil {
			return err
		}
	}
	return d.settle(ctx)
}

// settle attests with the images installed since the last attestation: the service learns
// what runs now. Accepted, they are committed; refused, their slots go back (a rollback).
// Any other failure (503, a lost connection) keeps them on trial, and the next turn of the
// loop attests again before anything else, without downloading them again.
func (d *device) settle(ctx context.Context) error {
	if len(d.installed) == 0 {
		return nil
	}
	err := d.attest(ctx)
	if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == http.StatusForbidden {
		for _, in := range d.installed {
			d.slot(in.im.Kind).Store(in.prev)
			d.queueState(updstate.RolledBack, in.im, func(r *client.UpdateState) {
				r.Code, r.Message = "attestation_refused", "the new image was refused at attestation; rolled back"
			})
		}
		d.installed = nil
		return err
	}
	if err != nil {
		return err
	}
	for _, in := range d.installed {
		im := in.im
		if err := d.upd.Commit(im.Kind, im.SecurityVersion); err != nil && !errors.Is(err, update.ErrFloorDecrease) {
			return err
		}
		d.queueState(updstate.Committed, im, nil)
		d.s.installs.Add(1)
		if im.Kind == "app" && d.crash && im.Version == d.s.cfg.CrashVersion {
			d.queueReport(client.ErrorReport{Kind: string(errreport.AppCrash), ImagePath: im.Path, ImageVersion: im.Version,
				Signal: "SIGSEGV", UptimeSeconds: 5, Message: "simulated crash (moat sim --crash-version)"})
		}
	}
	d.installed = nil
	return nil
}

func (d *device) slot(kind string) *atomic.Pointer[runImage] {
	if kind == "os" {
		return &d.os
	}
	return &d.app
}

// install downloads and verifies im and moves its slot to it, on trial until settle; the
// update states follow the agent's: assigned, downloading, installed, then committed.
func (d *device) install(ctx context.Context, im update.PlannedImage) error {
	d.queueState(updstate.Assigned, im, nil)
	d.queueState(updstate.Downloading, im, func(r *client.UpdateState) { r.BytesTotal = im.Length })
	if err := d.upd.DownloadDiscard(ctx, im); err != nil {
		if !unavailable(err) {
			code := "download_failed"
			if errors.Is(err, blob.ErrDigestMismatch) || errors.Is(err, update.ErrManifestMismatch) || errors.Is(err, blob.ErrTooLarge) {
				code = "image_invalid"
			}
			d.queueState(updstate.Failed, im, func(r *client.UpdateState) { r.Code, r.Message = code, clip(err.Error()) })
		}
		return err
	}
	d.queueState(updstate.Downloading, im, func(r *client.UpdateState) { r.BytesDone, r.BytesTotal = im.Length, im.Length })
	prev := d.slot(im.Kind).Swap(&runImage{kind: im.Kind, path: im.Path, sha256: im.SHA256, version: im.Version, securityVersion: im.SecurityVersion})
	d.installed = append(d.installed, installed{im: im, prev: prev})
	d.queueState(updstate.Installed, im, nil)
	return nil
}

// queueState queues an update state; past maxQueued the oldest is dropped.
func (d *device) queueState(st updstate.State, im update.PlannedImage, fill func(*client.UpdateState)) {
	at := d.s.now().UTC().Truncate(time.Microsecond)
	if n := len(d.states); n > 0 && !at.After(d.states[n-1].At) {
		at = d.states[n-1].At.Add(time.Microsecond) // the steps keep their order
	}
	r := client.UpdateState{ID: errreport.NewID(at), At: at, State: string(st), Kind: im.Kind, Target: im.Path, Version: im.Version}
	if fill != nil {
		fill(&r)
	}
	if len(d.states) == maxQueued {
		d.states = d.states[1:]
		d.s.reportsDropped.Add(1)
	}
	d.states = append(d.states, r)
}

// queueReport queues an error report; past maxQueued the oldest is dropped.
func (d *device) queueReport(r client.ErrorReport) {
	r.At = d.s.now().UTC().Truncate(time.Second)
	r.ID = errreport.NewID(r.At)
	if len(d.reports) == maxQueued {
		d.reports = d.reports[1:]
		d.s.reportsDropped.Add(1)
	}
	d.reports = append(d.reports, r)
}

// flush sends the queued update states and error reports over mutual TLS.
func (d *device) flush(ctx context.Context) error {
	if len(d.states) == 0 && len(d.reports) == 0 {
		return nil
	}
	if d.cert.Load() == nil {
		return nil // refused: sent once it holds a certificate again
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if len(d.states) > 0 {
		acc, err := d.api.CreateUpdateStates(ctx, client.UpdateStateBatch{Reports: d.states})
		if err != nil {
			return fmt.Errorf("send update states: %w", err)
		}
		d.s.statesSent.Add(int64(len(acc.Accepted)))
		d.states = d.states[:0]
	}
	if len(d.reports) > 0 {
		acc, err := d.api.CreateErrorReports(ctx, client.ErrorReportBatch{Reports: d.reports})
		if err != nil {
			return fmt.Errorf("send error reports: %w", err)
		}
		d.s.reportsSent.Add(int64(len(acc.Accepted)))
		d.reports = d.reports[:0]
	}
	return nil
}

func clip(s string) string {
	if len(s) > errreport.MaxMessageBytes {
		return strings.ToValidUTF8(s[:errreport.MaxMessageBytes], "")
	}
	return s
}

// signer is an identity key held in memory.
type signer struct{ k *ecdsa.PrivateKey }

func (s signer) Public() *ecdsa.PublicKey { return &s.k.PublicKey }

func (s signer) Sign(digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("identity sign: digest is %d bytes, want %d", len(digest), sha256.Size)
	}
	return ecdsa.SignASN1(rand.Reader, s.k, digest)
}
