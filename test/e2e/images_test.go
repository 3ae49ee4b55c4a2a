//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Images here are real: every layer is a gzip'd tar archive that clients
// unpack (registrytest.RandomImage's layers are not). Content is unique per
// image name and per run, so no two scenarios share a blob.

// fixture is an image as seeded upstream, with everything the scenarios
// compare the clients' results with.
type fixture struct {
	Repo   string        // repository on the upstream, e.g. library/nginx
	Tag    string        // tag it was pushed under ("" for by digest only)
	Digest digest.Digest // the top-level manifest: an index for multi-arch
	Raw    []byte        // the top-level manifest's bytes
	// Image is the linux/amd64 image manifest (Digest itself for a
	// single-platform image); Config its config blob, which dockerd and
	// podman report as the image ID.
	Image  digest.Digest
	Config digest.Digest
	// Blobs are the config and layers of the linux/amd64 image: what an
	// amd64 client downloads. Other are the blobs only other platforms use:
	// what it must not download.
	Blobs []digest.Digest
	Other []digest.Digest
}

// ref is the fixture's reference under a registry (or mirror) prefix, by
// tag: "<base>/<repo>:<tag>".
func (f fixture) ref(base string) string { return base + "/" + f.Repo + ":" + f.Tag }

// refDigest is the reference by digest: "<base>/<repo>@<digest>".
func (f fixture) refDigest(base string) string { return base + "/" + f.Repo + "@" + f.Digest.String() }

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// created is the fixed creation time of every image and file.
var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// runNonce makes this run's content differ from any earlier run's.
var runNonce = func() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}()

// file is one regular file of a layer.
type file struct {
	name string
	data []byte
}

// smallFiles returns the files of layer i of image name: a text file naming
// both (unique content) and 4 KiB of pseudo-random bytes.
func smallFiles(name string, i int) []file {
	rnd := make([]byte, 4<<10)
	seededRand(name, uint64(i)).Read(rnd)
	return []file{
		{fmt.Sprintf("e2e/%s/layer-%02d.txt", name, i), fmt.Appendf(nil, "%s layer %d run %x\n", name, i, runNonce)},
		{fmt.Sprintf("e2e/%s/random-%02d.bin", name, i), rnd},
	}
}

// seededRand is a ChaCha8 stream keyed by the image name, a stream number and
// the run nonce.
func seededRand(name string, stream uint64) *mrand.ChaCha8 {
	var seed [32]byte
	d := digest.FromString(name)
	copy(seed[:], d.Encoded())
	binary.LittleEndian.PutUint64(seed[16:], stream)
	binary.LittleEndian.PutUint64(seed[24:], runNonce)
	return mrand.NewChaCha8(seed)
}

