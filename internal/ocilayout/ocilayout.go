// Package ocilayout exports cached images to an OCI image layout tarball and
// imports such a tarball back into the cache, so that a cache can be seeded
// on a machine without network access (air gap) or moved between machines.
//
// The format is the OCI image layout (image-spec, image-layout.md): a file
// "oci-layout" holding {"imageLayoutVersion":"1.0.0"}, the content under
// "blobs/<alg>/<encoded>", and "index.json", an image index whose
// descriptors name the images. Every descriptor carries the standard
// reference annotations (org.opencontainers.image.ref.name and
// io.containerd.image.name, the full reference, as containerd, Docker and
// skopeo read them) and wharf's own annotations, which say exactly which
// configured upstream and repository the image belongs to.
//
// Invariants:
//   - An export is planned before its first byte is written (NewPlan), so its
//     exact length is known (Content-Length) and Write produces exactly that
//     many bytes or fails. The output is deterministic: the same plan over
//     the same content gives the same bytes (sorted entries, USTAR headers,
//     fixed modification time). Only complete images are exported: every
//     exported image manifest has its config and all its layers in the
//     archive.
//   - An import either records everything or nothing: content is written to
//     the blob store verified against its digest while it is read, and only
//     when the whole archive was read and checked is it recorded in the
//     index, in one meta.Index.Record transaction. On failure the blobs the
//     import itself committed are deleted again, so that an interrupted
//     import leaves nothing it added visible.
//   - Memory stays bounded whatever the size of the content: blobs are
//     streamed, only oci-layout, index.json and one manifest at a time (each
//     at most 4 MiB) are held in memory.
//   - Manifest records carry the same Refs the mirror computes for a manifest
//     pulled from upstream, so imported content is evicted and scoped to
//     repositories exactly like pulled content.
package ocilayout

import (
	// go-digest finds hash functions through crypto.Hash; these register
	// the algorithms content may be addressed by (image-spec
	// descriptor.md, "Registered algorithms").
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations on index.json descriptors.
//
// Besides these, every named image's descriptor carries the standard
// ocispec.AnnotationRefName and AnnotationContainerdName, both set to the full
// reference "docker.io/library/nginx:1.27" (or "...@sha256:..." when the image
// is exported by digest).
const (
	// AnnotationUpstream is the configured upstream name, e.g. "docker.io".
	AnnotationUpstream = "io.github.wharf-mirror.upstream"
	// AnnotationRepository is the repository within the upstream, e.g.
	// "library/nginx".
	AnnotationRepository = "io.github.wharf-mirror.repository"
	// AnnotationTag is the tag, e.g. "1.27"; absent for an image exported
	// by digest.
	AnnotationTag = "io.github.wharf-mirror.tag"
)

// annotationContainerdName is the annotation containerd (ctr import) and
// Docker (docker load) read the image name from.
const annotationContainerdName = "io.containerd.image.name"

// Sentinel errors; callers test with errors.Is.
var (
	// ErrNotCached reports (NewPlan) that a requested image's manifest is
	// not cached.
	ErrNotCached = errors.New("image not in the cache")
	// ErrNotLayout reports (Import) an archive that is not an OCI image
	// layout: oci-layout or index.json missing, too large or malformed, a
	// descriptor that is not a manifest, a malformed blob name.
	ErrNotLayout = errors.New("not an OCI image layout archive")
	// ErrIncomplete reports (Import) an image named in index.json whose
	// manifest, config or a layer is neither in the archive nor in the
	// cache.
	ErrIncomplete = errors.New("image incomplete in the archive")
)

const (
	// layoutFile and indexFile are the two fixed files of a layout
	// (image-layout.md, "oci-layout file" and "index.json file").
	layoutFile = "oci-layout"
	indexFile  = "index.json"
	// blobsDir holds the content, as blobs/<alg>/<encoded>
	// (image-layout.md, "Blobs").
	blobsDir = "blobs"

	// maxManifestSize bounds a manifest, oci-layout and index.json. It is
	// the limit registries and clients apply to manifests (distribution
	// spec, "Pushing Manifests": 4 MiB).
	maxManifestSize = 4 << 20

	// maxDepth bounds the nesting of indexes (index.json → index → index
	// → manifest). Real images nest once or twice; the bound keeps a
	// crafted archive from recursing without end.
	maxDepth = 8
)

// Manifest media types wharf can export and import: OCI (image-spec
// manifest.md, image-index.md) and Docker Image Manifest V2 Schema 2 with its
// manifest list. Schema 1 is not among them: the mirror refuses signed
// schema 1, and unsigned schema 1 has no config to export.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// isIndexType reports whether mt is an image index (or Docker manifest
// list): a manifest whose references are other manifests.
func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList
}

// isImageType reports whether mt is an image manifest: config plus layers.
func isImageType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest
}

// isManifestType reports whether mt is a manifest type this package handles.
func isManifestType(mt string) bool { return isIndexType(mt) || isImageType(mt) }

// manifestBody is what this package reads from a manifest, an index or a
// Docker manifest list: the union of their descriptor fields.
type manifestBody struct {
	MediaType string               `json:"mediaType"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	// Blobs is the descriptor list of the withdrawn OCI artifact manifest
	// (image-spec v1.1.0-rc); the mirror counts it among the references.
	Blobs   []ocispec.Descriptor `json:"blobs"`
	Subject *ocispec.Descriptor  `json:"subject"`
}

// parseManifest decodes a manifest body. It fails on anything that is not a
// JSON object, so that a corrupt manifest is reported rather than exported or
// recorded as referencing nothing.
func parseManifest(body []byte) (*manifestBody, error) {
	var m manifestBody
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	return &m, nil
}

// imageBlobs returns the descriptors an image manifest needs to be pulled:
// its config and its layers.
func (m *manifestBody) imageBlobs() []ocispec.Descriptor {
	out := make([]ocispec.Descriptor, 0, 1+len(m.Layers))
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	return append(out, m.Layers...)
}

// readManifest reads a manifest body of announced size from r, refusing one
// larger than maxManifestSize.
func readManifest(r io.Reader, size int64) ([]byte, error) {
	if size > maxManifestSize {
		return nil, fmt.Errorf("manifest of %d bytes exceeds the limit of %d", size, maxManifestSize)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return body, nil
}

// fullReference renders the reference of a named image the way users and
// the standard annotations write it: "upstream/repo:tag", or
// "upstream/repo@digest" for an image named by digest only.
func fullReference(upstream, repo, tag string, d digest.Digest) string {
	if tag != "" {
		return upstream + "/" + repo + ":" + tag
	}
	return upstream + "/" + repo + "@" + d.String()
}

// validName reports whether repo and tag (when not empty) are valid in the
// distribution spec's grammar ("Pulling manifests": <name> and <reference>),
// so that nothing the index cannot serve is recorded from an archive.
func validName(upstream, repo, tag string) bool {
	if upstream == "" || strings.ContainsAny(upstream, "/\x00") {
		return false
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return false
	}
	if tag == "" {
		return true
	}
	_, err = reference.WithTag(named, tag)
	return err == nil
}

// blobPath is the path of content d in the layout (image-layout.md,
// "Blobs": blobs/<alg>/<encoded>).
func blobPath(d digest.Digest) string {
	return blobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
}
