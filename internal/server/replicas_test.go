package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// Replicas share the work (issue 12, item 5): real `moat server` processes on loopback
// against one PostgreSQL database and one S3 server. The helpers below start, stop and
// kill a replica by pid, so that later tests (a replica killed in the middle of a staged
// rollout, the other finishing it) build on them.

// moatBin is ./cmd/moat, built once per test binary (without the race detector: the
// replicas are the system under test, not this process).
var moatBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain removes the built binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if moatBin.dir != "" {
		os.RemoveAll(moatBin.dir)
	}
	os.Exit(code)
}

// MoatBinary returns the path of a moat binary built from this tree.
func MoatBinary(t *testing.T) string {
	t.Helper()
	moatBin.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			moatBin.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		if moatBin.dir, moatBin.err = os.MkdirTemp("", "moat-replica-bin-"); moatBin.err != nil {
			return
		}
		moatBin.path = filepath.Join(moatBin.dir, "moat")
		cmd := exec.Command("go", "build", "-o", moatBin.path, "./cmd/moat")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if b, err := cmd.CombinedOutput(); err != nil {
			moatBin.err = fmt.Errorf("go build ./cmd/moat: %w\n%s", err, b)
		}
	})
	if moatBin.err != nil {
		t.Fatal(moatBin.err)
	}
	return moatBin.path
}

// ReplicaConfig is how one replica is started.
type ReplicaConfig struct {
	Name     string // in failure messages
	Database string // postgres:// URL shared by the replicas
	S3       *testenv.S3Server
	// S3Credentials is the credentials file (mode 0600) for S3.
	S3Credentials string
	// DataDir is the replica's own; replicas after the first get the first one's tls/ and
	// keys/ (CopySecrets), as operators give replicas the same --online-key and --ca-kek.
	DataDir string
	// First: this replica bootstraps the database and prints the operator token.
	First bool
	Args  []string // further flags
}

// Replica is a running `moat server` process.
type Replica struct {
	Name      string
	Cmd       *exec.Cmd
	URL       string // management listener
	DeviceURL string
	Token     string // the bootstrap token (First only)
	DataDir   string
	Logs      *testenv.SyncBuffer // stderr: the server's log
	exited    chan struct{}
}

