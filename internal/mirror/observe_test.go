package mirror

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/blob/blobtest"
	"github.com/wharf-mirror/wharf/internal/meta/metatest"
)

// byteCounts is what a recordingObserver was told, per upstream.
type byteCounts struct {
	FromCache, FromFill, Fetched int64
}

type recordingObserver struct {
	mu  sync.Mutex
	got map[string]byteCounts
}

func (o *recordingObserver) BlobBytesServed(up string, fromCache bool, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.got[up]
	if fromCache {
		c.FromCache += n
	} else {
		c.FromFill += n
	}
	o.got[up] = c
}

func (o *recordingObserver) UpstreamBytes(up string, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.got[up]
	c.Fetched += n
	o.got[up] = c
}

func (o *recordingObserver) take() map[string]byteCounts {
	o.mu.Lock()
	defer o.mu.Unlock()
	got := o.got
	o.got = map[string]byteCounts{}
	return got
}

func newObservedService(t *testing.T, up *fakeUpstream) (*Service, *recordingObserver) {
	t.Helper()
	obs := &recordingObserver{got: map[string]byteCounts{}}
	idx := metatest.NewMemory()
	s, err := New(Config{
		Upstreams: []UpstreamConfig{{Name: "example.io", Client: up}},
		Blobs:     blobtest.NewMemory(),
		Index:     idx,
		Observer:  obs,
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
	return s, obs
}

// TestObserverBytes: bytes streamed while a fill runs count as served from
// upstream, bytes read from a committed file (a hit, or the held-back last
// byte of a fill's reader) as served from the cache, and every byte that
// arrived from upstream as fetched.
func TestObserverBytes(t *testing.T) {
	up := newFake()
	data := bytes.Repeat([]byte("wharf"), 100000)
	d := digest.FromBytes(data)
	up.blobs[d] = data
	pr, pw := io.Pipe()
	up.bodies[d] = pr
	manifest := []byte(`{"schemaVersion":2}`)
	up.pushManifest("app", "v1", manifest)
	s, obs := newObservedService(t, up)
	ctx := context.Background()

	if _, err := s.Manifest(ctx, "example.io", "app", "v1", true); err != nil {
		t.Fatal(err)
	}
	b, err := s.OpenBlob(ctx, "example.io", "app", d)
	if err != nil {
		t.Fatal(err)
	}
	var dst syncBuffer
	done := make(chan error, 1)
	go func() { done <- b.WriteRange(ctx, &dst, 0, int64(len(data))) }()
	pw.Write(data)
	waitLen(t, &dst, len(data)-1) // all but the held-back last byte
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.Close()
	want := map[string]byteCounts{"example.io": {
		FromFill:  int64(len(data)) - 1,
		FromCache: 1,
		Fetched:   int64(len(data) + len(manifest)),
	}}
	if diff := cmp.Diff(want, obs.take()); diff != "" {
		t.Errorf("miss (-want +got):\n%s", diff)
	}

	b, err = s.OpenBlob(ctx, "example.io", "app", d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Result != ResultHit {
		t.Fatalf("second open: %s", b.Result)
	}
	if err := b.WriteRange(ctx, io.Discard, 10, 1000); err != nil {
		t.Fatal(err)
	}
	want = map[string]byteCounts{"example.io": {FromCache: 1000}}
	if diff := cmp.Diff(want, obs.take()); diff != "" {
		t.Errorf("hit (-want +got):\n%s", diff)
	}
}

// TestServedWriterKeepsReaderFrom: counting must not hide the client
// connection's ReadFrom, or a cache hit would lose sendfile.
func TestServedWriterKeepsReaderFrom(t *testing.T) {
	obs := &recordingObserver{got: map[string]byteCounts{}}
	s := &Service{obs: obs}
	dst := &readerFromRecorder{}
	w := s.served(dst, "example.io", true)
	if _, err := io.Copy(w, io.LimitReader(bytes.NewReader(make([]byte, 100)), 64)); err != nil {
		t.Fatal(err)
	}
	if !dst.used || dst.n != 64 {
		t.Fatalf("ReadFrom used %v, %d bytes", dst.used, dst.n)
	}
	if got := obs.take()["example.io"].FromCache; got != 64 {
		t.Fatalf("counted %d bytes", got)
	}
	if s := (&Service{obs: nopObserver{}}); s.served(dst, "example.io", true) != io.Writer(dst) {
		t.Fatal("without an observer the writer is wrapped")
	}
}

type readerFromRecorder struct {
	bytes.Buffer
	used bool
	n    int64
}

func (r *readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.used = true
	n, err := r.Buffer.ReadFrom(src)
	r.n += n
	return n, err
}
