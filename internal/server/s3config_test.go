package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

func s3Config(t *testing.T) server.Config {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	return cfg
}

// Fail closed: a half-given S3 configuration is an error naming each problem, never a
// silent fall-back to blobs on the local disk.
func TestConfig_RefusesIncompleteS3(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		set  func(*server.Config)
		want []string
	}{
		"bucket without endpoint": {func(c *server.Config) { c.S3Bucket = "moat" }, []string{"s3-endpoint: required"}},
		"endpoint alone": {func(c *server.Config) { c.S3Endpoint = "https://s3.example.com" },
			[]string{"bucket", "s3-credentials-file: required"}},
		"plain http to a remote host": {func(c *server.Config) {
			c.S3Endpoint, c.S3Bucket, c.S3CredentialsFile = "http://s3.example.com", "moat", "/etc/moat/s3"
		}, []string{"loopback"}},
		"prefix escaping": {func(c *server.Config) {
			c.S3Endpoint, c.S3Bucket, c.S3CredentialsFile, c.S3Prefix = "https://s3.example.com", "moat", "/etc/moat/s3", "../x/"
		}, []string{"prefix"}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s3Config(t)
			tc.set(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("Validate(%s) = nil, want an error", name)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate(%s) = %v, want it to mention %q", name, err, w)
				}
			}
		})
	}
	cfg := s3Config(t)
	cfg.S3Endpoint, cfg.S3Bucket, cfg.S3CredentialsFile = "https://s3.example.com", "moat-blobs", "/etc/moat/s3"
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate(complete S3 settings) = %v, want nil", err)
	}
}

// The S3 secret key lives in a file only its owner may read, as the other key files.
func TestServer_RefusesReadableS3Credentials(t *testing.T) {
	t.Parallel()
	cfg := s3Config(t)
	creds := filepath.Join(t.TempDir(), "s3")
	if err := os.WriteFile(creds, []byte("AKID\nsecret-key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.S3Endpoint, cfg.S3Bucket, cfg.S3CredentialsFile = "http://127.0.0.1:1", "moat", creds
	s, err := server.Open(t.Context(), cfg, quietLog())
	if err == nil {
		s.Close()
		t.Fatal("Open with a credentials file of mode 0644 = nil, want an error")
	}
	if !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), "secret-key") {
		t.Errorf("Open = %v, want the chmod advice and no secret", err)
	}
	// One line is not a credentials file.
	if err := os.WriteFile(creds, []byte("AKID-only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(creds, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := server.Open(t.Context(), cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "two lines") {
		if err == nil {
			s.Close()
		}
		t.Errorf("Open with a one-line credentials file = %v, want an error asking for two lines", err)
	}
}

// With S3 settings the server keeps no blob on its disk, and refuses to start when the
// bucket is unreachable or missing rather than falling back to the disk.
func TestServer_S3BucketMustExist(t *testing.T) {
	t.Parallel()
	s3 := testenv.StartS3(t)
	cfg := s3Config(t)
	cfg.S3Endpoint, cfg.S3Bucket, cfg.S3CredentialsFile = s3.Endpoint, "no-such-bucket", S3CredentialsFile(t, s3, t.TempDir())
	if s, err := server.Open(t.Context(), cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "does not exist") {
		if err == nil {
			s.Close()
		}
		t.Errorf("Open with a missing bucket = %v, want an error", err)
	}
	cfg.S3Bucket = s3.Bucket
	startStop(t, cfg, func(*server.Server) {})
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "blobs")); err == nil {
		t.Errorf("%s/blobs exists with S3 settings, want no local blob store", cfg.DataDir)
	}
}