// S3CredentialsFile writes the server's credentials file for s3 into dir.
func S3CredentialsFile(t *testing.T, s3 *testenv.S3Server, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "s3-credentials")
	if err := os.WriteFile(p, []byte(s3.AccessKey+"\n"+s3.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// CopySecrets gives a replica's data directory the first replica's TLS CA and
// certificate and its keys (online key, CA key-encryption key).
func CopySecrets(t *testing.T, from, to string) {
	t.Helper()
	for _, sub := range []string{"tls", "keys"} {
		entries, err := os.ReadDir(filepath.Join(from, sub))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(to, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			// Modes kept: the server refuses key files others may read.
			b, err := os.ReadFile(filepath.Join(from, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(to, sub, e.Name()), b, info.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// StartReplica starts a replica and returns once it answers /readyz. It is stopped
// (SIGTERM, then SIGKILL after 30 s) when the test ends, unless killed before.
func StartReplica(t *testing.T, bin string, rc ReplicaConfig) *Replica {
	t.Helper()
	args := []string{"server", "--addr", "127.0.0.1:0", "--device-addr", "127.0.0.1:0", "--data", rc.DataDir,
		"--log-format", "json", "--shutdown-timeout", "5s"}
	if rc.S3 != nil {
		args = append(args, "--s3-endpoint", rc.S3.Endpoint, "--s3-bucket", rc.S3.Bucket, "--s3-credentials-file", rc.S3Credentials)
	}
	args = append(args, rc.Args...)
	r := &Replica{Name: rc.Name, DataDir: rc.DataDir, Logs: &testenv.SyncBuffer{}, exited: make(chan struct{})}
	r.Cmd = exec.Command(bin, args...)
	// The database URL by environment, as operators are told to (it may hold a password).
	r.Cmd.Env = append(os.Environ(), "MOAT_DATABASE="+rc.Database)
	r.Cmd.Stderr = r.Logs
	stdout, err := r.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Cmd.Start(); err != nil {
		t.Fatalf("start replica %s: %v", rc.Name, err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() {
		r.Cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() { r.Stop(t) })

	deadline := time.NewTimer(2 * time.Minute) // migrations on a loaded machine
	defer deadline.Stop()
	tokenNext := false
	for r.URL == "" || r.DeviceURL == "" || (rc.First && r.Token == "") {
		select {
		case l, ok := <-lines:
			if !ok {
				<-r.exited
				t.Fatalf("replica %s exited before it served: %v\n%s", rc.Name, r.Cmd.ProcessState, r.Logs.String())
			}
			switch {
			case strings.HasPrefix(l, "moat server: "):
				r.URL = strings.TrimPrefix(l, "moat server: ")
			case strings.HasPrefix(l, "Device API (agents' --server): "):
				r.DeviceURL = strings.TrimPrefix(l, "Device API (agents' --server): ")
			case strings.HasPrefix(l, "Platform-operator token"):
				tokenNext = true
			case tokenNext:
				r.Token, tokenNext = strings.TrimSpace(l), false
			}
		case <-deadline.C:
			t.Fatalf("replica %s printed no URLs within 2 minutes\n%s", rc.Name, r.Logs.String())
		}
	}
	go func() { // drain the rest
		for range lines {
		}
	}()
	hc := r.HTTPClient(t)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", r.URL+"/readyz", nil)
		res, err := hc.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case <-r.exited:
			t.Fatalf("replica %s exited: %v\n%s", rc.Name, r.Cmd.ProcessState, r.Logs.String())
		case <-deadline.C:
			t.Fatalf("replica %s not ready within 2 minutes: %v\n%s", rc.Name, err, r.Logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PID is the replica's process ID.
func (r *Replica) PID() int { return r.Cmd.Process.Pid }

// Kill ends the replica at once (SIGKILL to its pid), as a crash or a lost machine does:
// no graceful shutdown, its leases lapse at their period's end.
func (r *Replica) Kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(r.PID(), syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		t.Fatalf("kill replica %s (pid %d): %v", r.Name, r.PID(), err)
	}
	<-r.exited
}

// Stop shuts the replica down gracefully (SIGTERM to its pid), killing it after 30 s.
func (r *Replica) Stop(t *testing.T) {
	t.Helper()
	select {
	case <-r.exited:
		return
	default:
	}
	_ = syscall.Kill(r.PID(), syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("replica %s (pid %d) did not stop within 30 s of SIGTERM; killing it", r.Name, r.PID())
		r.Kill(t)
	}
}

// CAPEM is the CA certificate the replica's TLS certificate chains to.
func (r *Replica) CAPEM(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.DataDir, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HTTPClient trusts the replica's CA only.
func (r *Replica) HTTPClient(t *testing.T) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(r.CAPEM(t)) {
		t.Fatal("replica CA holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// Metric reads one unlabelled sample from the replica's /metrics, or -1.
func (r *Replica) Metric(t *testing.T, name string) float64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", r.URL+"/metrics", nil)
	res, err := r.HTTPClient(t).Do(req)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", r.Name, err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		var v float64
		if strings.HasPrefix(sc.Text(), name+" ") {
			if _, err := fmt.Sscan(strings.TrimPrefix(sc.Text(), name+" "), &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// replicaPair is two replicas of one deployment, with a platform (operator, tenant,
// product DW100, signing keys) made through the first.
type replicaPair struct {
	A, B *Replica
	P    *testenv.Platform
	S3   *testenv.S3Server
	DSN  string
}

// StartReplicaPair starts two replicas on one fresh PostgreSQL database and one S3
// server, and a platform on them; args are further flags for both.
func StartReplicaPair(t *testing.T, args ...string) *replicaPair {
	t.Helper()
	bin := MoatBinary(t)
	rp := &replicaPair{DSN: testenv.FreshPostgresDatabase(t), S3: testenv.StartS3(t)}
	creds := S3CredentialsFile(t, rp.S3, t.TempDir())
	dirA, dirB := t.TempDir(), t.TempDir()
	rp.A = StartReplica(t, bin, ReplicaConfig{Name: "A", Database: rp.DSN, S3: rp.S3, S3Credentials: creds, DataDir: dirA, First: true, Args: args})
	CopySecrets(t, dirA, dirB)
	rp.B = StartReplica(t, bin, ReplicaConfig{Name: "B", Database: rp.DSN, S3: rp.S3, S3Credentials: creds, DataDir: dirB, Args: args})
	rp.P = testenv.NewPlatformOn(t, testenv.ExternalServer(rp.A.URL, rp.A.DeviceURL, rp.A.CAPEM(t), rp.A.Token))
	return rp
}

// DeviceClientOn is the device API client of a device presenting cert to replica r.
func (rp *replicaPair) DeviceClientOn(t *testing.T, r *Replica, cert tls.Certificate) *client.Client {
	t.Helper()
	// The replicas share one TLS CA (CopySecrets), so the platform's device HTTP client
	// (pinned to A's) reaches B as well.
	c, err := client.New(r.DeviceURL, client.WithHTTPClient(rp.P.DeviceHTTPClient(cert)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wakeBound bounds how long a device waiting on one replica may take to learn of a
// deployment made through the other: well under the 15 s re-check, so only a
// cross-replica wake-up answers in time. The figure measured is logged.
const wakeBound = 5 * time.Second

// TestReplicas_ShareTheWork: with two replicas,
//   - a device long-polling replica B is woken by a deployment created through replica A
//     (PostgreSQL LISTEN/NOTIFY), not at its next re-check;
//   - an image uploaded through A downloads from B (the blob lives in S3, not in A's data
//     directory);
//   - each background job is held by one replica's lease;
//   - with A killed, B still serves the device.
func TestReplicas_ShareTheWork(t *testing.T) {
	t.Parallel()
	rp := StartReplicaPair(t)
	p, ctx := rp.P, t.Context()
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app1 := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	groups, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(groups.Items) != 1 {
		t.Fatalf("group Production: %v", err)
	}
	group := groups.Items[0]
	if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, group.ID, client.DeploymentCreate{Target: app1.Path}); err != nil {
		t.Fatal(err)
	}
	d := p.NewDevice(true, "DW100/Production")
	cert, err := p.Attest(d, osImg.Measurement(), app1.Measurement())
	if err != nil {
		t.Fatalf("attest through A: %v", err)
	}
	onB := rp.DeviceClientOn(t, rp.B, cert)

	// An image uploaded through A (to S3), published before the device waits.
	app2 := p.PublishApp("dw100-app", "1.1.0", 2, "DW100")
	first, err := onB.WaitForUpdates(ctx, client.UpdatesWait{})
	if err != nil {
		t.Fatalf("wait on B: %v", err)
	}

	// The device waits on B ...
	type answer struct {
		u   client.Updates
		err error
		at  time.Time
	}
	done := make(chan answer, 1)
	go func() {
		u, err := onB.WaitForUpdates(ctx, client.UpdatesWait{Since: first.Generation})
		done <- answer{u, err, time.Now()}
	}()
	deadline := time.Now().Add(time.Minute)
	for rp.B.Metric(t, "moat_device_update_waiters") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the device never waited on B")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not timing an assertion
	}
	// ... and a deployment is made through A.
	if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, group.ID, client.DeploymentCreate{Target: app2.Path}); err != nil {
		t.Fatal(err)
	}
	deployed := time.Now()
	select {
	case a := <-done:
		if a.err != nil || !a.u.Changed || a.u.Generation == first.Generation {
			t.Fatalf("the device waiting on B was answered %+v, %v; want changed", a.u, a.err)
		}
		t.Logf("device on B woken %s after the deployment through A", a.at.Sub(deployed))
	case <-time.After(wakeBound):
		t.Fatalf("the device waiting on B was not woken within %s of a deployment through A (no cross-replica wake-up)", wakeBound)
	}
	if got := rp.B.Metric(t, "moat_notify_published_total"); got != 0 {
		// B published nothing: the wake-up came from A.
		t.Errorf("B published %v events, want 0", got)
	}

	// The image uploaded through A downloads from B, byte for byte; A kept no blob on disk.
	var sink bytes.Buffer
	if _, err := onB.GetDeviceTarget(ctx, "apps/dw100-app/"+app2.SHA256+".1.1.0", &sink); err != nil {
		t.Fatalf("download app 1.1.0 from B: %v", err)
	}
	if sum := sha256.Sum256(sink.Bytes()); hex.EncodeToString(sum[:]) != app2.SHA256 || int64(sink.Len()) != app2.Length {
		t.Errorf("downloaded %d bytes hashing to %x, want %d bytes, %s", sink.Len(), sum, app2.Length, app2.SHA256)
	}
	for _, dir := range []string{rp.A.DataDir, rp.B.DataDir} {
		if entries, err := os.ReadDir(filepath.Join(dir, "blobs")); err == nil && len(entries) > 0 {
			t.Errorf("%s/blobs holds %d entries, want none (blobs in S3)", dir, len(entries))
		}
	}

	// Every background job is leased to one replica.
	leases := readLeases(t, rp.DSN)
	for _, job := range []string{"tuf-timestamps", "attestation-nonces", "blob-gc", "console-sessions"} {
		if leases[job] == "" {
			t.Errorf("job %s holds no lease (leases: %v)", job, leases)
		}
	}

	// A crashes; B serves the device on its own.
	rp.A.Kill(t)
	if _, err := onB.WaitForUpdates(ctx, client.UpdatesWait{}); err != nil {
		t.Errorf("wait on B after A was killed: %v", err)
	}
	sink.Reset()
	if _, err := onB.GetDeviceTarget(ctx, "apps/dw100-app/"+app1.SHA256+".1.0.0", &sink); err != nil || int64(sink.Len()) != app1.Length {
		t.Errorf("download app 1.0.0 from B after A was killed: %v, %d bytes", err, sink.Len())
	}
}

// readLeases returns the holder of each background job's lease.
func readLeases(t *testing.T, dsn string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT name, holder FROM leases`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var name, holder string
		if err := rows.Scan(&name, &holder); err != nil {
			t.Fatal(err)
		}
		out[name] = holder
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var _ io.Writer = (*testenv.SyncBuffer)(nil)