// layer returns a gzip'd tar layer of the files with media type mt.
func layer(t testing.TB, mt types.MediaType, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	dirs := map[string]bool{}
	for _, f := range files {
		for dir := parentDir(f.name); dir != "" && !dirs[dir]; dir = parentDir(dir) {
			dirs[dir] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) { // parents sort before children
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: created}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: created}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func parentDir(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return ""
}

// imageKind selects the manifest format.
type imageKind int

const (
	ociImage    imageKind = iota // OCI image manifest, OCI config and layers
	dockerImage                  // Docker schema2 manifest, config and layers
)

// buildImage makes an image of kind for platform with nLayers small layers
// plus the extra layers given.
func buildImage(t testing.TB, name string, kind imageKind, platform v1.Platform, nLayers int, extra ...[]file) v1.Image {
	t.Helper()
	lmt := types.OCILayer
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if kind == dockerImage {
		lmt = types.DockerLayer
		img = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.DockerManifestSchema2), types.DockerConfigJSON)
	}
	pname := name + "/" + platform.Architecture
	var adds []mutate.Addendum
	for i := range nLayers {
		adds = append(adds, mutate.Addendum{
			Layer:   layer(t, lmt, smallFiles(pname, i)...),
			History: v1.History{Created: v1.Time{Time: created}, CreatedBy: fmt.Sprintf("e2e layer %d", i)},
		})
	}
	for i, files := range extra {
		adds = append(adds, mutate.Addendum{
			Layer:   layer(t, lmt, files...),
			History: v1.History{Created: v1.Time{Time: created}, CreatedBy: fmt.Sprintf("e2e extra layer %d", i)},
		})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = platform.OS, platform.Architecture, platform.Variant
	cf.Created = v1.Time{Time: created}
	cf.Config.Cmd = []string{"/bin/true"}
	cf.Config.Labels = map[string]string{"org.wharf-mirror.e2e": name}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// buildIndex makes an OCI index of an OCI image for linux/amd64 and one for
// linux/arm64/v8.
func buildIndex(t testing.TB, name string, nLayers int) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range []v1.Platform{amd64, arm64} {
		p := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        buildImage(t, name, ociImage, p, nLayers),
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return idx
}

// bigFiles is one file of size pseudo-random (incompressible) bytes: gzip
// leaves the layer at least that large.
func bigFiles(name string, size int) []file {
	data := make([]byte, size)
	seededRand(name, 1<<32).Read(data)
	return []file{{fmt.Sprintf("e2e/%s/big.bin", name), data}}
}

// seedImage pushes img to u under repo:tag and describes it.
func seedImage(t *testing.T, u *upstream, repo, tag string, img v1.Image) fixture {
	t.Helper()
	d := u.reg.PushImage(t, repo, tag, img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{Repo: repo, Tag: tag, Digest: d, Raw: raw, Image: d}
	f.Config, f.Blobs = imageBlobs(t, img)
	return f
}

// seedIndex pushes idx (and its images) to u under repo:tag and describes
// it; the linux/amd64 image is the one clients on this machine pull.
func seedIndex(t *testing.T, u *upstream, repo, tag string, idx v1.ImageIndex) fixture {
	t.Helper()
	d := u.reg.PushIndex(t, repo, tag, idx)
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{Repo: repo, Tag: tag, Digest: d, Raw: raw}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, blobs := imageBlobs(t, img)
		if desc.Platform != nil && desc.Platform.OS == amd64.OS && desc.Platform.Architecture == amd64.Architecture {
			f.Image, f.Config, f.Blobs = digest.Digest(desc.Digest.String()), cfg, blobs
		} else {
			f.Other = append(f.Other, blobs...)
		}
	}
	if f.Image == "" {
		t.Fatalf("index %s has no linux/amd64 image", d)
	}
	return f
}

// hashOf converts a go-containerregistry digest.
func hashOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

func imageBlobs(t *testing.T, img v1.Image) (digest.Digest, []digest.Digest) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg := hashOf(m.Config.Digest)
	blobs := []digest.Digest{cfg}
	for _, l := range m.Layers {
		blobs = append(blobs, hashOf(l.Digest))
	}
	return cfg, blobs
}

// artifactType is the type of the referrer the suite attaches to images.
const artifactType = "application/vnd.wharf-mirror.e2e.sbom.v1+json"

// seedReferrer pushes an OCI artifact manifest whose subject is subj (in
// repo on u): an SBOM-like blob under artifactType. The config is "{}"
// with artifactType as its media type as well (image-spec v1.1,
// "Guidelines for Artifact Usage": registries that derive a referrer's type
// from config.mediaType, as go-containerregistry's does, then report the
// same type). It returns the artifact's digest and bytes.
func seedReferrer(t *testing.T, u *upstream, repo string, subj fixture) (digest.Digest, []byte) {
	t.Helper()
	sbom := fmt.Appendf(nil, `{"subject":%q,"run":"%x"}`, subj.Digest, runNonce)
	emptyCfg := ocispec.DescriptorEmptyJSON
	emptyCfg.MediaType = artifactType
	u.reg.PushBlob(t, repo, emptyCfg.Data)
	sd := u.reg.PushBlob(t, repo, sbom)
	var mt struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(subj.Raw, &mt); err != nil {
		t.Fatal(err)
	}
	art := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       ocispec.Descriptor{MediaType: emptyCfg.MediaType, Digest: emptyCfg.Digest, Size: emptyCfg.Size},
		Layers:       []ocispec.Descriptor{{MediaType: "application/spdx+json", Digest: sd, Size: int64(len(sbom))}},
		Subject:      &ocispec.Descriptor{MediaType: mt.MediaType, Digest: subj.Digest, Size: int64(len(subj.Raw))},
		Annotations:  map[string]string{"org.opencontainers.image.created": created.Format(time.RFC3339)},
	}
	raw, err := json.Marshal(art)
	if err != nil {
		t.Fatal(err)
	}
	return u.reg.PushManifest(t, repo, "", ocispec.MediaTypeImageManifest, raw), raw
}
