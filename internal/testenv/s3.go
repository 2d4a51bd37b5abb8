package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 server for tests: versitygw's POSIX gateway (github.com/versity/versitygw), a real
// S3 implementation, built from the version pinned in tools/go.mod and run as a separate
// process per test on loopback, its objects in the test's temporary directory.
//
// The binary: $MOAT_TEST_VERSITYGW when set (scripts/test.sh builds it once per run and
// sets it); otherwise it is built here, once per test process, into the user's cache
// directory under a name derived from tools/go.sum, so later runs reuse it. Without Go or
// the module proxy the S3 tests skip, or fail when CI=true.

// VersityGWEnv names the variable holding a built versitygw binary.
const VersityGWEnv = "MOAT_TEST_VERSITYGW"

// S3Server is a running S3 server with one empty bucket.
type S3Server struct {
	// Endpoint is the server's base URL (http://127.0.0.1:PORT).
	Endpoint  string
	Bucket    string
	AccessKey string
	SecretKey string
}

var versityGW struct {
	once sync.Once
	path string
	err  error
}

// VersityGWBinary returns the path of a versitygw binary, building it when needed. When
// it cannot, it skips the test, or fails it when CI=true.
func VersityGWBinary(t testing.TB) string {
	t.Helper()
	versityGW.once.Do(func() { versityGW.path, versityGW.err = buildVersityGW() })
	if versityGW.err != nil {
		msg := "S3 test server (versitygw) unavailable: " + versityGW.err.Error() +
			"; run `make test`, or set " + VersityGWEnv + " to a versitygw binary"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: S3 tests must run in CI)")
		}
		t.Skip(msg)
	}
	return versityGW.path
}

func buildVersityGW() (string, error) {
	if p := os.Getenv(VersityGWEnv); p != "" {
		if _, err := os.Stat(p); err != nil { //nolint:gosec // G703: the developer's own setting
			return "", fmt.Errorf("%s: %w", VersityGWEnv, err)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	sum, err := os.ReadFile(filepath.Join(root, "tools", "go.sum"))
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(sum)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "moat-test")
	bin := filepath.Join(dir, "versitygw-"+hex.EncodeToString(h[:6]))
	if _, err := os.Stat(bin); err == nil { //nolint:gosec // G703: a path in the user's cache directory
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	// Built to a temporary name and renamed, so a concurrent build elsewhere never sees a
	// half-written binary.
	tmp := bin + ".tmp-" + rand.Text()[:8]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-modfile=tools/go.mod", "-o", tmp, "github.com/versity/versitygw/cmd/versitygw") //nolint:gosec // G204: a fixed command; tmp is in the user's cache directory
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp) //nolint:gosec // G703: our own temporary file
		return "", fmt.Errorf("go build versitygw: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil { //nolint:gosec // G703: both in the user's cache directory
		return "", err
	}
	return bin, nil
}

// moduleRoot is the directory of moat's go.mod.
func moduleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside moat's module")
	}
	return filepath.Dir(gomod), nil
}

// StartS3 starts an S3 server for the test, with one empty bucket, and stops it when the
// test ends. Tests that share one server (two moat replicas) pass it around.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin := VersityGWBinary(t)
	s := &S3Server{Bucket: "moat-test", AccessKey: "moattest" + rand.Text()[:8], SecretKey: rand.Text()}
	root := t.TempDir()
	var lastErr error
	for range 3 { // a port picked free may be taken before the gateway binds it
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + port
		if lastErr = s.start(t, bin, addr, root); lastErr == nil {
			s.Endpoint = "http://" + addr
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start versitygw: %v", lastErr)
	}
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(t.Context(), s.Bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("create bucket %s: %v", s.Bucket, err)
	}
	return s
}

// start runs the gateway on addr and waits until it answers.
func (s *S3Server) start(t testing.TB, bin, addr, root string) error {
	out := &syncWriter{}
	// The keys by environment, not arguments, which any local user can list.
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", root) //nolint:gosec,noctx // G204: the test's own build of versitygw; it lives until the test's cleanup, not a context
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill() // it may have exited already; Wait below reports nothing we need
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/") //nolint:noctx // a probe with its own deadline below
		if err == nil {
			res.Body.Close()
			t.Cleanup(stop)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited: %w\n%s", waitErr, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("versitygw did not answer on %s within 30s\n%s", addr, out.String())
		}
	}
}

func freePort() (string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
