package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/blob/blobtest"
	"github.com/wharf-mirror/wharf/internal/meta/metatest"
	"github.com/wharf-mirror/wharf/internal/upstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeUpstream is a hand-written upstream: manifests by repo and ref, blobs
// whose bodies the test can hold open, an error to fail everything with,
// and call counters.
type fakeUpstream struct {
	mu        sync.Mutex
	manifests map[string][]byte // repo@ref → body
	blobs     map[digest.Digest][]byte
	bodies    map[digest.Digest]io.ReadCloser // if set, GetBlob returns this once
	fail      error
	calls     map[string]int
	noDigest  bool            // HeadManifest answers without Docker-Content-Digest
	hang      bool            // HeadManifest waits for its context to end
	budgets   []time.Duration // time left before each HeadManifest's deadline
}

func newFake() *fakeUpstream {
	return &fakeUpstream{manifests: map[string][]byte{}, blobs: map[digest.Digest][]byte{}, bodies: map[digest.Digest]io.ReadCloser{}, calls: map[string]int{}}
}

func (f *fakeUpstream) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeUpstream) enter(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	return f.fail
}

func (f *fakeUpstream) setFail(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

func notFound() error { return &upstream.ResponseError{StatusCode: http.StatusNotFound} }

func (f *fakeUpstream) pushManifest(repo, tag string, body []byte) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(body)
	f.manifests[repo+"@"+tag] = body
	f.manifests[repo+"@"+d.String()] = body
	return d
}

func (f *fakeUpstream) HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error) {
	if err := f.enter("HeadManifest"); err != nil {
		return upstream.Descriptor{}, err
	}
	f.mu.Lock()
	hang := f.hang
	if dl, ok := ctx.Deadline(); ok {
		f.budgets = append(f.budgets, time.Until(dl))
	}
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return upstream.Descriptor{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.manifests[repo+"@"+ref]
	if !ok {
		return upstream.Descriptor{}, notFound()
	}
	if f.noDigest {
		return upstream.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Size: int64(len(b))}, nil
	}
	return upstream.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromBytes(b), Size: int64(len(b))}, nil
}

func (f *fakeUpstream) GetManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, []byte, error) {
	if err := f.enter("GetManifest"); err != nil {
		return upstream.Descriptor{}, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.manifests[repo+"@"+ref]
	if !ok {
		return upstream.Descriptor{}, nil, notFound()
	}
	return upstream.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromBytes(b), Size: int64(len(b))}, b, nil
}

func (f *fakeUpstream) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	if err := f.enter("HeadBlob"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[d]
	if !ok {
		return 0, notFound()
	}
	return int64(len(b)), nil
}

func (f *fakeUpstream) GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	if err := f.enter("GetBlob"); err != nil {
		return nil, 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[d]
	if !ok {
		return nil, 0, notFound()
	}
	if body, ok := f.bodies[d]; ok {
		delete(f.bodies, d)
		return body, int64(len(b)), nil
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (f *fakeUpstream) Do(ctx context.Context, method, repo, suffix, rawQuery string, accept []string) (*http.Response, error) {
	if err := f.enter("Do"); err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 404, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil))}, nil
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func newService(t *testing.T, up *fakeUpstream, p Policy) (*Service, *clock) {
	t.Helper()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	idx := metatest.NewMemory()
	s, err := New(Config{
		Upstreams:         []UpstreamConfig{{Name: "example.io", Client: up, Policy: p}},
		Blobs:             blobtest.NewMemory(),
		Index:             idx,
		Now:               clk.Now,
		RevalidateTimeout: 200 * time.Millisecond,
		DownBackoff:       time.Minute,
		DownProbeTimeout:  20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		idx.Close()
	})
	return s, clk
}

func TestStaleBound(t *testing.T) {
	up := newFake()
	d := up.pushManifest("app", "v1", []byte(`{"schemaVersion":2}`))
	s, clk := newService(t, up, Policy{TagTTL: time.Minute, MaxStale: time.Hour})
	ctx := context.Background()
	m, err := s.Manifest(ctx, "example.io", "app", "v1", true)
	if err != nil || m.Digest != d || m.Result != ResultMiss {
		t.Fatalf("first: %v %+v", err, m)
	}
	clk.Advance(30 * time.Second)
	if m, _ := s.Manifest(ctx, "example.io", "app", "v1", true); m.Result != ResultHit {
		t.Fatalf("within TTL: %s", m.Result)
	}
	up.setFail(fmt.Errorf("dial: %w", upstream.ErrUnreachable))
	clk.Advance(30 * time.Minute)
	m, err = s.Manifest(ctx, "example.io", "app", "v1", false)
	if err != nil || m.Result != ResultStale || m.Digest != d {
		t.Fatalf("within max stale: %v %+v", err, m)
	}
	clk.Advance(2 * time.Hour)
	if _, err := s.Manifest(ctx, "example.io", "app", "v1", false); !errors.Is(err, upstream.ErrUnreachable) {
		t.Fatalf("beyond max stale: %v", err)
	}
	// By digest, nothing changes: immutable content never expires.
	if m, err := s.Manifest(ctx, "example.io", "app", d.String(), true); err != nil || m.Result != ResultHit {
		t.Fatalf("by digest: %v %+v", err, m)
	}
}

