package registrytest

import (
	"bytes"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

func TestRandomImageDeterministic(t *testing.T) {
	sizes := []int64{0, 1, chunkSize - 1, chunkSize, 3*chunkSize + 17}
	a, b := RandomImage(t, 7, sizes...), RandomImage(t, 7, sizes...)
	other := RandomImage(t, 8, sizes...)
	da, _ := a.Digest()
	db, _ := b.Digest()
	do, _ := other.Digest()
	if da != db {
		t.Errorf("same seed, digests %s and %s", da, db)
	}
	if da == do {
		t.Errorf("seeds 7 and 8 give the same image %s", da)
	}
	if noLayers1, noLayers2 := RandomImage(t, 1), RandomImage(t, 2); mustDigest(t, noLayers1) == mustDigest(t, noLayers2) {
		t.Error("layerless images of different seeds are equal")
	}

	mt, _ := a.MediaType()
	m, _ := a.Manifest()
	if mt != types.DockerManifestSchema2 || m.Config.MediaType != types.DockerConfigJSON {
		t.Errorf("media types %s, %s", mt, m.Config.MediaType)
	}
	raw, _ := a.RawManifest()
	if digest.FromBytes(raw).String() != da.String() {
		t.Error("digest is not the manifest's hash")
	}
	rawCfg, _ := a.RawConfigFile()
	if digest.FromBytes(rawCfg).String() != m.Config.Digest.String() || int64(len(rawCfg)) != m.Config.Size {
		t.Error("config descriptor does not describe the config")
	}
	cfg, _ := a.ConfigFile()
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.RootFS.DiffIDs) != len(sizes) {
		t.Errorf("config %+v", cfg)
	}

	layersA, _ := a.Layers()
	layersB, _ := b.Layers()
	layersO, _ := other.Layers()
	seen := map[v1.Hash]bool{}
	for i, l := range layersA {
		d, _ := l.Digest()
		if m.Layers[i].Digest != d || m.Layers[i].Size != sizes[i] || m.Layers[i].MediaType != types.DockerLayer {
			t.Errorf("layer %d descriptor %+v", i, m.Layers[i])
		}
		if seen[d] && sizes[i] != 0 {
			t.Errorf("layer %d repeats an earlier layer", i)
		}
		seen[d] = true
		bytesA, bytesB := layerBytes(t, l), layerBytes(t, layersB[i])
		if int64(len(bytesA)) != sizes[i] || !bytes.Equal(bytesA, bytesB) {
			t.Errorf("layer %d: %d bytes, equal across calls: %v", i, len(bytesA), bytes.Equal(bytesA, bytesB))
		}
		if got := digest.FromBytes(bytesA).String(); got != d.String() {
			t.Errorf("layer %d hashes to %s, digest says %s", i, got, d)
		}
		if sizes[i] > 0 && bytes.Equal(bytesA, layerBytes(t, layersO[i])) {
			t.Errorf("layer %d equal across seeds", i)
		}
		byDigest, err := a.LayerByDigest(d)
		if err != nil || byDigest != l {
			t.Errorf("LayerByDigest(%s): %v", d, err)
		}
	}
	if _, err := a.LayerByDigest(v1.Hash{Algorithm: "sha256", Hex: "00"}); err == nil {
		t.Error("LayerByDigest of an unknown digest succeeded")
	}
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func layerBytes(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	return readAll(t, rc)
}

// TestRandomReaderSeek: reading from any offset gives the same bytes as
// reading the whole stream, so ranges served from a synthetic blob are right.
func TestRandomReaderSeek(t *testing.T) {
	b := randomBlob{seed: 3, stream: 1, size: 3*chunkSize + 5}
	full := readAll(t, b.Open())
	for _, off := range []int64{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 2*chunkSize + 100, b.size - 1, b.size} {
		r := b.Open()
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 300)
		n, err := io.ReadFull(r, got)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			t.Fatal(err)
		}
		if want := full[off:min(off+300, b.size)]; !bytes.Equal(got[:n], want) {
			t.Errorf("at %d: bytes differ", off)
		}
	}
	r := b.Open()
	if end, _ := r.Seek(-5, io.SeekEnd); end != b.size-5 {
		t.Errorf("SeekEnd: %d", end)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("negative seek succeeded")
	}
	if d := b.digest(); d != digest.FromBytes(full) {
		t.Errorf("digest %s, bytes hash to %s", d, digest.FromBytes(full))
	}
}

