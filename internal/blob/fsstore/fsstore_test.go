package fsstore_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/blob/blobtest"
	"github.com/wharf-mirror/wharf/internal/blob/fsstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStore(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return newStore(t, t.TempDir()) })
}

func newStore(t testing.TB, root string) *fsstore.Store {
	t.Helper()
	s, err := fsstore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s blob.Store, p []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(p)
	w, err := s.Create(t.Context(), d, int64(len(p)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	return d
}

func walk(t *testing.T, s blob.Store) map[digest.Digest]int64 {
	t.Helper()
	got := make(map[digest.Digest]int64)
	if err := s.Walk(t.Context(), func(d digest.Digest, size int64) error {
		got[d] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A crash mid-write leaves only files in tmp/; New removes them and keeps
// committed blobs.
func TestNewRemovesLeftovers(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	kept := put(t, s, []byte("committed before the crash"))

	// An abandoned write, as a kill -9 would leave it.
	w, err := s.Create(t.Context(), digest.FromString("abandoned"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("aband")); err != nil {
		t.Fatal(err)
	}
	// Other debris in tmp/, including a directory.
	if err := os.WriteFile(filepath.Join(root, "tmp", "ingest-stale"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp", "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if len(dirNames(t, filepath.Join(root, "tmp"))) != 3 {
		t.Fatalf("tmp/ holds %v, want 3 entries", dirNames(t, filepath.Join(root, "tmp")))
	}

	s = newStore(t, root)
	if got := dirNames(t, filepath.Join(root, "tmp")); len(got) != 0 {
		t.Errorf("tmp/ after New holds %v, want nothing", got)
	}
	if diff := cmp.Diff(map[digest.Digest]int64{kept: 26}, walk(t, s)); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}
	// The abandoned writer's file is gone; cancelling it is still clean.
	if err := w.Cancel(); err != nil {
		t.Errorf("Cancel of a writer whose file New removed = %v", err)
	}
}

func TestWalkIgnoresForeignFiles(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	real := put(t, s, []byte("real"))
	hex := digest.FromString("foreign").Encoded()
	wrongShard := "00"
	if hex[:2] == wrongShard {
		wrongShard = "11"
	}
	foreign := map[string]string{
		"file":                  "blobs/sha256/" + hex[:2] + "/" + hex + ".partial",
		"upper case":            "blobs/sha256/" + hex[:2] + "/" + strings.ToUpper(hex),
		"wrong shard":           "blobs/sha256/" + wrongShard + "/" + hex,
		"short name":            "blobs/sha256/" + hex[:2] + "/" + hex[:10],
		"unknown algorithm":     "blobs/md5/d4/d41d8cd98f00b204e9800998ecf8427e",
		"file in algorithm dir": "blobs/sha256/" + hex,
		"long shard":            "blobs/sha256/" + hex[:3] + "/" + hex,
		"file in blobs":         "blobs/README",
		"sha512 name in sha256": "blobs/sha256/" + digest.SHA512.FromString("x").Encoded()[:2] + "/" + digest.SHA512.FromString("x").Encoded(),
	}
	for _, rel := range foreign {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("foreign"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	// A directory with a valid digest name.
	if err := os.MkdirAll(filepath.Join(root, "blobs", "sha256", hex[:2], hex), 0o755); err != nil {
		t.Fatal(err)
	}

	if diff := cmp.Diff(map[digest.Digest]int64{real: 4}, walk(t, s)); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}
	if _, err := s.Stat(t.Context(), digest.NewDigestFromEncoded(digest.SHA256, hex)); err == nil {
		t.Error("Stat of a digest whose path is a directory succeeded")
	}
}

func TestLayoutAndPermissions(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	tests := []struct {
		name string
		alg  digest.Algorithm
	}{
		{"sha256", digest.SHA256},
		{"sha512", digest.SHA512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := []byte("layout " + tt.name)
			d := tt.alg.FromBytes(p)
			w, err := s.Create(t.Context(), d, int64(len(p)))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Cancel()
			if _, err := w.Write(p); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(root, "blobs", tt.alg.String(), d.Encoded()[:2], d.Encoded())
			if got := s.Path(d); got != want {
				t.Errorf("Path = %q, want %q", got, want)
			}
			fi, err := os.Stat(want)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != 0o444 {
				t.Errorf("mode = %v, want -r--r--r--", fi.Mode())
			}
			got, err := os.ReadFile(want)
			if err != nil || !bytes.Equal(got, p) {
				t.Errorf("file holds %q, %v; want %q", got, err, p)
			}
		})
	}
	if got := dirNames(t, filepath.Join(root, "tmp")); len(got) != 0 {
		t.Errorf("tmp/ after commits holds %v", got)
	}
	if got := s.Path("sha256:../../etc/passwd"); got != "" {
		t.Errorf("Path of a malformed digest = %q, want empty", got)
	}
}

// Open returns the *os.File so that the HTTP layer can use sendfile.
func TestOpenReturnsFile(t *testing.T) {
	s := newStore(t, t.TempDir())
	d := put(t, s, []byte("sendfile"))
	r, size, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.(*os.File); !ok {
		t.Errorf("Open returned %T, want *os.File", r)
	}
	if size != 8 {
		t.Errorf("size = %d, want 8", size)
	}
}

// A failed check leaves nothing behind, not even a temporary file.
func TestFailedCommitLeavesNoFile(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	d := digest.FromString("expected")
	w, err := s.Create(t.Context(), d, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("other")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("Commit = %v, want ErrDigestMismatch", err)
	}
	if got := dirNames(t, filepath.Join(root, "tmp")); len(got) != 0 {
		t.Errorf("tmp/ holds %v", got)
	}
	if _, err := os.Stat(s.Path(d)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("blob file exists after a failed Commit: %v", err)
	}
}

func BenchmarkWrite(b *testing.B) {
	const size, chunk = 64 << 20, 1 << 20
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(i * 7)
	}
	d := digest.FromBytes(p)
	s := newStore(b, b.TempDir())
	b.SetBytes(size)
	for b.Loop() {
		w, err := s.Create(b.Context(), d, size)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += chunk {
			if _, err := w.Write(p[off : off+chunk]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Commit(b.Context()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(b.Context(), d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
