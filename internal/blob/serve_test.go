package blob_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
)

func TestServe(t *testing.T) {
	t.Parallel()
	const size = 100000
	w := newWorld(t, size)
	b := w.content
	etag := blob.ETag(w.digest)
	cacheable := map[string]string{
		"Etag":                   etag,
		"Cache-Control":          "public, max-age=31536000, immutable",
		"X-Content-Type-Options": "nosniff",
		"Accept-Ranges":          "bytes",
	}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	tests := []struct {
		name        string
		method, url string
		header      map[string]string
		wantStatus  int
		wantHeader  map[string]string
		wantBody    []byte
	}{
		{
			name: "Get", method: "GET", url: w.url(),
			wantStatus: 200,
			wantHeader: with(cacheable, "Content-Type", "application/octet-stream", "Content-Length", strconv.Itoa(size)),
			wantBody:   b,
		},
		{
			name: "GetBareHex", method: "GET", url: w.srv.URL + "/blobs/" + w.digest.Hex(),
			wantStatus: 200, wantHeader: cacheable, wantBody: b,
		},
		{
			name: "Head", method: "HEAD", url: w.url(),
			wantStatus: 200,
			wantHeader: with(cacheable, "Content-Type", "application/octet-stream", "Content-Length", strconv.Itoa(size)),
			wantBody:   []byte{},
		},
		{
			name: "Range", method: "GET", url: w.url(), header: map[string]string{"Range": "bytes=1000-1999"},
			wantStatus: 206,
			wantHeader: with(cacheable, "Content-Range", fmt.Sprintf("bytes 1000-1999/%d", size), "Content-Length", "1000"),
			wantBody:   b[1000:2000],
		},
		{
			name: "OpenRange", method: "GET", url: w.url(), header: map[string]string{"Range": "bytes=99990-"},
			wantStatus: 206,
			wantHeader: with(cacheable, "Content-Range", fmt.Sprintf("bytes 99990-99999/%d", size)),
			wantBody:   b[99990:],
		},
		{
			name: "SuffixRange", method: "GET", url: w.url(), header: map[string]string{"Range": "bytes=-5"},
			wantStatus: 206, wantHeader: cacheable, wantBody: b[size-5:],
		},
		{
			name: "RangeNotSatisfiable", method: "GET", url: w.url(), header: map[string]string{"Range": fmt.Sprintf("bytes=%d-", size)},
			wantStatus: 416,
		},
		{
			name: "IfRangeMatches", method: "GET", url: w.url(), header: map[string]string{"Range": "bytes=10-19", "If-Range": etag},
			wantStatus: 206, wantHeader: cacheable, wantBody: b[10:20],
		},
		{
			name: "IfRangeOtherETag", method: "GET", url: w.url(), header: map[string]string{"Range": "bytes=10-19", "If-Range": `"sha256:other"`},
			wantStatus: 200, wantHeader: cacheable, wantBody: b,
		},
		{
			name: "IfNoneMatch", method: "GET", url: w.url(), header: map[string]string{"If-None-Match": etag},
			wantStatus: 304, wantHeader: map[string]string{"Etag": etag, "Cache-Control": cacheable["Cache-Control"]},
			wantBody: []byte{},
		},
		{
			name: "IfNoneMatchOfSeveral", method: "GET", url: w.url(), header: map[string]string{"If-None-Match": `"x", ` + etag},
			wantStatus: 304, wantBody: []byte{},
		},
		{
			name: "IfNoneMatchOther", method: "GET", url: w.url(), header: map[string]string{"If-None-Match": `"sha256:other"`},
			wantStatus: 200, wantHeader: cacheable, wantBody: b,
		},
		{
			name: "HeadIfNoneMatch", method: "HEAD", url: w.url(), header: map[string]string{"If-None-Match": etag},
			wantStatus: 304, wantBody: []byte{},
		},
		{
			// An unknown blob is a problem document that no cache may keep.
			name: "NotFound", method: "GET", url: w.srv.URL + "/blobs/" + blobtest.Sum(nil).String(),
			wantStatus: 404,
			wantHeader: map[string]string{"Content-Type": "application/problem+json", "Cache-Control": "no-store", "Etag": "", "Accept-Ranges": ""},
		},
		{
			name: "InvalidDigest", method: "GET", url: w.srv.URL + "/blobs/sha256:XYZ",
			wantStatus: 400,
			wantHeader: map[string]string{"Content-Type": "application/problem+json", "Cache-Control": "no-store", "Etag": ""},
		},
	}
	hc := w.srv.Client()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			res, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s = %v", tc.method, tc.url, err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("%s %v = %s, want %d; body %.200s", tc.method, tc.header, res.Status, tc.wantStatus, body)
			}
			for k, want := range tc.wantHeader {
				if got := res.Header.Get(k); got != want {
					t.Errorf("%s %v: header %s = %q, want %q", tc.method, tc.header, k, got, want)
				}
			}
			if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
				t.Errorf("%s %v: body is %d bytes, want %d (the blob's bytes %s)", tc.method, tc.header, len(body), len(tc.wantBody), tc.name)
			}
		})
	}
}

func TestServe_MultipleRanges(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 50000)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", w.url(), nil)
	req.Header.Set("Range", "bytes=0-9,20000-20099,-7")
	res, err := w.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 206 {
		t.Fatalf("GET with three ranges = %s, want 206", res.Status)
	}
	if got := res.Header.Get("Etag"); got != blob.ETag(w.digest) {
		t.Errorf("Etag = %q, want %q", got, blob.ETag(w.digest))
	}
	mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("Content-Type = %q (%v), want multipart/byteranges", res.Header.Get("Content-Type"), err)
	}
	type part struct {
		ContentRange, ContentType string
		Body                      []byte
	}
	var got []part
	mr := multipart.NewReader(res.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, part{p.Header.Get("Content-Range"), p.Header.Get("Content-Type"), b})
	}
	b := w.content
	want := []part{
		{"bytes 0-9/50000", "application/octet-stream", b[0:10]},
		{"bytes 20000-20099/50000", "application/octet-stream", b[20000:20100]},
		{"bytes 49993-49999/50000", "application/octet-stream", b[49993:]},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
}