func TestRandomIndex(t *testing.T) {
	platforms := []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "windows/amd64"}
	a, b := RandomIndex(t, 5, platforms...), RandomIndex(t, 5, platforms...)
	if da, db := mustIndexDigest(t, a), mustIndexDigest(t, b); da != db {
		t.Errorf("same seed, digests %s and %s", da, db)
	}
	if mustIndexDigest(t, a) == mustIndexDigest(t, RandomIndex(t, 6, platforms...)) {
		t.Error("different seeds give the same index")
	}
	if mt, _ := a.MediaType(); mt != types.OCIImageIndex {
		t.Errorf("media type %s", mt)
	}
	im, _ := a.IndexManifest()
	var got []string
	for _, desc := range im.Manifests {
		p := desc.Platform.OS + "/" + desc.Platform.Architecture
		if desc.Platform.Variant != "" {
			p += "/" + desc.Platform.Variant
		}
		got = append(got, p)
		img, err := a.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 || mt != desc.MediaType {
			t.Errorf("child media type %s, descriptor %s", mt, desc.MediaType)
		}
		cfg, _ := img.ConfigFile()
		if cfg.OS != desc.Platform.OS || cfg.Architecture != desc.Platform.Architecture || cfg.Variant != desc.Platform.Variant {
			t.Errorf("child config platform %s/%s/%s, descriptor %s", cfg.OS, cfg.Architecture, cfg.Variant, p)
		}
		if size, _ := img.Size(); size != desc.Size {
			t.Errorf("child size %d, descriptor %d", size, desc.Size)
		}
	}
	if diff := cmp.Diff(platforms, got); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
	raw, _ := a.RawManifest()
	if digest.FromBytes(raw).String() != mustIndexDigest(t, a).String() {
		t.Error("digest is not the index's hash")
	}
}

func mustIndexDigest(t *testing.T, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRandomRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		call func(testing.TB)
	}{
		{"negative layer size", func(tb testing.TB) { RandomImage(tb, 1, -1) }},
		{"platform without arch", func(tb testing.TB) { RandomIndex(tb, 1, "linux") }},
		{"platform with empty part", func(tb testing.TB) { RandomIndex(tb, 1, "linux//v7") }},
		{"platform too long", func(tb testing.TB) { RandomIndex(tb, 1, "a/b/c/d") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				tc.call(ft)
			}()
			<-done
			if ft.fatal == "" {
				t.Error("accepted")
			}
		})
	}
}

// TestLargeRandomImage builds and serves a 256 MiB layer. Neither
// RandomImage nor PushImage may materialise it (they keep a generator), and a
// range at its end must match the generator.
func TestLargeRandomImage(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes a 256 MiB layer")
	}
	const size = 256 << 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	img := RandomImage(t, 99, size)
	reg := New(t, Options{Redirect: RedirectBlobs})
	reg.PushImage(t, "big", "v1", img)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
		t.Errorf("building and pushing allocated %d MiB; the layer was materialised", alloc>>20)
	}

	l := img.(*syntheticImage).layers[0]
	c := &http.Client{Transport: newTransport(t)} // follows the redirect
	u := reg.URL() + "/v2/big/blobs/" + l.digest.String()
	resp, _ := do(t, c, http.MethodHead, u)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		t.Errorf("HEAD: %s, Content-Length %d", resp.Status, resp.ContentLength)
	}
	resp, tail := do(t, c, http.MethodGet, u, "Range", "bytes="+strconv.Itoa(size-(1<<20))+"-")
	r := l.blob.Open()
	if _, err := r.Seek(size-(1<<20), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(tail, readAll(t, r)) {
		t.Errorf("tail range: %s, %d bytes", resp.Status, len(tail))
	}
}

func BenchmarkRandomImage256MiB(b *testing.B) {
	b.SetBytes(256 << 20)
	for b.Loop() {
		RandomImage(b, uint64(b.N), 256<<20)
	}
}

func BenchmarkServeRandomLayer(b *testing.B) {
	const size = 64 << 20
	blob := randomBlob{seed: 1, size: size}
	b.SetBytes(size)
	for b.Loop() {
		if _, err := io.Copy(io.Discard, io.LimitReader(blob.Open(), size)); err != nil {
			b.Fatal(err)
		}
	}
}
