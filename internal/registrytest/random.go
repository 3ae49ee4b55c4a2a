package registrytest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// chunkSize is the unit of synthetic content: chunk i of a blob is the
// ChaCha8 stream keyed by (seed, stream, i), so any offset can be produced
// without generating what precedes it (Range requests, Seek).
const chunkSize = 64 << 10

// randomBlob is synthetic content that is never held in memory: its bytes are
// regenerated from the key whenever they are read.
type randomBlob struct {
	seed   uint64
	stream uint64 // distinguishes the layers of one image
	size   int64
}

// Size implements content.
func (b randomBlob) Size() int64 { return b.size }

// Open implements content.
func (b randomBlob) Open() io.ReadSeeker { return &randomReader{blob: b, cur: -1} }

// chunk fills dst (at most chunkSize bytes) with the start of chunk i.
func (b randomBlob) chunk(i int64, dst []byte) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], b.seed)
	binary.LittleEndian.PutUint64(key[8:], b.stream)
	binary.LittleEndian.PutUint64(key[16:], uint64(i))
	copy(key[24:], "wharfrt1")
	_, _ = rand.NewChaCha8(key).Read(dst)
}

// chunkLen is the length of chunk i (the last one may be short).
func (b randomBlob) chunkLen(i int64) int {
	return int(min(chunkSize, b.size-i*chunkSize))
}

func (b randomBlob) chunks() int64 { return (b.size + chunkSize - 1) / chunkSize }

// digest hashes the content once, at construction. Generation runs on a
// second goroutine so that ChaCha8 and SHA-256, which run at similar speeds,
// overlap: a 256 MiB layer costs roughly one pass of the slower of the two.
func (b randomBlob) digest() digest.Digest {
	const depth = 3
	full := make(chan []byte, depth)
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, chunkSize)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(full)
		for i := range b.chunks() {
			buf := (<-free)[:b.chunkLen(i)]
			b.chunk(i, buf)
			full <- buf
		}
	})
	h := sha256.New()
	for buf := range full {
		h.Write(buf)
		free <- buf[:cap(buf)]
	}
	wg.Wait()
	return digest.NewDigest(digest.SHA256, h)
}

// randomReader reads a randomBlob sequentially, generating one chunk at a
// time; it is what http.ServeContent reads when the blob is served.
type randomReader struct {
	blob randomBlob
	off  int64
	buf  []byte // chunk cur
	cur  int64  // index of the chunk in buf, -1 for none
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.off >= r.blob.size {
		return 0, io.EOF
	}
	i := r.off / chunkSize
	if i != r.cur {
		if r.buf == nil {
			r.buf = make([]byte, chunkSize)
		}
		r.buf = r.buf[:r.blob.chunkLen(i)]
		r.blob.chunk(i, r.buf)
		r.cur = i
	}
	n := copy(p, r.buf[r.off-i*chunkSize:])
	r.off += int64(n)
	return n, nil
}

var errNegativeSeek = errors.New("registrytest: seek to a negative offset")

func (r *randomReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.blob.size
	}
	if offset < 0 {
		return 0, errNegativeSeek
	}
	r.off = offset
	return offset, nil
}

// randomLayer is a v1.Layer over a randomBlob. Its bytes are not a tar
// archive and not compressed, whatever its media type says: a mirror moves
// layers by digest and never looks inside.
type randomLayer struct {
	blob      randomBlob
	digest    v1.Hash
	mediaType types.MediaType
}

