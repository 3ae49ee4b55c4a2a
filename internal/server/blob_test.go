package server_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// layerOf returns the digest and bytes of layer i of img.
func layerOf(t testing.TB, img v1.Image, i int) (digest.Digest, []byte) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[i].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[i].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String()), b
}

func TestBlobHeadersAndBytes(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 100, 5000)
	h.hub.PushImage(t, "library/app", "v1", img)
	d, want := layerOf(t, img, 0)
	path := "/v2/library/app/blobs/" + d.String()

	// HEAD on a miss answers from an upstream HEAD without downloading.
	r := h.do("HEAD", path)
	expectStatus(t, r, 200)
	if r.Header.Get("Content-Length") != "5000" || r.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("HEAD headers: %v", r.Header)
	}
	if n := h.hub.Count(registrytest.BlobGETs(d)); n != 0 {
		t.Fatalf("HEAD downloaded the blob (%d GETs)", n)
	}

	for _, res := range []string{"miss", "hit"} {
		r = h.do("GET", path)
		expectStatus(t, r, 200)
		if string(r.body) != string(want) {
			t.Fatalf("%s: wrong bytes", res)
		}
		checkBlobHeaders(t, r, d, "5000")
		if got := r.Header.Get("X-Wharf-Cache"); got != res {
			t.Errorf("cache result %q, want %q", got, res)
		}
	}
	r = h.do("HEAD", path)
	expectStatus(t, r, 200)
	checkBlobHeaders(t, r, d, "5000")

	// Redirects were followed by wharf (the client saw none), and the
	// registry's Authorization never reached the CDN host.
	for _, req := range h.hub.Requests() {
		if req.Server == registrytest.ServerStorage && req.Header.Get("Authorization") != "" {
			t.Errorf("Authorization sent to the redirect target: %s %s", req.Method, req.Path)
		}
		if req.Header.Get("Accept-Encoding") != "" {
			t.Errorf("Accept-Encoding %q sent upstream", req.Header.Get("Accept-Encoding"))
		}
	}
	expectError(t, h.do("GET", "/v2/library/app/blobs/"+digest.FromString("absent").String()), 404, "BLOB_UNKNOWN")
	expectStatus(t, h.do("HEAD", "/v2/library/app/blobs/"+digest.FromString("absent").String()), 404)
}

func checkBlobHeaders(t *testing.T, r *response, d digest.Digest, length string) {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Length":        length,
		"Docker-Content-Digest": d.String(),
		"Accept-Ranges":         "bytes",
		"Content-Encoding":      "",
		"ETag":                  `"` + d.String() + `"`,
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("%s %s: %s = %q, want %q", r.Request.Method, r.Request.URL.Path, k, got, want)
		}
	}
}

// TestBlobRanges checks the Range cases of client-compat §8 on a hit and on
// a miss (where the range is served from the fill in progress).
func TestBlobRanges(t *testing.T) {
	const size = 2000
	cases := []struct {
		rng          string
		status       int
		start, end   int // inclusive
		contentRange string
	}{
		{"bytes=500-1499", 206, 500, 1499, "bytes 500-1499/2000"},
		{"bytes=500-", 206, 500, 1999, "bytes 500-1999/2000"},
		{"bytes=-500", 206, 1500, 1999, "bytes 1500-1999/2000"},
		{"bytes=1500-5000", 206, 1500, 1999, "bytes 1500-1999/2000"},
		{"bytes=0-0", 206, 0, 0, "bytes 0-0/2000"},
		{"bytes=500-0", 416, 0, -1, "bytes */2000"},
		{"bytes=2000-", 416, 0, -1, "bytes */2000"},
		{"bytes=0-1,5-6", 200, 0, 1999, ""},
	}
	for _, state := range []string{"hit", "miss"} {
		t.Run(state, func(t *testing.T) {
			h := newHarness(t, defaultOptions())
			for i, c := range cases {
				img := registrytest.RandomImage(t, uint64(200+i), size)
				h.ghcr.PushImage(t, "foo/bar", "", img)
				d, want := layerOf(t, img, 0)
				path := "/v2/ghcr.io/foo/bar/blobs/" + d.String()
				if state == "hit" {
					expectStatus(t, h.do("GET", path), 200)
				}
				r := h.do("GET", path, "Range", c.rng)
				if r.StatusCode != c.status {
					t.Fatalf("%s: status %d, want %d", c.rng, r.StatusCode, c.status)
				}
				if got := r.Header.Get("Content-Range"); got != c.contentRange {
					t.Errorf("%s: Content-Range %q, want %q", c.rng, got, c.contentRange)
				}
				if c.status == 416 {
					continue
				}
				if string(r.body) != string(want[c.start:c.end+1]) {
					t.Errorf("%s: wrong bytes", c.rng)
				}
				if r.Header.Get("Content-Length") != strconv.Itoa(c.end-c.start+1) {
					t.Errorf("%s: Content-Length %q", c.rng, r.Header.Get("Content-Length"))
				}
				// A range request on a miss still caches the whole, verified blob.
				h.ghcr.ResetRequests()
				full := h.do("GET", path)
				expectStatus(t, full, 200)
				if sha(full.body) != d || h.ghcr.Count(registrytest.BlobGETs(d)) != 0 {
					t.Errorf("%s: blob not cached completely after a range request", c.rng)
				}
			}
		})
	}
}

