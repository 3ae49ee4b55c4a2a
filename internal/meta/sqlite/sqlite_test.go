package sqlite_test

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/meta/metatest"
	"github.com/wharf-mirror/wharf/internal/meta/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIndex(t *testing.T) {
	metatest.Run(t, func(t *testing.T) meta.Index { return open(t, dbPath(t)) })
}

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "index.db") }

func open(t testing.TB, path string) *sqlite.Index {
	t.Helper()
	x, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := dbPath(t)
	at := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	tag := meta.Tag{Upstream: "docker.io", Repo: "library/alpine", Name: "3", Digest: digest.FromString("m"), CheckedAt: at}
	m := meta.Manifest{Digest: tag.Digest, MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 500,
		Refs: []digest.Digest{digest.FromString("c"), digest.FromString("l")}}
	b := meta.Blob{Digest: digest.FromString("l"), Size: 3 << 20}

	x := open(t, path)
	for _, err := range []error{
		x.PutTag(ctx, tag),
		x.PutManifest(ctx, m),
		x.PutBlob(ctx, b),
		x.Link(ctx, tag.Upstream, tag.Repo, m.Digest, b.Digest),
		x.Touch(ctx, at, b.Digest),
		x.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	x = open(t, path)
	defer x.Close()
	gotTag, err := x.Tag(ctx, tag.Upstream, tag.Repo, tag.Name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tag, gotTag); diff != "" {
		t.Errorf("Tag after reopen (-want +got):\n%s", diff)
	}
	gotM, err := x.Manifest(ctx, m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, gotM); diff != "" {
		t.Errorf("Manifest after reopen (-want +got):\n%s", diff)
	}
	gotB, err := x.Blob(ctx, b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, gotB); diff != "" {
		t.Errorf("Blob after reopen (-want +got):\n%s", diff)
	}
	if ok, err := x.Linked(ctx, tag.Upstream, tag.Repo, b.Digest); err != nil || !ok {
		t.Errorf("Linked after reopen = %v, %v", ok, err)
	}
	if got, err := x.LastAccess(ctx, b.Digest); err != nil || !got.Equal(at) {
		t.Errorf("LastAccess after reopen = %v, %v; want %v", got, err, at)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := dbPath(t)
	open(t, path).Close()

	// What a future version of wharf would leave behind.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var current int
	if err := db.QueryRow("PRAGMA user_version").Scan(&current); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", current+7)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	x, err := sqlite.Open(t.Context(), path)
	if err == nil {
		x.Close()
		t.Fatal("Open of a newer database succeeded")
	}
	if !errors.Is(err, sqlite.ErrSchemaTooNew) {
		t.Errorf("Open = %v, want ErrSchemaTooNew", err)
	}
	var ve *sqlite.SchemaVersionError
	if !errors.As(err, &ve) {
		t.Fatalf("Open = %v, want a *SchemaVersionError", err)
	}
	if want := (sqlite.SchemaVersionError{Database: current + 7, Supported: current}); *ve != want {
		t.Errorf("SchemaVersionError = %+v, want %+v", *ve, want)
	}
}

func TestOpenFails(t *testing.T) {
	tests := []struct {
		name string
		path func(t *testing.T) string
	}{
		{"directory", func(t *testing.T) string { return t.TempDir() }},
		{"missing parent", func(t *testing.T) string { return filepath.Join(t.TempDir(), "no", "such", "dir", "index.db") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := sqlite.Open(t.Context(), tt.path(t))
			if err == nil {
				x.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

// A path with characters that mean something in a URI still names a file.
func TestOpenOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?x=1#frag%20", "index.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	x := open(t, path)
	defer x.Close()
	if err := x.PutBlob(t.Context(), meta.Blob{Digest: digest.FromString("b"), Size: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database is not at %q: %v", path, err)
	}
}

// BenchmarkLookup measures the per-request hot path: resolve a tag, then
// check that the digest is linked to the repository.
func BenchmarkLookup(b *testing.B) {
	ctx := b.Context()
	x := open(b, dbPath(b))
	defer x.Close()
	const tags = 1000
	for i := range tags {
		d := digest.FromString(fmt.Sprint(i))
		repo := fmt.Sprint("library/repo", i%50)
		if err := x.PutTag(ctx, meta.Tag{Upstream: "docker.io", Repo: repo, Name: fmt.Sprint("v", i), Digest: d, CheckedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
		if err := x.Link(ctx, "docker.io", repo, d); err != nil {
			b.Fatal(err)
		}
	}
	lookup := func(i int) {
		repo := fmt.Sprint("library/repo", i%50)
		tag, err := x.Tag(ctx, "docker.io", repo, fmt.Sprint("v", i))
		if err != nil {
			b.Fatal(err)
		}
		if ok, err := x.Linked(ctx, "docker.io", repo, tag.Digest); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			lookup(i % tags)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				lookup(i % tags)
				i++
			}
		})
	})
}

// FuzzRepositoriesMatch checks that Match selects the same repositories in
// SQLite as in the in-memory index, whatever the pattern: ASCII letters fold,
// nothing else does, and no character is a wildcard.
func FuzzRepositoriesMatch(f *testing.F) {
	ctx := f.Context()
	x := open(f, dbPath(f))
	defer x.Close()
	mem := metatest.NewMemory()
	defer mem.Close()
	for _, r := range [][2]string{
		{"docker.io", "library/nginx"},
		{"docker.io", "Library/NGINX"},
		{"ghcr.io", "owner/app_1"},
		{"ghcr.io", "owner/app%1"},
		{"quay.io", "ÉCOLE/été"},
		{"registry.k8s.io", "pause"},
	} {
		for _, idx := range []meta.Index{x, mem} {
			if err := idx.Link(ctx, r[0], r[1], digest.FromString(r[1])); err != nil {
				f.Fatal(err)
			}
		}
	}
	for _, seed := range []string{"", "nginx", "NGINX", "io/lib", "_", "%", "app_", "é", "É", "école", "\x00", "/"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, match string) {
		q := meta.RepositoryQuery{Match: match}
		want, err := mem.Repositories(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := x.Repositories(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Repositories(Match: %q) (-memory +sqlite):\n%s", match, diff)
		}
	})
}