func (l *randomLayer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID is the digest itself: the content is its own "uncompressed" form.
func (l *randomLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *randomLayer) Compressed() (io.ReadCloser, error)   { return io.NopCloser(l.blob.Open()), nil }
func (l *randomLayer) Uncompressed() (io.ReadCloser, error) { return io.NopCloser(l.blob.Open()), nil }
func (l *randomLayer) Size() (int64, error)                 { return l.blob.size, nil }
func (l *randomLayer) MediaType() (types.MediaType, error)  { return l.mediaType, nil }

// mediaSet is the family of media types an image is written in.
type mediaSet struct{ manifest, config, layer types.MediaType }

var (
	dockerMedia = mediaSet{types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer}
	ociMedia    = mediaSet{types.OCIManifestSchema1, types.OCIConfigJSON, types.OCIUncompressedLayer}
)

// syntheticImage is a v1.Image whose manifest and config are computed once;
// layers are randomLayers, so PushImage can store them without reading them.
type syntheticImage struct {
	media       mediaSet
	layers      []*randomLayer
	config      *v1.ConfigFile
	rawConfig   []byte
	manifest    *v1.Manifest
	rawManifest []byte
	digest      v1.Hash
}

// seedLabel records the seed in the config so that images without layers
// still differ between seeds.
const seedLabel = "org.wharf.registrytest.seed"

func newRandomImage(seed uint64, media mediaSet, platform v1.Platform, sizes []int64) (*syntheticImage, error) {
	img := &syntheticImage{media: media}
	cfg := &v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Variant:      platform.Variant,
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}},
		Config:       v1.Config{Labels: map[string]string{seedLabel: strconv.FormatUint(seed, 10)}},
	}
	m := &v1.Manifest{SchemaVersion: 2, MediaType: media.manifest, Layers: []v1.Descriptor{}}
	for i, size := range sizes {
		if size < 0 {
			return nil, fmt.Errorf("registrytest: layer %d has negative size %d", i, size)
		}
		b := randomBlob{seed: seed, stream: uint64(i), size: size}
		h, err := v1.NewHash(b.digest().String())
		if err != nil {
			return nil, err
		}
		img.layers = append(img.layers, &randomLayer{blob: b, digest: h, mediaType: media.layer})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: media.layer, Size: size, Digest: h})
	}
	rawConfig, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	m.Config = v1.Descriptor{MediaType: media.config, Size: int64(len(rawConfig)), Digest: sha256Hash(rawConfig)}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img.config, img.rawConfig = cfg, rawConfig
	img.manifest, img.rawManifest = m, rawManifest
	img.digest = sha256Hash(rawManifest)
	return img, nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

func (i *syntheticImage) Layers() ([]v1.Layer, error) {
	ls := make([]v1.Layer, len(i.layers))
	for n, l := range i.layers {
		ls[n] = l
	}
	return ls, nil
}

func (i *syntheticImage) MediaType() (types.MediaType, error) { return i.media.manifest, nil }
func (i *syntheticImage) Size() (int64, error)                { return int64(len(i.rawManifest)), nil }
func (i *syntheticImage) ConfigName() (v1.Hash, error)        { return i.manifest.Config.Digest, nil }
func (i *syntheticImage) ConfigFile() (*v1.ConfigFile, error) { return i.config.DeepCopy(), nil }
func (i *syntheticImage) RawConfigFile() ([]byte, error)      { return slices.Clone(i.rawConfig), nil }
func (i *syntheticImage) Digest() (v1.Hash, error)            { return i.digest, nil }
func (i *syntheticImage) Manifest() (*v1.Manifest, error)     { return i.manifest.DeepCopy(), nil }
func (i *syntheticImage) RawManifest() ([]byte, error)        { return slices.Clone(i.rawManifest), nil }

// ConfigLayer lets go-containerregistry's partial.ConfigLayer (used by
// remote.Write) upload the config without re-serialising it.
func (i *syntheticImage) ConfigLayer() (v1.Layer, error) {
	return static.NewLayer(i.rawConfig, i.media.config), nil
}

