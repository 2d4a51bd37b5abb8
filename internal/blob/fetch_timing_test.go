package blob_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
)

// pipeServer answers one request on the server end of a net.Pipe: status line and headers
// at once, then the body one byte at a time, every interval (none: all at once), then it
// stalls until the client hangs up. It returns a client whose only connection is the other
// end. Inside a synctest bubble, time is fake and exact.
func pipeServer(t *testing.T, body []byte, contentLength int, interval time.Duration, stallAfter int) *http.Client {
	srv, cli := net.Pipe()
	dialed := false
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		if dialed {
			return nil, errors.New("only one connection")
		}
		dialed = true
		return cli, nil
	}}
	done := make(chan struct{})
	// Cleanups run inside the bubble: wait for the server, so that the bubble ends with no
	// goroutine left.
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		<-done
	})
	go func() {
		defer close(done)
		defer srv.Close()
		if _, err := http.ReadRequest(bufio.NewReader(srv)); err != nil {
			return
		}
		if _, err := fmt.Fprintf(srv, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", contentLength); err != nil {
			return
		}
		for i := range body {
			if i == stallAfter {
				srv.Read(make([]byte, 1)) // until the client hangs up
				return
			}
			time.Sleep(interval)
			if _, err := srv.Write(body[i : i+1]); err != nil {
				return
			}
		}
	}()
	return &http.Client{Transport: tr}
}

// Slow retrieval (rule 2), with exact fake time: a stall is cut off after StallTimeout, a
// trickle that never quite stalls is cut off by Timeout, and a slow but steady server is
// not cut off at all. The bubble also proves that Fetch leaves no goroutine behind.
func TestFetch_SlowRetrievalTiming(t *testing.T) {
	t.Parallel()
	const stall = 200 * time.Millisecond
	content := blobtest.Content(3, 20)
	d := blobtest.Sum(content)
	tests := []struct {
		name       string
		interval   time.Duration
		stallAfter int // bytes sent before the server stalls; -1 never
		timeout    time.Duration
		wantErr    error
		wantTook   time.Duration
		wantPart   int // bytes kept in the .part file (-1: none)
	}{
		{"StallBeforeFirstByte", 0, 0, time.Minute, blob.ErrStalled, stall, -1},
		{"StallAfterOneByte", 0, 1, time.Minute, blob.ErrStalled, stall, 1},
		{"StallAfterSlowBytes", 150 * time.Millisecond, 5, time.Minute, blob.ErrStalled, 5*150*time.Millisecond + stall, 5},
		{"FirstByteTooLate", 250 * time.Millisecond, -1, time.Minute, blob.ErrStalled, stall, -1},
		// A byte every 90ms: eleven bytes by 990ms, then the 1s Timeout.
		{"Trickle", 90 * time.Millisecond, -1, time.Second, blob.ErrTimeout, time.Second, 11},
		// A byte every 190ms never stalls and, without a Timeout, completes: every byte
		// winds the stall timer up again.
		{"SlowButSteady", 190 * time.Millisecond, -1, 0, nil, 20 * 190 * time.Millisecond, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				hc := pipeServer(t, content, len(content), tc.interval, tc.stallAfter)
				dst := filepath.Join(t.TempDir(), "image")
				start := time.Now()
				err := blob.Fetch(t.Context(), hc, "http://blobs.test/x", d, int64(len(content)), dst,
					blob.FetchOptions{StallTimeout: stall, Timeout: tc.timeout})
				if took := time.Since(start); took != tc.wantTook {
					t.Errorf("Fetch returned after %v, want %v", took, tc.wantTook)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Fetch = %v, want %v", err, tc.wantErr)
				}
				if tc.wantErr == nil {
					wantFile(t, dst, content)
					return
				}
				wantNoFile(t, dst)
				if tc.wantPart < 0 {
					wantNoFile(t, dst+".part")
				} else {
					wantFile(t, dst+".part", content[:tc.wantPart])
				}
			})
		})
	}
}
