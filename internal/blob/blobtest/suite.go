// Package blobtest holds the conformance suite that defines the semantics of
// blob.Store, and an in-memory Store for tests of packages that consume one.
//
// Every implementation runs the suite from a one-line test:
//
//	func TestStore(t *testing.T) { blobtest.Run(t, newStore) }
//
// The suite only uses the blob.Store interface, so it cannot check
// durability; implementation-specific properties (file layout, permissions,
// crash leftovers) belong in the implementation's own tests.
package blobtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/blob"
)

// Run runs the conformance suite against stores made by newStore, which is
// called once per subtest and must return an empty store. Subtests run in
// parallel.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"DigestMismatch", testDigestMismatch},
		{"SizeMismatch", testSizeMismatch},
		{"UnknownSize", testUnknownSize},
		{"CommitExisting", testCommitExisting},
		{"CancelAfterCommit", testCancelAfterCommit},
		{"CancelDiscards", testCancelDiscards},
		{"ReadAtWhileWriting", testReadAtWhileWriting},
		{"ConcurrentWritersSameDigest", testConcurrentWriters},
		{"Delete", testDelete},
		{"Walk", testWalk},
		{"MalformedDigest", testMalformedDigest},
		{"ReaderSurvivesDelete", testReaderSurvivesDelete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

// content returns n deterministic pseudo-random bytes; different seeds give
// different content.
func content(seed uint64, n int) []byte {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// put writes p as blob d (of p's size) and commits it.
func put(t *testing.T, s blob.Store, d digest.Digest, p []byte) {
	t.Helper()
	w, err := s.Create(t.Context(), d, int64(len(p)))
	if err != nil {
		t.Fatalf("Create(%s): %v", d, err)
	}
	defer w.Cancel()
	if _, err := w.Write(p); err != nil {
		t.Fatalf("Write(%s): %v", d, err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatalf("Commit(%s): %v", d, err)
	}
}

// read returns the content of blob d through Open and checks that the size
// reported by Open agrees with Stat and with the bytes.
func read(t *testing.T, s blob.Store, d digest.Digest) []byte {
	t.Helper()
	size, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat(%s): %v", d, err)
	}
	r, osize, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading %s: %v", d, err)
	}
	if size != osize || int64(len(b)) != size {
		t.Fatalf("%s: Stat size %d, Open size %d, read %d bytes", d, size, osize, len(b))
	}
	return b
}

// walk returns every blob Walk reports, failing on duplicates.
func walk(t *testing.T, s blob.Store) map[digest.Digest]int64 {
	t.Helper()
	got := make(map[digest.Digest]int64)
	err := s.Walk(t.Context(), func(d digest.Digest, size int64) error {
		if _, dup := got[d]; dup {
			return fmt.Errorf("Walk reported %s twice", d)
		}
		got[d] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return got
}

// assertAbsent checks that d is visible through none of Stat, Open and Walk.
func assertAbsent(t *testing.T, s blob.Store, d digest.Digest) {
	t.Helper()
	if _, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound", d, err)
	}
	r, _, err := s.Open(t.Context(), d)
	if !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open(%s) = %v, want ErrNotFound", d, err)
	}
	if r != nil {
		r.Close()
	}
	if _, ok := walk(t, s)[d]; ok {
		t.Errorf("Walk reports %s", d)
	}
}

func testRoundTrip(t *testing.T, s blob.Store) {
	tests := []struct {
		name  string
		alg   digest.Algorithm
		size  int
		chunk int // bytes per Write call
	}{
		{"empty", digest.SHA256, 0, 1},
		{"one byte", digest.SHA256, 1, 1},
		{"small", digest.SHA256, 1000, 7},
		{"several MiB in odd chunks", digest.SHA256, 3<<20 + 5, 64<<10 + 3},
		{"sha512", digest.SHA512, 100 << 10, 4 << 10},
		{"sha512 empty", digest.SHA512, 0, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := content(uint64(i), tt.size)
			d := tt.alg.FromBytes(p)
			w, err := s.Create(t.Context(), d, int64(len(p)))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Cancel()
			for rest := p; len(rest) > 0; {
				n := min(tt.chunk, len(rest))
				if m, err := w.Write(rest[:n]); err != nil || m != n {
					t.Fatalf("Write = %d, %v; want %d, nil", m, err, n)
				}
				rest = rest[n:]
			}
			if _, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Stat before Commit = %v, want ErrNotFound", err)
			}
			if err := w.Commit(t.Context()); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if got := read(t, s, d); !bytes.Equal(got, p) {
				t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(p))
			}

			// The reader seeks and reads at offsets.
			r, _, err := s.Open(t.Context(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(len(p)) {
				t.Errorf("Seek(0, SeekEnd) = %d, %v; want %d", end, err, len(p))
			}
			if len(p) > 0 {
				mid := len(p) / 2
				if _, err := r.Seek(int64(mid), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				rest, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(rest, p[mid:]) {
					t.Errorf("read after Seek(%d): %d bytes, %v; want the tail", mid, len(rest), err)
				}
				buf := make([]byte, len(p)-mid)
				if n, err := r.ReadAt(buf, int64(mid)); n != len(buf) || (err != nil && err != io.EOF) || !bytes.Equal(buf, p[mid:]) {
					t.Errorf("ReadAt(%d) = %d, %v; want the tail", mid, n, err)
				}
			}
		})
	}
}

func testDigestMismatch(t *testing.T, s blob.Store) {
	p := content(1, 4096)
	for _, d := range []digest.Digest{
		digest.FromBytes(content(2, 4096)),
		digest.SHA512.FromBytes(content(2, 4096)),
	} {
		t.Run(d.Algorithm().String(), func(t *testing.T) {
			w, err := s.Create(t.Context(), d, int64(len(p)))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Cancel()
			if _, err := w.Write(p); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(t.Context()); !errors.Is(err, blob.ErrDigestMismatch) {
				t.Errorf("Commit = %v, want ErrDigestMismatch", err)
			}
			assertAbsent(t, s, d)
			if err := w.Cancel(); err != nil {
				t.Errorf("Cancel after failed Commit = %v", err)
			}
		})
	}
}

func testSizeMismatch(t *testing.T, s blob.Store) {
	p := content(3, 10000)
	d := digest.FromBytes(p)
	tests := []struct {
		name      string
		announced int64
		// writeErr: the Write of all of p fails with ErrSizeMismatch
		// before Commit.
		writeErr bool
	}{
		{"announced size too large", int64(len(p)) + 1, false},
		{"announced size far too large", 1 << 40, false},
		{"announced size too small", int64(len(p)) - 1, true},
		{"announced size zero", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := s.Create(t.Context(), d, tt.announced)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Cancel()
			// Two writes: the first fits in every case, the second
			// crosses the announced size when it is too small.
			_, err = w.Write(p[:len(p)/2])
			if err == nil {
				_, err = w.Write(p[len(p)/2:])
			}
			switch {
			case tt.writeErr && !errors.Is(err, blob.ErrSizeMismatch):
				t.Errorf("Write past the announced size = %v, want ErrSizeMismatch", err)
			case !tt.writeErr && err != nil:
				t.Fatalf("Write: %v", err)
			}
			if err := w.Commit(t.Context()); !errors.Is(err, blob.ErrSizeMismatch) {
				t.Errorf("Commit = %v, want ErrSizeMismatch", err)
			}
			assertAbsent(t, s, d)
		})
	}

	t.Run("written less than announced", func(t *testing.T) {
		w, err := s.Create(t.Context(), d, int64(len(p)))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Cancel()
		if _, err := w.Write(p[:len(p)-1]); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(t.Context()); !errors.Is(err, blob.ErrSizeMismatch) {
			t.Errorf("Commit = %v, want ErrSizeMismatch", err)
		}
		assertAbsent(t, s, d)
	})
}