// TestConcurrentColdPulls: 64 clients of one uncached 64 MiB blob cause
// exactly one upstream GET, and every client gets verified bytes.
func TestConcurrentColdPulls(t *testing.T) {
	if testing.Short() {
		t.Skip("64 × 64 MiB transfer")
	}
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 300, 64<<20)
	h.hub.PushImage(t, "library/big", "v1", img)
	ls, _ := img.Layers()
	hd, _ := ls[0].Digest()
	d := digest.Digest(hd.String())

	const clients = 64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := h.send("GET", "/v2/library/big/blobs/"+d.String())
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("client %d: status %d", i, resp.StatusCode)
				return
			}
			hash := sha256.New()
			n, err := io.Copy(hash, resp.Body)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			if got := digest.NewDigest(digest.SHA256, hash); got != d || n != 64<<20 {
				errs <- fmt.Errorf("client %d: got %s (%d bytes)", i, got, n)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// With RedirectBlobs one fetch is a redirect on the registry plus the
	// download on the CDN host: count the download.
	if n := h.hub.Count(registrytest.On(registrytest.ServerStorage, registrytest.BlobGETs(d))); n != 1 {
		t.Fatalf("%d upstream downloads of the blob, want 1", n)
	}
}

// TestStreamingBeforeComplete: the first bytes reach the client while the
// upstream download is still running (the blob is not in the cache yet).
func TestStreamingBeforeComplete(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 400, 8<<20)
	h.ghcr.PushImage(t, "foo/bar", "", img)
	d, want := layerOf(t, img, 0)
	h.ghcr.AddFault(registrytest.Fault{Match: registrytest.IsBlobGET(d), ResetAfter: -1, BytesPerSec: 2 << 20})

	resp, err := h.send("GET", "/v2/ghcr.io/foo/bar/blobs/"+d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	// The client holds the first MiB; the blob is not committed yet.
	h2 := h.do("HEAD", "/v2/ghcr.io/foo/bar/blobs/"+d.String())
	if h2.Header.Get("X-Wharf-Cache") == "hit" {
		t.Fatalf("blob already committed when the first MiB arrived: not streaming")
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(append(first, rest...)) != string(want) {
		t.Fatalf("wrong bytes")
	}
}

// TestBrokenUpstreamBody: a truncated or corrupted upstream body aborts
// every client connection mid-body and commits nothing.
func TestBrokenUpstreamBody(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault registrytest.Fault
	}{
		{"reset mid-body", registrytest.Fault{ResetAfter: 3 << 20, Times: 1}},
		{"wrong bytes", registrytest.Fault{ResetAfter: -1, Corrupt: true, Times: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, defaultOptions())
			img := registrytest.RandomImage(t, 500, 6<<20)
			h.ghcr.PushImage(t, "foo/bar", "", img)
			d, want := layerOf(t, img, 0)
			f := tc.fault
			f.Match = registrytest.IsBlobGET(d)
			h.ghcr.AddFault(f)

			// Every client either sees its 200 response cut short
			// (io.ErrUnexpectedEOF) or, if the failure came before its
			// first byte, an OCI error; none gets a complete body.
			const clients = 4
			var wg sync.WaitGroup
			results := make(chan error, clients)
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := h.send("GET", "/v2/ghcr.io/foo/bar/blobs/"+d.String())
					if err != nil {
						results <- err
						return
					}
					defer resp.Body.Close()
					body, err := io.ReadAll(resp.Body)
					switch {
					case resp.StatusCode == 200 && errors.Is(err, io.ErrUnexpectedEOF):
						results <- nil
					case resp.StatusCode >= 500 && err == nil && strings.Contains(string(body), `"errors"`):
						results <- nil
					default:
						results <- fmt.Errorf("status %d, read error %v: want a cut 200 body or an OCI error", resp.StatusCode, err)
					}
				}()
			}
			wg.Wait()
			close(results)
			for err := range results {
				if err != nil {
					t.Error(err)
				}
			}
			// Nothing was committed: the next request fetches again and
			// gets the right bytes.
			h.ghcr.ResetRequests()
			r := h.do("GET", "/v2/ghcr.io/foo/bar/blobs/"+d.String())
			expectStatus(t, r, 200)
			if string(r.body) != string(want) {
				t.Fatalf("wrong bytes after recovery")
			}
			if h.ghcr.Count(registrytest.BlobGETs(d)) != 1 {
				t.Fatalf("a broken blob was committed: no refetch")
			}
		})
	}
}

