package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// waitUntil polls cond, bounded in count and time.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out waiting until %s", what)
}

func mustReserve(t *testing.T, s *Service, ds ...digest.Digest) func() {
	t.Helper()
	release, ok := s.Reserve(ds...)
	if !ok {
		t.Fatalf("Reserve(%v) failed", ds)
	}
	return release
}

// An open blob is in use until Close; a blob served since the last flush
// counts as in use until the flush.
func TestInUseOpenBlob(t *testing.T) {
	up := newFake()
	data := []byte("layer bytes")
	d := digest.FromBytes(data)
	up.blobs[d] = data
	s, _ := newService(t, up, Policy{})
	ctx := t.Context()

	for _, res := range []Result{ResultMiss, ResultHit} {
		b, err := s.OpenBlob(ctx, "example.io", "app", d)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.WriteRange(ctx, io.Discard, 0, b.Size); err != nil {
			t.Fatal(err)
		}
		if b.Result != res {
			t.Fatalf("result %s, want %s", b.Result, res)
		}
		if !s.InUse(d) {
			t.Fatalf("%s: an open blob is not in use", res)
		}
		if _, ok := s.Reserve(d); ok {
			t.Fatalf("%s: Reserve of an open blob succeeded", res)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil { // twice is harmless
			t.Fatal(err)
		}
		waitUntil(t, "the fill released the blob", func() bool { return !s.inuse.pinned(d) })
		if !s.InUse(d) {
			t.Fatalf("%s: a blob served since the last flush is not in use", res)
		}
		if err := s.FlushAccess(ctx); err != nil {
			t.Fatal(err)
		}
		if s.InUse(d) {
			t.Fatalf("%s: closed and flushed, still in use", res)
		}
	}
	if _, err := s.index.LastAccess(ctx, d); err != nil {
		t.Errorf("FlushAccess recorded no access: %v", err)
	}
	mustReserve(t, s, d)()
}

// A fill keeps its digest in use after its readers left, until it is
// committed.
func TestInUseFill(t *testing.T) {
	up := newFake()
	data := bytes.Repeat([]byte("fill"), 1000)
	d := digest.FromBytes(data)
	up.blobs[d] = data
	pr, pw := io.Pipe()
	up.bodies[d] = pr
	s, _ := newService(t, up, Policy{})
	ctx := t.Context()

	b, err := s.OpenBlob(ctx, "example.io", "app", d)
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // the client leaves; the fill goes on
	if err := s.FlushAccess(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.InUse(d) {
		t.Fatal("a running fill is not in use")
	}
	if _, ok := s.Reserve(d); ok {
		t.Fatal("Reserve of a running fill succeeded")
	}
	if _, err := pw.Write(data); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	waitUntil(t, "the fill finished", func() bool { return !s.InUse(d) })
	if _, err := s.index.Blob(ctx, d); err != nil {
		t.Fatalf("fill did not record the blob: %v", err)
	}
	mustReserve(t, s, d)()
}

// Reserve is all or nothing, and a reserved digest cannot be reserved
// again until released.
func TestReserveAllOrNothing(t *testing.T) {
	s, _ := newService(t, newFake(), Policy{})
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	unpin, err := s.inuse.pin(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Reserve(a, b); ok {
		t.Fatal("Reserve with a pinned digest succeeded")
	}
	// Nothing was reserved: a can be pinned at once.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	unpinA, err := s.inuse.pin(ctx, a)
	if err != nil {
		t.Fatalf("pin of a digest a failed Reserve left behind: %v", err)
	}
	unpinA()
	unpin()

	release := mustReserve(t, s, a, b, a)
	if _, ok := s.Reserve(b, c); ok {
		t.Fatal("Reserve of a reserved digest succeeded")
	}
	release()
	release() // twice is harmless
	mustReserve(t, s, b, c)()
}

// A request for reserved content waits until the reservation ends, then
// finds the content gone and fetches it again.
func TestReserveHoldsRequests(t *testing.T) {
	up := newFake()
	body := []byte(`{"schemaVersion":2,"layers":[]}`)
	d := up.pushManifest("app", "v1", body)
	s, _ := newService(t, up, Policy{})
	ctx := t.Context()
	if _, err := s.Manifest(ctx, "example.io", "app", d.String(), true); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushAccess(ctx); err != nil {
		t.Fatal(err)
	}
	s.links.add("remembered")

	release := mustReserve(t, s, d)
	type result struct {
		m   *Manifest
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := s.Manifest(ctx, "example.io", "app", d.String(), true)
		done <- result{m, err}
	}()
	// Delete what a collector would, while the request waits.
	if _, err := s.index.Evict(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.blobs.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("a request for reserved content returned: %+v, %v", r.m, r.err)
	case <-time.After(20 * time.Millisecond):
	}
	release()
	r := <-done
	if r.err != nil || r.m.Result != ResultMiss || !bytes.Equal(r.m.Body, body) {
		t.Fatalf("after release: %+v, %v; want a miss with the manifest", r.m, r.err)
	}
	if n := up.count("GetManifest"); n != 2 {
		t.Errorf("%d upstream GETs, want 2 (fetched again after eviction)", n)
	}
	if s.links.has("remembered") {
		t.Error("release kept the remembered links")
	}
}

// A request waiting for a reservation gives up with its context.
func TestPinWaitCancelled(t *testing.T) {
	s, _ := newService(t, newFake(), Policy{})
	d := digest.FromString("d")
	release := mustReserve(t, s, d)
	defer release()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.inuse.pin(ctx, d); !errors.Is(err, context.Canceled) {
		t.Fatalf("pin of a reserved digest with a cancelled context = %v, want context.Canceled", err)
	}
	if _, _, err := s.StatBlob(ctx, "example.io", "app", d); !errors.Is(err, context.Canceled) {
		t.Fatalf("StatBlob of a reserved digest with a cancelled context = %v, want context.Canceled", err)
	}
}