func testUnknownSize(t *testing.T, s blob.Store) {
	p := content(4, 50000)
	d := digest.FromBytes(p)
	w, err := s.Create(t.Context(), d, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()
	for i := 0; i < len(p); i += 1000 {
		if _, err := w.Write(p[i : i+1000]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := read(t, s, d); !bytes.Equal(got, p) {
		t.Error("read back different bytes")
	}

	// Without a size, a wrong digest is still caught.
	other := digest.FromBytes(content(5, 10))
	w, err = s.Create(t.Context(), other, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("Commit = %v, want ErrDigestMismatch", err)
	}
	assertAbsent(t, s, other)
}

func testCommitExisting(t *testing.T, s blob.Store) {
	p := content(6, 3000)
	d := digest.FromBytes(p)
	put(t, s, d, p)
	put(t, s, d, p) // fails the test unless Commit succeeds
	if diff := cmp.Diff(map[digest.Digest]int64{d: int64(len(p))}, walk(t, s)); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}
	if got := read(t, s, d); !bytes.Equal(got, p) {
		t.Error("read back different bytes")
	}
}

func testCancelAfterCommit(t *testing.T, s blob.Store) {
	p := content(7, 100)
	d := digest.FromBytes(p)
	w, err := s.Create(t.Context(), d, int64(len(p)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.Cancel(); err != nil {
			t.Errorf("Cancel after Commit = %v", err)
		}
	}
	if got := read(t, s, d); !bytes.Equal(got, p) {
		t.Error("Cancel after Commit changed the blob")
	}
}

func testCancelDiscards(t *testing.T, s blob.Store) {
	p := content(8, 5000)
	d := digest.FromBytes(p)
	w, err := s.Create(t.Context(), d, int64(len(p)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.Cancel(); err != nil {
			t.Errorf("Cancel = %v", err)
		}
	}
	if _, err := w.Write(p); err == nil {
		t.Error("Write after Cancel succeeded")
	}
	if err := w.Commit(t.Context()); err == nil {
		t.Error("Commit after Cancel succeeded")
	}
	assertAbsent(t, s, d)
}

// testReadAtWhileWriting is the streaming-fill use case: one goroutine
// writes a blob as it arrives from upstream, and a reader serves the bytes
// written so far to a client before the write completes.
func testReadAtWhileWriting(t *testing.T, s blob.Store) {
	const chunks, chunk = 64, 32 << 10
	p := content(9, chunks*chunk)
	d := digest.FromBytes(p)
	w, err := s.Create(t.Context(), d, int64(len(p)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()

	// The channel has room for every progress report, so the writer never
	// waits for the reader and the two really overlap.
	written := make(chan int, chunks)
	var (
		wg       sync.WaitGroup
		writeErr error
	)
	wg.Go(func() {
		defer close(written)
		for i := range chunks {
			if _, err := w.Write(p[i*chunk : (i+1)*chunk]); err != nil {
				writeErr = err
				return
			}
			written <- (i + 1) * chunk
		}
	})

	buf := make([]byte, len(p))
	for n := range written {
		// The whole prefix, and the latest chunk at its own offset.
		if m, err := w.ReadAt(buf[:n], 0); m != n || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(%d bytes at 0) with %d written = %d, %v", n, n, m, err)
			continue
		}
		if !bytes.Equal(buf[:n], p[:n]) {
			t.Errorf("ReadAt of the first %d bytes returned different bytes", n)
		}
		last := buf[:chunk]
		if m, err := w.ReadAt(last, int64(n-chunk)); m != chunk || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v", chunk, n-chunk, m, err)
		} else if !bytes.Equal(last, p[n-chunk:n]) {
			t.Errorf("ReadAt at %d returned different bytes", n-chunk)
		}
	}
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("Write: %v", writeErr)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := read(t, s, d); !bytes.Equal(got, p) {
		t.Error("read back different bytes")
	}
}

func testConcurrentWriters(t *testing.T, s blob.Store) {
	const writers = 8
	p := content(10, 256<<10)
	d := digest.FromBytes(p)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			errs[i] = func() error {
				w, err := s.Create(t.Context(), d, int64(len(p)))
				if err != nil {
					return err
				}
				defer w.Cancel()
				for off := 0; off < len(p); off += 16 << 10 {
					if _, err := w.Write(p[off : off+16<<10]); err != nil {
						return err
					}
					runtime.Gosched()
				}
				return w.Commit(t.Context())
			}()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if diff := cmp.Diff(map[digest.Digest]int64{d: int64(len(p))}, walk(t, s)); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}
	if got := read(t, s, d); !bytes.Equal(got, p) {
		t.Error("read back different bytes")
	}
}

func testDelete(t *testing.T, s blob.Store) {
	p := content(11, 2000)
	d := digest.FromBytes(p)
	keep := content(12, 10)
	dk := digest.FromBytes(keep)
	put(t, s, d, p)
	put(t, s, dk, keep)

	if err := s.Delete(t.Context(), d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertAbsent(t, s, d)
	if err := s.Delete(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	never := digest.FromString("never stored")
	if err := s.Delete(t.Context(), never); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Delete(never stored) = %v, want ErrNotFound", err)
	}
	if got := read(t, s, dk); !bytes.Equal(got, keep) {
		t.Error("Delete affected another blob")
	}

	// A deleted blob can be stored again.
	put(t, s, d, p)
	if got := read(t, s, d); !bytes.Equal(got, p) {
		t.Error("read back different bytes after re-storing")
	}
}

func testWalk(t *testing.T, s blob.Store) {
	if diff := cmp.Diff(map[digest.Digest]int64{}, walk(t, s)); diff != "" {
		t.Errorf("Walk of an empty store (-want +got):\n%s", diff)
	}

	want := make(map[digest.Digest]int64)
	for i := range 20 {
		alg := digest.SHA256
		if i%4 == 0 {
			alg = digest.SHA512
		}
		p := content(uint64(100+i), i*37)
		d := alg.FromBytes(p)
		put(t, s, d, p)
		want[d] = int64(len(p))
	}

	// Writes that did not commit are not listed: in progress, cancelled,
	// failed.
	inProgress, err := s.Create(t.Context(), digest.FromString("in progress"), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer inProgress.Cancel()
	if _, err := inProgress.Write([]byte("in progress")); err != nil {
		t.Fatal(err)
	}
	cancelled, err := s.Create(t.Context(), digest.FromString("cancelled"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cancelled.Write([]byte("cancelled")); err != nil {
		t.Fatal(err)
	}
	if err := cancelled.Cancel(); err != nil {
		t.Fatal(err)
	}
	failed, err := s.Create(t.Context(), digest.FromString("failed"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failed.Write([]byte("something else")); err != nil {
		t.Fatal(err)
	}
	if err := failed.Commit(t.Context()); err == nil {
		t.Fatal("Commit with a wrong digest succeeded")
	}

	if diff := cmp.Diff(want, walk(t, s)); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}

	// An error from fn stops the walk and is returned.
	errStop := errors.New("stop")
	calls := 0
	err = s.Walk(t.Context(), func(digest.Digest, int64) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("Walk with a failing fn = %v after %d calls, want errStop after 1", err, calls)
	}
}

func testMalformedDigest(t *testing.T, s blob.Store) {
	hex := digest.FromString("x").Encoded()
	for _, d := range []digest.Digest{
		"",
		"sha256",
		"sha256:",
		":" + digest.Digest(hex),
		"sha256:abc",
		"sha256:" + digest.Digest(strings.ToUpper(hex)),
		"sha256:" + digest.Digest(hex) + "0",
		"sha256:" + digest.Digest(hex) + "\n",
		"sha256:" + digest.Digest(hex[:60]) + "/../",
		"sha256:../../../../../../../../../../../../../../../../../../../../etc",
		"SHA256:" + digest.Digest(hex),
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha512:" + digest.Digest(hex), // a sha256 encoding under sha512
	} {
		t.Run(fmt.Sprintf("%q", d), func(t *testing.T) {
			ctx := t.Context()
			if w, err := s.Create(ctx, d, -1); !errors.Is(err, blob.ErrUnsupportedDigest) {
				t.Errorf("Create = %v, want ErrUnsupportedDigest", err)
				if w != nil {
					w.Cancel()
				}
			}
			if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrUnsupportedDigest) {
				t.Errorf("Stat = %v, want ErrUnsupportedDigest", err)
			}
			if r, _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrUnsupportedDigest) {
				t.Errorf("Open = %v, want ErrUnsupportedDigest", err)
				if r != nil {
					r.Close()
				}
			}
			if err := s.Delete(ctx, d); !errors.Is(err, blob.ErrUnsupportedDigest) {
				t.Errorf("Delete = %v, want ErrUnsupportedDigest", err)
			}
		})
	}
}

func testReaderSurvivesDelete(t *testing.T, s blob.Store) {
	p := content(13, 300<<10)
	d := digest.FromBytes(p)
	put(t, s, d, p)
	r, size, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, len(p)/3)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertAbsent(t, s, d)
	tail, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading after Delete: %v", err)
	}
	if got := append(head, tail...); int64(len(got)) != size || !bytes.Equal(got, p) {
		t.Errorf("read %d bytes across Delete, want the %d written", len(got), len(p))
	}
	buf := make([]byte, 100)
	if n, err := r.ReadAt(buf, 1000); n != len(buf) || (err != nil && err != io.EOF) || !bytes.Equal(buf, p[1000:1100]) {
		t.Errorf("ReadAt after Delete = %d, %v", n, err)
	}
}
