package ocilayout

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/blob/blobtest"
	"github.com/wharf-mirror/wharf/internal/blob/fsstore"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/meta/metatest"
	"github.com/wharf-mirror/wharf/internal/meta/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testNow is the importer's clock in tests; microsecond precision, as the
// index keeps.
func testNow() time.Time { return time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC) }

// cache is a blob store with its index.
type cache struct {
	blobs blob.Store
	index meta.Index
}

func newCache() cache { return cache{blobs: blobtest.NewMemory(), index: metatest.NewMemory()} }

func (c cache) importer() *Importer {
	return &Importer{Blobs: c.blobs, Index: c.index, Now: testNow}
}

// store commits body to the blob store.
func (c cache) store(t testing.TB, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	w, err := c.blobs.Create(context.Background(), d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

// putBlob stores and records a blob, as the mirror does for a pulled layer.
func (c cache) putBlob(t testing.TB, body []byte) digest.Digest {
	t.Helper()
	d := c.store(t, body)
	if err := c.index.PutBlob(context.Background(), meta.Blob{Digest: d, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	return d
}

// putManifest stores and records a manifest with its refs and links it
// and its refs to up/repo (when named), as the mirror does for a pull.
func (c cache) putManifest(t testing.TB, up, repo, mediaType string, body []byte) digest.Digest {
	t.Helper()
	d := c.store(t, body)
	refs := refsOf(t, body)
	if err := c.index.PutManifest(context.Background(), meta.Manifest{Digest: d, MediaType: mediaType, Size: int64(len(body)), Refs: refs}); err != nil {
		t.Fatal(err)
	}
	if up != "" {
		if err := c.index.Link(context.Background(), up, repo, append([]digest.Digest{d}, refs...)...); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (c cache) tag(t testing.TB, up, repo, tag string, d digest.Digest) {
	t.Helper()
	if err := c.index.PutTag(context.Background(), meta.Tag{Upstream: up, Repo: repo, Name: tag, Digest: d, CheckedAt: testNow().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// refsOf is the test's own reading of what a manifest references (config,
// layers, child manifests), independent of the code under test.
func refsOf(t testing.TB, body []byte) []digest.Digest {
	t.Helper()
	var m struct {
		Config *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"config"`
		Layers, Manifests []struct {
			Digest digest.Digest `json:"digest"`
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	var refs []digest.Digest
	if m.Config != nil {
		refs = append(refs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		if !slices.Contains(refs, l.Digest) {
			refs = append(refs, l.Digest)
		}
	}
	for _, l := range m.Manifests {
		refs = append(refs, l.Digest)
	}
	return refs
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// pullImage caches img in c as a pull through the mirror does: manifest
// (linked with its refs), config, and the layers when layers is set.
func (c cache) pullImage(t testing.TB, up, repo string, img v1.Image, layers bool) digest.Digest {
	t.Helper()
	raw := must[[]byte](t)(img.RawManifest())
	mt := must[types.MediaType](t)(img.MediaType())
	d := c.putManifest(t, up, repo, string(mt), raw)
	c.putBlob(t, must[[]byte](t)(img.RawConfigFile()))
	if layers {
		for _, l := range must[[]v1.Layer](t)(img.Layers()) {
			rc := must[io.ReadCloser](t)(l.Compressed())
			body := must[[]byte](t)(io.ReadAll(rc))
			rc.Close()
			c.putBlob(t, body)
		}
	}
	return d
}

// pullIndex caches an index and, recursively, the children cached(i) asks
// for (all of them for nested indexes).
func (c cache) pullIndex(t testing.TB, up, repo string, idx v1.ImageIndex, cached func(i int) bool) digest.Digest {
	t.Helper()
	raw := must[[]byte](t)(idx.RawManifest())
	mt := must[types.MediaType](t)(idx.MediaType())
	d := c.putManifest(t, up, repo, string(mt), raw)
	im := must[*v1.IndexManifest](t)(idx.IndexManifest())
	for i, desc := range im.Manifests {
		if !cached(i) {
			continue
		}
		if desc.MediaType.IsIndex() {
			c.pullIndex(t, up, repo, must[v1.ImageIndex](t)(idx.ImageIndex(desc.Digest)), func(int) bool { return true })
		} else {
			c.pullImage(t, up, repo, must[v1.Image](t)(idx.Image(desc.Digest)), true)
		}
	}
	return d
}

// fixture is a cache filled by pulls, and the images to export from it.
type fixture struct {
	src    cache
	images []Image
	refs   []string // the references an import reports
	// missingChild is the child of the multi-arch index that is not
	// cached.
	missingChild digest.Digest
}

func rng(seed int64) random.Option { return random.WithSource(rand.NewSource(seed)) }

func newFixture(t testing.TB) fixture {
	t.Helper()
	f := fixture{src: newCache()}
	c := f.src

	// A single-arch OCI image, and a second one sharing its layers.
	nginx := must[v1.Image](t)(random.Image(2048, 2, rng(1)))
	nginx = mutate.ConfigMediaType(mutate.MediaType(nginx, types.OCIManifestSchema1), types.OCIConfigJSON)
	extraLayer := must[v1.Layer](t)(random.Layer(1024, types.OCILayer, rng(2)))
	extra := must[v1.Image](t)(mutate.AppendLayers(nginx, extraLayer))
	dNginx := c.pullImage(t, "docker.io", "library/nginx", nginx, true)
	c.tag(t, "docker.io", "library/nginx", "1.27", dNginx)
	dExtra := c.pullImage(t, "docker.io", "library/nginx", extra, true)
	c.tag(t, "docker.io", "library/nginx", "1.27-extra", dExtra)

	// A multi-arch index (Docker media types) with one platform pulled.
	app := must[v1.ImageIndex](t)(random.Index(1024, 1, 2, rng(3)))
	dApp := c.pullIndex(t, "quay.io", "org/app", app, func(i int) bool { return i == 0 })
	c.tag(t, "quay.io", "org/app", "v1", dApp)
	f.missingChild = digest.Digest(must[*v1.IndexManifest](t)(app.IndexManifest()).Manifests[1].Digest.String())

	// An image pulled by digest only.
	busybox := must[v1.Image](t)(random.Image(512, 1, rng(4)))
	dBusybox := c.pullImage(t, "docker.io", "library/busybox", busybox, true)

	// An index nesting another index.
	inner := must[v1.ImageIndex](t)(random.Index(512, 1, 2, rng(5)))
	outer := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: inner}), types.OCIImageIndex)
	dNested := c.pullIndex(t, "docker.io", "library/nested", outer, func(int) bool { return true })
	c.tag(t, "docker.io", "library/nested", "latest", dNested)

	// Content with no name (exported by digest from no repository).
	anon := must[v1.Image](t)(random.Image(256, 1, rng(6)))
	dAnon := c.pullImage(t, "", "", anon, true)

	f.images = []Image{
		{Upstream: "docker.io", Repo: "library/nginx", Tag: "1.27", Digest: dNginx},
		{Upstream: "docker.io", Repo: "library/nginx", Tag: "1.27-extra", Digest: dExtra},
		{Upstream: "quay.io", Repo: "org/app", Tag: "v1", Digest: dApp},
		{Upstream: "docker.io", Repo: "library/busybox", Digest: dBusybox},
		{Upstream: "docker.io", Repo: "library/nested", Tag: "latest", Digest: dNested},
		{Digest: dAnon},
	}
	f.refs = []string{
		"docker.io/library/nginx:1.27",
		"docker.io/library/nginx:1.27-extra",
		"quay.io/org/app:v1",
		"docker.io/library/busybox@" + dBusybox.String(),
		"docker.io/library/nested:latest",
	}
	return f
}

// archive plans and writes the fixture's export.
func (f fixture) archive(t testing.TB) (*Plan, []byte) {
	t.Helper()
	p, err := NewPlan(context.Background(), f.src.blobs, f.src.index, f.images)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.Write(context.Background(), &buf, nil); err != nil {
		t.Fatal(err)
	}
	return p, buf.Bytes()
}

// state is everything a cache holds, for comparison.
type state struct {
	Tags      []meta.Tag
	Manifests []meta.Manifest
	Blobs     []meta.Blob
	Links     []meta.Link
	Content   map[digest.Digest]int64
}

func snapshot(t testing.TB, c cache) state {
	t.Helper()
	ctx := context.Background()
	s := state{Content: make(map[digest.Digest]int64)}
	if err := c.blobs.Walk(ctx, func(d digest.Digest, size int64) error {
		s.Content[d] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	known := make(map[digest.Digest]bool)
	for d := range s.Content {
		known[d] = true
	}
	for _, m := range must[[]meta.ManifestAccess](t)(c.index.Manifests(ctx)) {
		s.Manifests = append(s.Manifests, m.Manifest)
		for _, r := range m.Refs {
			known[r] = true
		}
	}
	for _, b := range must[[]meta.BlobAccess](t)(c.index.Blobs(ctx)) {
		s.Blobs = append(s.Blobs, b.Blob)
	}
	for _, r := range must[[]meta.Repository](t)(c.index.Repositories(ctx, meta.RepositoryQuery{})) {
		for _, tg := range must[[]meta.Tag](t)(c.index.Tags(ctx, r.Upstream, r.Name)) {
			tg.CheckedAt = time.Time{}
			s.Tags = append(s.Tags, tg)
		}
		for d := range known {
			if must[bool](t)(c.index.Linked(ctx, r.Upstream, r.Name, d)) {
				s.Links = append(s.Links, meta.Link{Upstream: r.Upstream, Repo: r.Name, Digest: d})
			}
		}
	}
	return s
}

var stateOpts = cmp.Options{
	cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b meta.Link) bool {
		return a.Upstream+"\x00"+a.Repo+"\x00"+string(a.Digest) < b.Upstream+"\x00"+b.Repo+"\x00"+string(b.Digest)
	}),
	cmpopts.SortSlices(func(a, b meta.Tag) bool { return a.Upstream+a.Repo+a.Name < b.Upstream+b.Repo+b.Name }),
	cmpopts.SortSlices(func(a, b meta.Manifest) bool { return a.Digest < b.Digest }),
	cmpopts.SortSlices(func(a, b meta.Blob) bool { return a.Digest < b.Digest }),
}

// assertEmpty fails unless c holds no records and exactly the content
// want (nil: none).
func assertEmpty(t testing.TB, c cache, want map[digest.Digest]int64) {
	t.Helper()
	got := snapshot(t, c)
	if diff := cmp.Diff(state{Content: want}, got, stateOpts); diff != "" {
		t.Errorf("cache after failed import (-want +got):\n%s", diff)
	}
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	p, archive := f.archive(t)
	if int64(len(archive)) != p.Size {
		t.Fatalf("archive is %d bytes, Plan.Size %d", len(archive), p.Size)
	}
	if len(p.Incomplete) != 0 || !slices.Equal(p.Images, f.images) {
		t.Fatalf("plan: images %v, incomplete %v", p.Images, p.Incomplete)
	}
	want := snapshot(t, f.src)
	var content int64
	for _, size := range want.Content {
		content += size
	}
	if p.ContentBytes != content || p.Manifests+p.Blobs != len(want.Content) || p.Manifests != len(want.Manifests) {
		t.Errorf("plan: %d manifests, %d blobs, %d bytes; cache has %d manifests, %d digests, %d bytes",
			p.Manifests, p.Blobs, p.ContentBytes, len(want.Manifests), len(want.Content), content)
	}

	openSQLite := func(t *testing.T) meta.Index {
		x, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "index.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.Close() })
		return x
	}
	tests := []struct {
		name  string
		index func(t *testing.T) meta.Index
	}{
		{"memory", func(*testing.T) meta.Index { return metatest.NewMemory() }},
		{"sqlite", openSQLite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := cache{blobs: blobtest.NewMemory(), index: tt.index(t)}
			rep, err := dst.importer().Import(t.Context(), bytes.NewReader(archive))
			if err != nil {
				t.Fatal(err)
			}
			wantRep := Report{Images: f.refs, Manifests: p.Manifests, Blobs: p.Blobs, Bytes: p.ContentBytes}
			if diff := cmp.Diff(wantRep, rep); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, snapshot(t, dst), stateOpts); diff != "" {
				t.Errorf("imported cache differs from the exported one (-want +got):\n%s", diff)
			}
			tg, err := dst.index.Tag(t.Context(), "docker.io", "library/nginx", "1.27")
			if err != nil || !tg.CheckedAt.Equal(testNow()) {
				t.Errorf("tag: %+v, %v; want CheckedAt %v", tg, err, testNow())
			}

			// Importing again finds everything cached.
			rep, err = dst.importer().Import(t.Context(), bytes.NewReader(archive))
			if err != nil {
				t.Fatal(err)
			}
			wantRep.Skipped = p.Manifests + p.Blobs
			if diff := cmp.Diff(wantRep, rep); diff != "" {
				t.Errorf("second import report (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, snapshot(t, dst), stateOpts); diff != "" {
				t.Errorf("second import changed the cache (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteDeterministic(t *testing.T) {
	f := newFixture(t)
	_, a := f.archive(t)
	_, b := f.archive(t) // a second plan, too
	if !bytes.Equal(a, b) {
		t.Fatal("two exports of the same content differ")
	}
	p, _ := f.archive(t)
	var c bytes.Buffer
	var calls []int64
	if err := p.Write(t.Context(), &c, func(n int64) { calls = append(calls, n) }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, c.Bytes()) {
		t.Fatal("writing a plan twice gives different bytes")
	}
	if len(calls) == 0 || calls[len(calls)-1] != p.Size || !slices.IsSorted(calls) {
		t.Errorf("progress calls %v; want ascending, ending at %d", calls, p.Size)
	}

	// The archive is what the spec describes: USTAR headers, fixed times,
	// oci-layout first, sorted blobs, index.json last.
	var names []string
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Format != tar.FormatUSTAR || !hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: format %v, mtime %v", hdr.Name, hdr.Format, hdr.ModTime)
		}
		names = append(names, hdr.Name)
	}
	if names[0] != "oci-layout" || names[len(names)-1] != "index.json" || !slices.IsSorted(names[3:len(names)-1]) {
		t.Errorf("entries in the wrong order: %v", names)
	}
}

// TestLayoutReadable reads an export with go-containerregistry's layout
// package: proof that the format is the one other tools expect.
func TestLayoutReadable(t *testing.T) {
	f := newFixture(t)
	_, archive := f.archive(t)
	dir := untar(t, archive)

	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(f.images) {
		t.Fatalf("index.json has %d descriptors, want %d", len(im.Manifests), len(f.images))
	}
	for i, desc := range im.Manifests {
		img := f.images[i]
		if desc.Digest.String() != img.Digest.String() {
			t.Errorf("descriptor %d is %s, want %s", i, desc.Digest, img.Digest)
		}
		if img.Upstream != "" {
			ref := fullReference(img.Upstream, img.Repo, img.Tag, img.Digest)
			want := map[string]string{
				AnnotationUpstream: img.Upstream, AnnotationRepository: img.Repo,
				ocispec.AnnotationRefName: ref, "io.containerd.image.name": ref,
			}
			if img.Tag != "" {
				want[AnnotationTag] = img.Tag
			}
			if diff := cmp.Diff(want, desc.Annotations); diff != "" {
				t.Errorf("descriptor %d annotations (-want +got):\n%s", i, diff)
			}
		} else if desc.Annotations != nil {
			t.Errorf("unnamed descriptor %d has annotations %v", i, desc.Annotations)
		}
	}
	validated := 0
	var walk func(idx v1.ImageIndex, depth int)
	walk = func(idx v1.ImageIndex, depth int) {
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, desc := range im.Manifests {
			if _, err := os.Stat(filepath.Join(dir, "blobs", desc.Digest.Algorithm, desc.Digest.Hex)); err != nil {
				if depth == 0 || desc.Digest.String() != f.missingChild.String() {
					t.Errorf("%s is not in the archive: %v", desc.Digest, err)
				}
				continue
			}
			if desc.MediaType.IsIndex() {
				walk(must[v1.ImageIndex](t)(idx.ImageIndex(desc.Digest)), depth+1)
				continue
			}
			img := must[v1.Image](t)(idx.Image(desc.Digest))
			if err := validate.Image(img); err != nil {
				t.Errorf("image %s: %v", desc.Digest, err)
			}
			validated++
		}
	}
	walk(idx, 0)
	if want := 7; validated != want { // 2 nginx, 1 app, busybox, 2 nested, anon
		t.Errorf("validated %d images, want %d", validated, want)
	}
}

// untar extracts an archive into a new directory.
func untar(t *testing.T, archive []byte) string {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsLocal(hdr.Name) {
			t.Fatalf("entry %q escapes the directory", hdr.Name)
		}
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, must[[]byte](t)(io.ReadAll(tr)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPlan(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()

	// An image whose layer is not cached, an index with no child cached.
	partial := must[v1.Image](t)(random.Image(256, 2, rng(7)))
	dPartial := f.src.pullImage(t, "docker.io", "library/partial", partial, false)
	noChild := must[v1.ImageIndex](t)(random.Index(256, 1, 2, rng(8)))
	dNoChild := f.src.pullIndex(t, "docker.io", "library/nochild", noChild, func(int) bool { return false })

	tests := []struct {
		name           string
		images         []Image
		wantErr        error
		wantImages     []Image
		wantIncomplete []Image
	}{
		{
			name:       "duplicates once",
			images:     []Image{f.images[0], f.images[0], f.images[2]},
			wantImages: []Image{f.images[0], f.images[2]},
		},
		{
			name:           "incomplete image skipped",
			images:         []Image{{Upstream: "docker.io", Repo: "library/partial", Tag: "1", Digest: dPartial}, f.images[0]},
			wantImages:     []Image{f.images[0]},
			wantIncomplete: []Image{{Upstream: "docker.io", Repo: "library/partial", Tag: "1", Digest: dPartial}},
		},
		{
			name:           "index with no child cached",
			images:         []Image{{Digest: dNoChild}},
			wantIncomplete: []Image{{Digest: dNoChild}},
		},
		{
			name:    "manifest not cached",
			images:  []Image{f.images[0], {Digest: f.missingChild}},
			wantErr: ErrNotCached,
		},
		{
			name:    "malformed digest",
			images:  []Image{{Digest: "sha256:nope"}},
			wantErr: ErrNotCached,
		},
		{
			name: "nothing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPlan(ctx, f.src.blobs, f.src.index, tt.images)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewPlan: %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.wantImages, p.Images, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Images (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantIncomplete, p.Incomplete, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Incomplete (-want +got):\n%s", diff)
			}
			var buf bytes.Buffer
			if err := p.Write(ctx, &buf, nil); err != nil {
				t.Fatal(err)
			}
			if int64(buf.Len()) != p.Size {
				t.Errorf("wrote %d bytes, planned %d", buf.Len(), p.Size)
			}
		})
	}
}

// sizeStore reports a wrong size for one blob, as a store whose content
// changed between plan and write would.
type sizeStore struct {
	blob.Store
	d digest.Digest
}

func (s sizeStore) Open(ctx context.Context, d digest.Digest) (blob.Reader, int64, error) {
	r, size, err := s.Store.Open(ctx, d)
	if d == s.d {
		size++
	}
	return r, size, err
}

func TestWriteFails(t *testing.T) {
	f := newFixture(t)
	layer := f.src.putBlob(t, []byte("a layer"))
	cfg := f.src.putBlob(t, []byte("{}"))
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfg.String() + `","size":2},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + layer.String() + `","size":7}]}`)
	d := f.src.putManifest(t, "", "", ocispec.MediaTypeImageManifest, body)

	tests := []struct {
		name    string
		store   func() blob.Store
		ctx     func() context.Context
		wantErr error
	}{
		{
			name:    "size changed",
			store:   func() blob.Store { return sizeStore{Store: f.src.blobs, d: layer} },
			wantErr: blob.ErrSizeMismatch,
		},
		{
			name: "evicted",
			store: func() blob.Store {
				s := blobtest.NewMemory()
				c := cache{blobs: s}
				c.store(t, body)
				c.store(t, []byte("{}"))
				return s
			},
			wantErr: blob.ErrNotFound,
		},
		{
			name: "cancelled",
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				return ctx
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPlan(t.Context(), f.src.blobs, f.src.index, []Image{{Digest: d}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.store != nil {
				p.blobs = tt.store()
			}
			ctx := t.Context()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			if err := p.Write(ctx, io.Discard, nil); !errors.Is(err, tt.wantErr) {
				t.Errorf("Write: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// entry of an archive, for tests that rewrite one.
type tarEntry struct {
	hdr  tar.Header
	body []byte
}

func readEntries(t testing.TB, archive []byte) []tarEntry {
	t.Helper()
	var es []tarEntry
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, tarEntry{hdr: *hdr, body: must[[]byte](t)(io.ReadAll(tr))})
	}
}

func writeEntries(t testing.TB, es []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		hdr := e.hdr
		hdr.Size = int64(len(e.body))
		hdr.Format = tar.FormatUnknown
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rewrite applies fn to the entries of archive.
func rewrite(t testing.TB, archive []byte, fn func([]tarEntry) []tarEntry) []byte {
	t.Helper()
	return writeEntries(t, fn(readEntries(t, archive)))
}

// without drops the entries named name.
func without(name string) func([]tarEntry) []tarEntry {
	return func(es []tarEntry) []tarEntry {
		return slices.DeleteFunc(es, func(e tarEntry) bool { return e.hdr.Name == name })
	}
}

// replacing replaces the body of the entry named name.
func replacing(name string, body []byte) func([]tarEntry) []tarEntry {
	return func(es []tarEntry) []tarEntry {
		for i := range es {
			if es[i].hdr.Name == name {
				es[i].body = body
			}
		}
		return es
	}
}

// cancelReader cancels a context after n bytes were read.
type cancelReader struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(b []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	if len(b) > 512 {
		b = b[:512]
	}
	n, err := c.r.Read(b)
	c.n -= n
	return n, err
}

// failingRecord is an index whose Record fails.
type failingRecord struct{ meta.Index }

var errRecord = errors.New("record failed")

func (failingRecord) Record(context.Context, meta.Batch) error { return errRecord }

func TestImportRejects(t *testing.T) {
	f := newFixture(t)
	_, archive := f.archive(t)
	nginx := f.images[0].Digest
	nginxBody := must[[]byte](t)(readBlob(f.src.blobs, nginx))
	var nginxManifest ocispec.Manifest
	if err := json.Unmarshal(nginxBody, &nginxManifest); err != nil {
		t.Fatal(err)
	}
	layer := nginxManifest.Layers[1].Digest
	layerBody := must[[]byte](t)(readBlob(f.src.blobs, layer))
	corrupt := bytes.Clone(layerBody)
	corrupt[len(corrupt)/2] ^= 0xff
	// The archive of nginx alone: its layer is its only copy.
	nginxArchive := func() []byte {
		p := must[*Plan](t)(NewPlan(t.Context(), f.src.blobs, f.src.index, f.images[:1]))
		var buf bytes.Buffer
		if err := p.Write(t.Context(), &buf, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	indexJSON := readEntries(t, archive)[len(readEntries(t, archive))-1].body
	// The corrupt layer comes last, after every other blob was committed.
	corrupted := rewrite(t, archive, func(es []tarEntry) []tarEntry {
		es = replacing(blobPath(layer), corrupt)(es)
		i := slices.IndexFunc(es, func(e tarEntry) bool { return e.hdr.Name == blobPath(layer) })
		e := es[i]
		return append(slices.Delete(es, i, i+1), e)
	})
	// Cut inside a block, so that the stream ends mid-entry.
	truncated := archive[:len(archive)*2/3/512*512+100]

	tests := []struct {
		name    string
		archive []byte
		// reader wraps the archive reader; nil: as is.
		reader func(r io.Reader, cancel context.CancelFunc) io.Reader
		index  func(meta.Index) meta.Index
		// reserve: Reserve refuses the first blob of the archive and
		// accepts the others.
		reserve bool
		wantErr error
	}{
		{
			name:    "corrupt blob",
			archive: corrupted,
			wantErr: blob.ErrDigestMismatch,
		},
		{
			name:    "corrupt blob, reserve refused",
			archive: corrupted,
			reserve: true,
			wantErr: blob.ErrDigestMismatch,
		},
		{
			name:    "truncated",
			archive: truncated,
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "not a tar",
			archive: bytes.Repeat([]byte("wharf"), 1000),
			wantErr: ErrNotLayout,
		},
		{
			name:    "no oci-layout",
			archive: rewrite(t, archive, without("oci-layout")),
			wantErr: ErrNotLayout,
		},
		{
			name:    "oci-layout version 2",
			archive: rewrite(t, archive, replacing("oci-layout", []byte(`{"imageLayoutVersion":"2.0.0"}`))),
			wantErr: ErrNotLayout,
		},
		{
			name:    "oci-layout not JSON",
			archive: rewrite(t, archive, replacing("oci-layout", []byte(`1.0.0`))),
			wantErr: ErrNotLayout,
		},
		{
			name:    "no index.json",
			archive: rewrite(t, archive, without("index.json")),
			wantErr: ErrNotLayout,
		},
		{
			name:    "index.json too large",
			archive: rewrite(t, archive, replacing("index.json", append(bytes.Clone(indexJSON), bytes.Repeat([]byte(" "), 4<<20)...))),
			wantErr: ErrNotLayout,
		},
		{
			name: "index.json names a blob",
			archive: rewrite(t, archive, replacing("index.json", []byte(`{"schemaVersion":2,"manifests":[`+
				`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"`+layer.String()+`","size":1}]}`))),
			wantErr: ErrNotLayout,
		},
		{
			name:    "manifest missing",
			archive: rewrite(t, archive, without(blobPath(nginx))),
			wantErr: ErrIncomplete,
		},
		{
			name:    "layer missing",
			archive: rewrite(t, nginxArchive, without(blobPath(layer))),
			wantErr: ErrIncomplete,
		},
		{
			name: "manifest size wrong",
			archive: rewrite(t, archive, replacing("index.json", bytes.Replace(indexJSON,
				[]byte(`"size":`+strconv.Itoa(len(nginxBody))), []byte(`"size":1`), 1))),
			wantErr: ErrNotLayout,
		},
		{
			name:    "sparse blob",
			archive: sparseArchive(t, archive),
			wantErr: ErrNotLayout,
		},
		{
			name:    "cancelled",
			archive: archive,
			reader: func(r io.Reader, cancel context.CancelFunc) io.Reader {
				return &cancelReader{r: r, n: len(archive) / 2, cancel: cancel}
			},
			wantErr: context.Canceled,
		},
		{
			name:    "record fails",
			archive: archive,
			index:   func(x meta.Index) meta.Index { return failingRecord{x} },
			wantErr: errRecord,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newCache()
			// Content cached before the import stays.
			pre := dst.putBlob(t, []byte("cached before"))
			im := dst.importer()
			if tt.index != nil {
				im.Index = tt.index(dst.index)
			}
			var reserved, released []digest.Digest
			var refused digest.Digest
			if tt.reserve {
				for _, e := range readEntries(t, tt.archive) {
					if d, ok := blobDigest(e.hdr.Name); ok {
						refused = d
						break
					}
				}
				im.Reserve = func(ds ...digest.Digest) (func(), bool) {
					if len(ds) != 1 {
						t.Errorf("Reserve(%v): want one digest at a time", ds)
					}
					if slices.Contains(ds, refused) {
						return nil, false
					}
					reserved = append(reserved, ds...)
					return func() { released = append(released, ds...) }, true
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var r io.Reader = bytes.NewReader(tt.archive)
			if tt.reader != nil {
				r = tt.reader(r, cancel)
			}
			rep, err := im.Import(ctx, r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Import: %v, want %v", err, tt.wantErr)
			}
			if !cmp.Equal(rep, Report{}, cmpopts.EquateEmpty()) {
				t.Errorf("failed import reported %+v", rep)
			}
			// Nothing recorded; every blob the import committed is
			// gone again, except one Reserve refused.
			want := state{
				Content: map[digest.Digest]int64{pre: 13},
				Blobs:   []meta.Blob{{Digest: pre, Size: 13}},
			}
			if tt.reserve {
				want.Content[refused] = must[int64](t)(f.src.blobs.Stat(t.Context(), refused))
				if len(reserved) == 0 || !slices.Equal(reserved, released) {
					t.Errorf("reserved %v, released %v", reserved, released)
				}
			}
			if diff := cmp.Diff(want, snapshot(t, dst), stateOpts); diff != "" {
				t.Errorf("cache after failed import (-want +got):\n%s", diff)
			}
		})
	}
}

// sparseArchive prepends to archive a GNU sparse file in PAX form (format
// 0.1) that reads as 1 TiB of zeros from no data at all. archive/tar does
// not write sparse files, so the PAX header is made by hand: a regular entry
// whose type flag is patched to 'x' (POSIX pax, "Extended header").
func sparseArchive(t *testing.T, archive []byte) []byte {
	t.Helper()
	var records []byte
	for _, kv := range []string{"GNU.sparse.map=0,0", "GNU.sparse.numblocks=1", "GNU.sparse.size=1099511627776"} {
		rec := " " + kv + "\n"
		n := len(rec)
		for len(strconv.Itoa(n))+len(rec) != n {
			n = len(strconv.Itoa(n)) + len(rec)
		}
		records = append(records, strconv.Itoa(n)+rec...)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []tarEntry{
		{hdr: tar.Header{Name: "PaxHeaders/blob", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatUSTAR}, body: records},
		{hdr: tar.Header{Name: blobPath(digest.FromString("zeros")), Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatUSTAR}},
	} {
		e.hdr.Size = int64(len(e.body))
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	hdr := b[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ") // the checksum counts its own field as spaces
	sum := 0
	for _, c := range hdr {
		sum += int(c)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return append(b, archive...)
}

func readBlob(s blob.Store, d digest.Digest) ([]byte, error) {
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// TestImportAccepts covers archives other tools make and partial archives
// completed by the cache.
func TestImportAccepts(t *testing.T) {
	f := newFixture(t)
	p, archive := f.archive(t)
	want := snapshot(t, f.src)
	nginx := f.images[0].Digest
	var nginxManifest ocispec.Manifest
	if err := json.Unmarshal(must[[]byte](t)(readBlob(f.src.blobs, nginx)), &nginxManifest); err != nil {
		t.Fatal(err)
	}
	layer := nginxManifest.Layers[0]

	tests := []struct {
		name    string
		archive []byte
		// seed prepares the destination cache.
		seed        func(t *testing.T, c cache)
		wantSkipped int
		wantBytes   int64
	}{
		{
			name: "index.json first, blobs reversed, ./ names, no directories",
			archive: rewrite(t, archive, func(es []tarEntry) []tarEntry {
				es = slices.DeleteFunc(es, func(e tarEntry) bool { return e.hdr.Typeflag == tar.TypeDir })
				slices.Reverse(es)
				for i := range es {
					es[i].hdr.Name = "./" + es[i].hdr.Name
				}
				return es
			}),
			wantBytes: p.ContentBytes,
		},
		{
			name: "unknown entries ignored",
			archive: rewrite(t, archive, func(es []tarEntry) []tarEntry {
				return append(es,
					tarEntry{hdr: tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("[]")},
					tarEntry{hdr: tar.Header{Name: "blobs/sha256/._junk", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")},
					tarEntry{hdr: tar.Header{Name: "blobs/link", Typeflag: tar.TypeSymlink, Linkname: "x"}})
			}),
			wantBytes: p.ContentBytes,
		},
		{
			name: "duplicate entry",
			archive: rewrite(t, archive, func(es []tarEntry) []tarEntry {
				for _, e := range es {
					if e.hdr.Name == blobPath(layer.Digest) {
						return append(es, e)
					}
				}
				t.Fatal("layer not in archive")
				return nil
			}),
			wantBytes: p.ContentBytes,
		},
		{
			name:    "layer only in the cache",
			archive: rewrite(t, archive, without(blobPath(layer.Digest))),
			seed: func(t *testing.T, c cache) {
				c.putBlob(t, must[[]byte](t)(readBlob(f.src.blobs, layer.Digest)))
			},
			wantBytes: p.ContentBytes - layer.Size,
		},
		{
			name:    "layer already cached",
			archive: archive,
			seed: func(t *testing.T, c cache) {
				c.store(t, must[[]byte](t)(readBlob(f.src.blobs, layer.Digest)))
			},
			wantSkipped: 1,
			wantBytes:   p.ContentBytes,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newCache()
			if tt.seed != nil {
				tt.seed(t, dst)
			}
			rep, err := dst.importer().Import(t.Context(), bytes.NewReader(tt.archive))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Skipped != tt.wantSkipped || rep.Bytes != tt.wantBytes || !slices.Equal(rep.Images, f.refs) {
				t.Errorf("report %+v; want %d skipped, %d bytes, images %v", rep, tt.wantSkipped, tt.wantBytes, f.refs)
			}
			if diff := cmp.Diff(want, snapshot(t, dst), stateOpts); diff != "" {
				t.Errorf("imported cache (-want +got):\n%s", diff)
			}
		})
	}
}

// TestImportNames covers how images are named: wharf's annotations, the
// standard ones through Name, Known.
func TestImportNames(t *testing.T) {
	f := newFixture(t)
	_, archive := f.archive(t)
	// Only the standard annotations, as another tool writes them.
	standard := rewrite(t, archive, func(es []tarEntry) []tarEntry {
		i := len(es) - 1
		var idx ocispec.Index
		if err := json.Unmarshal(es[i].body, &idx); err != nil {
			t.Fatal(err)
		}
		for _, d := range idx.Manifests {
			delete(d.Annotations, AnnotationUpstream)
			delete(d.Annotations, AnnotationRepository)
			delete(d.Annotations, AnnotationTag)
		}
		es[i].body = must[[]byte](t)(json.Marshal(idx))
		return es
	})
	// name maps "quay.io/..." to the upstream "quay" and refuses the rest.
	name := func(ref string) (string, string, string, error) {
		rest, ok := strings.CutPrefix(ref, "quay.io/")
		if !ok {
			return "", "", "", errors.New("no upstream for " + ref)
		}
		repo, tag, _ := strings.Cut(rest, ":")
		return "quay", repo, tag, nil
	}

	tests := []struct {
		name       string
		archive    []byte
		configure  func(im *Importer)
		wantImages []string
	}{
		{
			name:       "wharf annotations",
			archive:    archive,
			wantImages: f.refs,
		},
		{
			name:       "unknown upstream",
			archive:    archive,
			configure:  func(im *Importer) { im.Known = func(up string) bool { return up == "quay.io" } },
			wantImages: []string{"quay.io/org/app:v1"},
		},
		{
			name:       "standard annotations without Name",
			archive:    standard,
			wantImages: nil,
		},
		{
			name:       "standard annotations through Name",
			archive:    standard,
			configure:  func(im *Importer) { im.Name = name },
			wantImages: []string{"quay/org/app:v1"},
		},
		{
			name: "invalid tag",
			archive: rewrite(t, archive, func(es []tarEntry) []tarEntry {
				i := len(es) - 1
				es[i].body = bytes.ReplaceAll(es[i].body, []byte(`"io.github.wharf-mirror.tag":"v1"`), []byte(`"io.github.wharf-mirror.tag":"v1/../x"`))
				return es
			}),
			wantImages: slices.DeleteFunc(slices.Clone(f.refs), func(s string) bool { return s == "quay.io/org/app:v1" }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newCache()
			im := dst.importer()
			if tt.configure != nil {
				tt.configure(im)
			}
			rep, err := im.Import(t.Context(), bytes.NewReader(tt.archive))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantImages, rep.Images, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
			// Content is imported whatever the names.
			got := snapshot(t, dst)
			if len(got.Manifests) != rep.Manifests || len(got.Blobs) != rep.Blobs {
				t.Errorf("recorded %d manifests, %d blobs; report says %d, %d", len(got.Manifests), len(got.Blobs), rep.Manifests, rep.Blobs)
			}
			var tags []string
			for _, tg := range got.Tags {
				tags = append(tags, tg.Upstream+"/"+tg.Repo+":"+tg.Name)
			}
			var wantTags []string
			for _, ref := range tt.wantImages {
				if !strings.Contains(ref, "@") {
					wantTags = append(wantTags, ref)
				}
			}
			slices.Sort(wantTags)
			slices.Sort(tags)
			if diff := cmp.Diff(wantTags, tags, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}
		})
	}
}

// gateReader blocks its first Read until gate is closed, after closing
// started.
type gateReader struct {
	r             io.Reader
	started, gate chan struct{}
	once          bool
}

func (g *gateReader) Read(b []byte) (int, error) {
	if !g.once {
		g.once = true
		close(g.started)
		<-g.gate
	}
	return g.r.Read(b)
}

// TestImportSerialised: a second import through the same Importer waits for
// the first, and gives up when its context ends.
func TestImportSerialised(t *testing.T) {
	f := newFixture(t)
	_, archive := f.archive(t)
	dst := newCache()
	im := dst.importer()

	first := &gateReader{r: bytes.NewReader(archive), started: make(chan struct{}), gate: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := im.Import(t.Context(), first)
		done <- err
	}()
	<-first.started

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := im.Import(ctx, bytes.NewReader(archive)); !errors.Is(err, context.Canceled) {
		t.Errorf("waiting import: %v, want %v", err, context.Canceled)
	}
	close(first.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rep, err := im.Import(t.Context(), bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != rep.Manifests+rep.Blobs {
		t.Errorf("after the first import, %+v skipped %d", rep, rep.Skipped)
	}
}

// FuzzImport feeds arbitrary archives to Import: it must never panic, and a
// failed import must leave the cache as it was.
func FuzzImport(f *testing.F) {
	fx := newFixture(f)
	p := must[*Plan](f)(NewPlan(context.Background(), fx.src.blobs, fx.src.index, fx.images[3:4]))
	var buf bytes.Buffer
	if err := p.Write(context.Background(), &buf, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(rewrite(f, buf.Bytes(), without("oci-layout")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, archive []byte) {
		dst := newCache()
		_, err := dst.importer().Import(context.Background(), bytes.NewReader(archive))
		if err != nil {
			assertEmpty(t, dst, nil)
		}
	})
}

// BenchmarkExportImport exports 256 MiB of random layers and imports them
// into an empty cache, through a pipe. Both caches use the filesystem store,
// so the figure is the one a server sees (hashing and disk writes included).
func BenchmarkExportImport(b *testing.B) {
	const layers, layerSize = 8, 32 << 20
	newFSCache := func(dir string) cache {
		s, err := fsstore.New(dir)
		if err != nil {
			b.Fatal(err)
		}
		return cache{blobs: s, index: metatest.NewMemory()}
	}
	src := newFSCache(b.TempDir())
	r := rand.New(rand.NewSource(1))
	var descs []ocispec.Descriptor
	for range layers {
		body := make([]byte, layerSize)
		r.Read(body)
		descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: src.putBlob(b, body), Size: layerSize})
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: src.putBlob(b, cfg), Size: int64(len(cfg))},
		Layers:    descs,
	}
	m.SchemaVersion = 2
	d := src.putManifest(b, "docker.io", "library/big", ocispec.MediaTypeImageManifest, must[[]byte](b)(json.Marshal(m)))
	images := []Image{{Upstream: "docker.io", Repo: "library/big", Tag: "1", Digest: d}}
	ctx := context.Background()
	root := b.TempDir()

	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p, err := NewPlan(ctx, src.blobs, src.index, images)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(p.Size)
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := p.Write(ctx, pw, nil)
			pw.CloseWithError(err)
			done <- err
		}()
		dir := filepath.Join(root, strconv.Itoa(i))
		dst := newFSCache(dir)
		_, err = dst.importer().Import(ctx, pr)
		pr.CloseWithError(io.ErrClosedPipe)
		if werr := <-done; werr != nil {
			b.Fatal(werr)
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
	}
}