func TestNegativeCache(t *testing.T) {
	up := newFake()
	s, clk := newService(t, up, Policy{NegativeTTL: 30 * time.Second, MaxStale: time.Hour})
	ctx := context.Background()
	for range 3 {
		if _, err := s.Manifest(ctx, "example.io", "app", "nope", false); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err %v", err)
		}
	}
	if n := up.count("GetManifest"); n != 1 {
		t.Fatalf("%d upstream GETs within the negative TTL", n)
	}
	clk.Advance(31 * time.Second)
	up.pushManifest("app", "nope", []byte(`{"now":"here"}`))
	if _, err := s.Manifest(ctx, "example.io", "app", "nope", false); err != nil {
		t.Fatalf("after the negative TTL: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent Len.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *syncBuffer) Len() int { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.Len() }
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// waitLen waits (bounded) until b holds n bytes.
func waitLen(t *testing.T, b *syncBuffer, n int) {
	t.Helper()
	for range 1000 {
		if b.Len() >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("buffer has %d bytes, want %d", b.Len(), n)
}

// TestFillHoldsBackLastByte: readers of a fill in progress get every byte
// that arrived except the last one of their range, which comes only after
// the blob was verified and committed.
func TestFillHoldsBackLastByte(t *testing.T) {
	up := newFake()
	data := bytes.Repeat([]byte("wharf"), 100000)
	d := digest.FromBytes(data)
	up.blobs[d] = data
	pr, pw := io.Pipe()
	up.bodies[d] = pr
	s, _ := newService(t, up, Policy{})
	ctx := context.Background()

	b, err := s.OpenBlob(ctx, "example.io", "app", d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var full, part syncBuffer
	errs := make(chan error, 2)
	go func() { errs <- b.WriteRange(ctx, &full, 0, int64(len(data))) }()
	go func() { errs <- b.WriteRange(ctx, &part, 10, 100) }()

	pw.Write(data) // everything arrives, but the body has not ended
	waitLen(t, &full, len(data)-1)
	waitLen(t, &part, 99)
	time.Sleep(20 * time.Millisecond)
	if full.Len() != len(data)-1 || part.Len() != 99 {
		t.Fatalf("bytes released before verification: %d of %d, %d of 100", full.Len(), len(data), part.Len())
	}
	pw.Close() // upstream body ends: verify, commit, release
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(full.Bytes(), data) || !bytes.Equal(part.Bytes(), data[10:110]) {
		t.Fatal("wrong bytes")
	}
}

// TestFillFailureReachesReaders: a body that ends early fails every reader
// and commits nothing; the next request fetches again.
func TestFillFailureReachesReaders(t *testing.T) {
	up := newFake()
	data := bytes.Repeat([]byte("x"), 1<<20)
	d := digest.FromBytes(data)
	up.blobs[d] = data
	up.bodies[d] = io.NopCloser(bytes.NewReader(data[:1000]))
	s, _ := newService(t, up, Policy{})
	ctx := context.Background()
	// The failure shows either when opening (the fill already failed) or
	// while reading.
	b, err := s.OpenBlob(ctx, "example.io", "app", d)
	if err == nil {
		err = b.WriteRange(ctx, io.Discard, 0, int64(len(data)))
		b.Close()
	}
	if !errors.Is(err, ErrFetchFailed) {
		t.Fatalf("reader error %v, want ErrFetchFailed", err)
	}
	b, err = s.OpenBlob(ctx, "example.io", "app", d)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	if err := b.WriteRange(ctx, &out, 0, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if up.count("GetBlob") != 2 || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("refetch: %d GETs", up.count("GetBlob"))
	}
}

// TestCloseCancelsFills: Close ends a fill whose upstream body never ends,
// and readers see an error (goleak checks nothing is left running).
func TestCloseCancelsFills(t *testing.T) {
	up := newFake()
	data := []byte("never finishes")
	d := digest.FromBytes(data)
	up.blobs[d] = data
	pr, pw := io.Pipe()
	up.bodies[d] = pr
	s, _ := newService(t, up, Policy{})
	b, err := s.OpenBlob(context.Background(), "example.io", "app", d)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WriteRange(context.Background(), io.Discard, 0, int64(len(data))) }()
	// Closing the pipe with an error is what the cancelled context does to a
	// real HTTP body; the fake's body ignores the context, so do it here.
	go func() { time.Sleep(10 * time.Millisecond); pw.CloseWithError(context.Canceled) }()
	if err := <-done; err == nil {
		t.Fatal("reader of a cancelled fill succeeded")
	}
	b.Close()
}

// TestHeadWithoutDigestFallsBackToGet: an upstream whose HEAD carries no
// Docker-Content-Digest is revalidated with a GET, and the body is hashed.
func TestHeadWithoutDigestFallsBackToGet(t *testing.T) {
	up := newFake()
	up.noDigest = true
	up.pushManifest("app", "v1", []byte(`{"v":1}`))
	s, _ := newService(t, up, Policy{MaxStale: time.Hour})
	ctx := context.Background()
	if _, err := s.Manifest(ctx, "example.io", "app", "v1", false); err != nil {
		t.Fatal(err)
	}
	moved := up.pushManifest("app", "v1", []byte(`{"v":2}`))
	m, err := s.Manifest(ctx, "example.io", "app", "v1", true)
	if err != nil || m.Digest != moved || string(m.Body) != `{"v":2}` {
		t.Fatalf("revalidation without a digest header: %v %+v", err, m)
	}
	if up.count("HeadManifest") != 1 || up.count("GetManifest") != 2 {
		t.Fatalf("HEAD %d, GET %d; want 1 and 2", up.count("HeadManifest"), up.count("GetManifest"))
	}
}

// TestHangingUpstreamServesStaleFast: an upstream that accepts but never
// answers gets the revalidation deadline once; while it is known down, each
// stale-able tag request gives it only the short probe deadline, and the
// first request after it recovers gets the fresh answer.
func TestHangingUpstreamServesStaleFast(t *testing.T) {
	up := newFake()
	d := up.pushManifest("app", "v1", []byte(`{"v":1}`))
	s, clk := newService(t, up, Policy{MaxStale: time.Hour})
	ctx := context.Background()
	if _, err := s.Manifest(ctx, "example.io", "app", "v1", false); err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	up.hang = true
	up.mu.Unlock()
	for range 3 {
		m, err := s.Manifest(ctx, "example.io", "app", "v1", false)
		if err != nil || m.Result != ResultStale || m.Digest != d {
			t.Fatalf("hanging upstream: %v %+v", err, m)
		}
	}
	up.mu.Lock()
	budgets := append([]time.Duration(nil), up.budgets...)
	up.hang = false
	up.mu.Unlock()
	if len(budgets) != 3 { // the first pull was a GET; then 3 revalidations
		t.Fatalf("%d HEADs with deadlines, want 3: %v", len(budgets), budgets)
	}
	if budgets[0] <= 20*time.Millisecond || budgets[0] > 200*time.Millisecond {
		t.Errorf("first revalidation deadline %v, want the revalidation timeout", budgets[0])
	}
	for _, b := range budgets[1:] {
		if b > 20*time.Millisecond {
			t.Errorf("revalidation while down had %v, want at most the probe timeout", b)
		}
	}
	moved := up.pushManifest("app", "v1", []byte(`{"v":2}`))
	clk.Advance(time.Second) // still within the backoff
	m, err := s.Manifest(ctx, "example.io", "app", "v1", false)
	if err != nil || m.Digest != moved {
		t.Fatalf("first request after recovery: %v %+v", err, m)
	}
}

// TestTagDeletedUpstreamIsForgotten: after upstream answers 404 for a cached
// tag, an upstream outage does not bring the old mapping back as stale.
func TestTagDeletedUpstreamIsForgotten(t *testing.T) {
	up := newFake()
	up.pushManifest("app", "v1", []byte(`{"v":1}`))
	s, clk := newService(t, up, Policy{MaxStale: time.Hour, NegativeTTL: time.Second})
	ctx := context.Background()
	if _, err := s.Manifest(ctx, "example.io", "app", "v1", false); err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	delete(up.manifests, "app@v1")
	up.mu.Unlock()
	if _, err := s.Manifest(ctx, "example.io", "app", "v1", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted upstream: %v, want ErrNotFound", err)
	}
	clk.Advance(2 * time.Second) // past the negative cache
	up.setFail(fmt.Errorf("dial: %w", upstream.ErrUnreachable))
	if m, err := s.Manifest(ctx, "example.io", "app", "v1", false); err == nil {
		t.Fatalf("a tag deleted upstream came back as %s", m.Result)
	}
}