func (i *syntheticImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if h == i.manifest.Config.Digest {
		return i.ConfigLayer()
	}
	for _, l := range i.layers {
		if l.digest == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("registrytest: image has no layer %s", h)
}

func (i *syntheticImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) { return i.LayerByDigest(h) }

// syntheticIndex is an OCI image index over syntheticImages.
type syntheticIndex struct {
	images      map[v1.Hash]*syntheticImage
	manifest    *v1.IndexManifest
	rawManifest []byte
	digest      v1.Hash
}

func (x *syntheticIndex) MediaType() (types.MediaType, error)         { return types.OCIImageIndex, nil }
func (x *syntheticIndex) Digest() (v1.Hash, error)                    { return x.digest, nil }
func (x *syntheticIndex) Size() (int64, error)                        { return int64(len(x.rawManifest)), nil }
func (x *syntheticIndex) RawManifest() ([]byte, error)                { return slices.Clone(x.rawManifest), nil }
func (x *syntheticIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return nil, errNotInIndex(h) }

func (x *syntheticIndex) IndexManifest() (*v1.IndexManifest, error) {
	return x.manifest.DeepCopy(), nil
}

func (x *syntheticIndex) Image(h v1.Hash) (v1.Image, error) {
	if img, ok := x.images[h]; ok {
		return img, nil
	}
	return nil, errNotInIndex(h)
}

func errNotInIndex(h v1.Hash) error { return fmt.Errorf("registrytest: index has no manifest %s", h) }

// RandomImage returns a Docker schema2 image with a small JSON config
// (linux/amd64) and one layer per size, each of that many deterministic
// pseudo-random bytes with the Docker layer media type (the bytes are not a
// tar archive and not gzip; a mirror never looks inside). The same seed and
// sizes always give the same image; different seeds give different images.
//
// Layer bytes are never held in memory: they are generated from math/rand/v2's
// ChaCha8 each time they are read, and once at construction to compute the
// digest. PushImage stores the generator, not the bytes, so a 256 MiB layer
// costs the registry no memory either.
func RandomImage(t testing.TB, seed uint64, layerSizes ...int64) v1.Image {
	t.Helper()
	img, err := newRandomImage(seed, dockerMedia, v1.Platform{OS: "linux", Architecture: "amd64"}, layerSizes)
	if err != nil {
		t.Fatalf("RandomImage: %v", err)
	}
	return img
}

// RandomIndex returns an OCI image index with one small OCI image (two
// layers of 1 KiB and 4 KiB) per platform, in the order given. A platform is
// "os/arch" or "os/arch/variant", e.g. "linux/amd64", "linux/arm/v7". The
// result is deterministic per seed and platform list.
func RandomIndex(t testing.TB, seed uint64, platforms ...string) v1.ImageIndex {
	t.Helper()
	x := &syntheticIndex{
		images:   map[v1.Hash]*syntheticImage{},
		manifest: &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}},
	}
	for i, p := range platforms {
		platform, err := parsePlatform(p)
		if err != nil {
			t.Fatalf("RandomIndex: %v", err)
		}
		img, err := newRandomImage(childSeed(seed, i), ociMedia, platform, []int64{1 << 10, 4 << 10})
		if err != nil {
			t.Fatalf("RandomIndex: %v", err)
		}
		x.images[img.digest] = img
		x.manifest.Manifests = append(x.manifest.Manifests, v1.Descriptor{
			MediaType: ociMedia.manifest,
			Size:      int64(len(img.rawManifest)),
			Digest:    img.digest,
			Platform:  &platform,
		})
	}
	raw, err := json.Marshal(x.manifest)
	if err != nil {
		t.Fatalf("RandomIndex: %v", err)
	}
	x.rawManifest, x.digest = raw, sha256Hash(raw)
	return x
}

// childSeed derives the seed of the i-th image of an index (SplitMix64
// finaliser), so that indexes with different seeds share no images.
func childSeed(seed uint64, i int) uint64 {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return v1.Platform{}, fmt.Errorf("platform %q is not os/arch[/variant]", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// bytesContent is stored content held in memory (configs, manifests' blobs,
// layers of images that are not synthetic).
type bytesContent []byte

func (b bytesContent) Size() int64         { return int64(len(b)) }
func (b bytesContent) Open() io.ReadSeeker { return bytes.NewReader(b) }