// TestFetchOutlivesClient: the client that started a fill goes away; the
// fill completes and the blob is cached.
func TestFetchOutlivesClient(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 600, 4<<20)
	h.ghcr.PushImage(t, "foo/bar", "", img)
	d, _ := layerOf(t, img, 0)
	h.ghcr.AddFault(registrytest.Fault{Match: registrytest.IsBlobGET(d), ResetAfter: -1, BytesPerSec: 8 << 20})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/v2/ghcr.io/foo/bar/blobs/"+d.String(), nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 1024))
	cancel()
	resp.Body.Close()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r := h.do("HEAD", "/v2/ghcr.io/foo/bar/blobs/"+d.String())
		if r.Header.Get("X-Wharf-Cache") == "hit" {
			if n := h.ghcr.Count(authorized(registrytest.BlobGETs(d))); n != 1 {
				t.Fatalf("%d upstream GETs, want 1", n)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the fill did not complete after its client left")
}

// TestCrossRepositoryIsolation: a blob cached for one repository is served
// for another only if upstream confirms that repository has it.
func TestCrossRepositoryIsolation(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 700, 1000)
	h.ghcr.PushImage(t, "team-a/private", "v1", img)
	d, want := layerOf(t, img, 0)
	expectStatus(t, h.do("GET", "/v2/ghcr.io/team-a/private/blobs/"+d.String()), 200)

	// team-b/other does not have it upstream: not served from the cache.
	h.ghcr.PushImage(t, "team-b/other", "v1", registrytest.RandomImage(t, 701, 10))
	expectError(t, h.do("GET", "/v2/ghcr.io/team-b/other/blobs/"+d.String()), 404, "BLOB_UNKNOWN")
	expectStatus(t, h.do("HEAD", "/v2/ghcr.io/team-b/other/blobs/"+d.String()), 404)

	// team-c/shared has the same layer upstream: confirmed with a HEAD,
	// then served from the cache without a download.
	h.ghcr.PushImage(t, "team-c/shared", "v1", img)
	h.ghcr.ResetRequests()
	r := h.do("GET", "/v2/ghcr.io/team-c/shared/blobs/"+d.String())
	expectStatus(t, r, 200)
	if string(r.body) != string(want) {
		t.Fatal("wrong bytes")
	}
	if n := h.ghcr.Count(registrytest.BlobGETs(d)); n != 0 {
		t.Fatalf("confirmed blob downloaded again (%d GETs)", n)
	}
	// Same for manifests by digest.
	md := h.ghcr.PushImage(t, "team-a/private", "v2", registrytest.RandomImage(t, 702, 10))
	expectStatus(t, h.do("GET", "/v2/ghcr.io/team-a/private/manifests/"+md.String()), 200)
	expectError(t, h.do("GET", "/v2/ghcr.io/team-b/other/manifests/"+md.String()), 404, "MANIFEST_UNKNOWN")
}
