package ocilayout

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
)

// Image is one image to export.
//
// An image is named when Upstream and Repo are both set: its index.json
// descriptor then carries the reference annotations, and an import records
// its tag (when Tag is set) and links its content to the repository. An
// unnamed image is exported as content only, and Tag is ignored.
type Image struct {
	Upstream, Repo string        // "" for unnamed content
	Tag            string        // "" when exported by digest
	Digest         digest.Digest // the manifest (or index)
}

func (img Image) named() bool { return img.Upstream != "" && img.Repo != "" }

// Plan is an export decided up front, so that its exact size is known before
// the first byte.
//
// A Plan is immutable once made and may be written any number of times, also
// concurrently. It describes the cache at the time NewPlan ran: content
// evicted in between makes Write fail (the caller pins or reserves content
// when that matters).
type Plan struct {
	Images     []Image // exported (complete ones), in the order asked, each once
	Incomplete []Image // skipped: an image manifest whose config or a layer is not cached
	// Manifests and Blobs count the entries under blobs/: manifests
	// (indexes included) and everything else (configs, layers), each digest
	// once.
	Manifests, Blobs int
	// ContentBytes is the sum of the sizes of all content written (the
	// entries under blobs/), without tar headers, oci-layout and index.json.
	ContentBytes int64
	// Size is the exact length of the tar stream Write produces.
	Size int64

	blobs   blob.Store
	entries []entry // sorted by digest
	index   []byte  // index.json
}

// entry is one piece of content in the archive.
type entry struct {
	digest digest.Digest
	size   int64
}

// layoutBody is the content of oci-layout (image-layout.md, "oci-layout
// file"). Kept byte-exact so that exports are reproducible.
const layoutBody = `{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`

// exportTime is the modification time of every entry, in Unix seconds:
// fixed, so that two exports of the same content are byte-identical. The
// Unix epoch is what reproducible-build tooling uses when no
// SOURCE_DATE_EPOCH is given.
const exportTime = 0

// tarBlock is the tar block size: headers are one block, contents are padded
// to whole blocks, and the archive ends with two zero blocks (POSIX ustar).
const tarBlock = 512

// tarEntrySize is the number of bytes a USTAR entry of size bytes occupies.
func tarEntrySize(size int64) int64 {
	return tarBlock + (size+tarBlock-1)/tarBlock*tarBlock
}

// The directory entries written before the content, so that tools
// extracting the archive create them with sensible modes.
const (
	dirBlobs  = blobsDir + "/"
	dirSHA256 = blobsDir + "/sha256/"
	numDirs   = 2
)

// NewPlan walks every image: the manifest, for an index every CACHED child
// (uncached children of an index are normal — a client pulled one platform —
// and are left out), for an image manifest its config and layers (all must
// be cached, else the image goes to Incomplete). Each digest once.
// ErrNotCached when an image's own manifest is not cached.
//
// "Cached" means the bytes are in blobs with the size the referencing
// descriptor announces; a requested image's manifest also needs its index
// record, which gives its media type. A child manifest of an index that is
// cached but itself incomplete is left out like an uncached one; an index
// none of whose children is complete goes to Incomplete, and so does an
// image whose manifest type cannot be exported or that holds content not
// addressed by sha256 (a USTAR name holds at most 100 bytes after its
// directory, too short for blobs/sha512/<128 hex digits>).
func NewPlan(ctx context.Context, blobs blob.Store, index meta.Index, images []Image) (*Plan, error) {
	p := &Plan{blobs: blobs}
	w := walker{blobs: blobs}
	content := make(map[digest.Digest]bool) // digest → is a manifest
	sizes := make(map[digest.Digest]int64)
	seen := make(map[Image]bool)
	idx := ocispec.Index{
		// image-index.md: schemaVersion "MUST be 2".
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{},
	}
	for _, img := range images {
		if seen[img] {
			continue
		}
		seen[img] = true
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := img.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrNotCached, img.Digest, err)
		}
		rec, err := index.Manifest(ctx, img.Digest)
		if errors.Is(err, meta.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrNotCached, img.Digest)
		}
		if err != nil {
			return nil, fmt.Errorf("index lookup %s: %w", img.Digest, err)
		}
		size, err := w.stat(ctx, rec.Digest)
		if err != nil {
			return nil, err
		}
		if size != rec.Size {
			return nil, fmt.Errorf("%w: %s (index says %d bytes, store has %d)", ErrNotCached, img.Digest, rec.Size, size)
		}
		got, complete, err := w.manifest(ctx, rec.Digest, rec.MediaType, size, 0)
		if err != nil {
			return nil, err
		}
		if !complete {
			p.Incomplete = append(p.Incomplete, img)
			continue
		}
		for d, e := range got {
			content[d] = content[d] || e.manifest
			sizes[d] = e.size
		}
		p.Images = append(p.Images, img)
		idx.Manifests = append(idx.Manifests, descriptorOf(img, rec.MediaType, size))
	}

	p.entries = make([]entry, 0, len(content))
	for d, isManifest := range content {
		p.entries = append(p.entries, entry{digest: d, size: sizes[d]})
		if isManifest {
			p.Manifests++
		} else {
			p.Blobs++
		}
		p.ContentBytes += sizes[d]
	}
	slices.SortFunc(p.entries, func(a, b entry) int { return compareDigests(a.digest, b.digest) })

	var err error
	if p.index, err = json.Marshal(idx); err != nil {
		return nil, fmt.Errorf("encode index.json: %w", err)
	}
	p.Size = tarEntrySize(int64(len(layoutBody))) + numDirs*tarBlock
	for _, e := range p.entries {
		p.Size += tarEntrySize(e.size)
	}
	p.Size += tarEntrySize(int64(len(p.index))) + 2*tarBlock
	return p, nil
}

// descriptorOf is the index.json descriptor of an exported image.
func descriptorOf(img Image, mediaType string, size int64) ocispec.Descriptor {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: img.Digest, Size: size}
	if !img.named() {
		return desc
	}
	tag := img.Tag
	ref := fullReference(img.Upstream, img.Repo, tag, img.Digest)
	desc.Annotations = map[string]string{
		AnnotationUpstream:        img.Upstream,
		AnnotationRepository:      img.Repo,
		ocispec.AnnotationRefName: ref,
		annotationContainerdName:  ref,
	}
	if tag != "" {
		desc.Annotations[AnnotationTag] = tag
	}
	return desc
}

// compareDigests orders digests by their string form, which is the order of
// the entries in the archive.
func compareDigests(a, b digest.Digest) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// walker finds the content of the images of a plan.
type walker struct {
	blobs blob.Store
}

// planned is content found for one image.
type planned struct {
	size     int64
	manifest bool
}

// stat returns the stored size of d, wrapping ErrNotCached when it is not
// stored.
func (w *walker) stat(ctx context.Context, d digest.Digest) (int64, error) {
	size, err := w.blobs.Stat(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return 0, fmt.Errorf("%w: %s", ErrNotCached, d)
	}
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", d, err)
	}
	return size, nil
}

// cached reports whether desc's content is stored with the size desc
// announces and can be exported.
func (w *walker) cached(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if desc.Digest.Validate() != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return false, nil
	}
	size, err := w.blobs.Stat(ctx, desc.Digest)
	if errors.Is(err, blob.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", desc.Digest, err)
	}
	return size == desc.Size, nil
}

// manifest collects manifest d (stored, size bytes) and what it needs, and
// reports whether it is complete. An incomplete manifest contributes
// nothing.
func (w *walker) manifest(ctx context.Context, d digest.Digest, mediaType string, size int64, depth int) (map[digest.Digest]planned, bool, error) {
	if !isManifestType(mediaType) || d.Algorithm() != digest.SHA256 || depth > maxDepth {
		return nil, false, nil
	}
	body, err := w.read(ctx, d, size)
	if err != nil {
		return nil, false, err
	}
	m, err := parseManifest(body)
	if err != nil {
		return nil, false, fmt.Errorf("manifest %s: %w", d, err)
	}
	got := map[digest.Digest]planned{d: {size: size, manifest: true}}
	if isImageType(mediaType) {
		for _, desc := range m.imageBlobs() {
			ok, err := w.cached(ctx, desc)
			if err != nil || !ok {
				return nil, false, err
			}
			if _, dup := got[desc.Digest]; !dup {
				got[desc.Digest] = planned{size: desc.Size}
			}
		}
		return got, true, nil
	}
	// An index: keep the children that are cached and complete. A client
	// pulling one platform caches only that child.
	children := 0
	for _, desc := range m.Manifests {
		if !isManifestType(desc.MediaType) {
			continue
		}
		if ok, err := w.cached(ctx, desc); err != nil {
			return nil, false, err
		} else if !ok {
			continue
		}
		sub, complete, err := w.manifest(ctx, desc.Digest, desc.MediaType, desc.Size, depth+1)
		if err != nil {
			return nil, false, err
		}
		if !complete {
			continue
		}
		children++
		for cd, e := range sub {
			prev := got[cd]
			got[cd] = planned{size: e.size, manifest: prev.manifest || e.manifest}
		}
	}
	return got, children > 0 || len(m.Manifests) == 0, nil
}

// read returns the stored bytes of manifest d.
func (w *walker) read(ctx context.Context, d digest.Digest, size int64) ([]byte, error) {
	r, stored, err := w.blobs.Open(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotCached, d)
	}
	if err != nil {
		return nil, fmt.Errorf("open manifest %s: %w", d, err)
	}
	defer r.Close()
	if stored != size {
		return nil, fmt.Errorf("manifest %s: %w: expected %d bytes, store has %d", d, blob.ErrSizeMismatch, size, stored)
	}
	body, err := readManifest(r, size)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	return body, nil
}

// copyBufferSize is the chunk in which content is copied: large enough for
// throughput, small enough that cancellation and progress are noticed
// often. Write allocates one per call.
const copyBufferSize = 256 << 10

// progressStep is how many bytes pass between two progress calls.
const progressStep = 1 << 20

// Write streams the archive: "oci-layout", then "blobs/sha256/<hex>" for
// every digest (sorted), then "index.json" (one descriptor per Image, with
// annotations), USTAR headers only, fixed mtime, so the output is
// deterministic and exactly p.Size bytes. Memory is O(1) in content size. A
// blob whose size in the store differs from the plan fails the write.
// progress (may be nil) is called with bytes written so far, at most every
// 1 MiB or so, and once at the end with p.Size.
//
// The directory entries "blobs/" and "blobs/sha256/" follow oci-layout. On
// failure w has received a prefix of the archive; the caller aborts the
// transfer (an HTTP handler with a Content-Length aborts the connection).
func (p *Plan) Write(ctx context.Context, w io.Writer, progress func(written int64)) error {
	cw := &countingWriter{w: w, progress: progress}
	tw := tar.NewWriter(cw)
	if err := writeFile(tw, layoutFile, []byte(layoutBody)); err != nil {
		return err
	}
	for _, dir := range [numDirs]string{dirBlobs, dirSHA256} {
		hdr := header(dir, 0)
		hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", dir, err)
		}
	}
	buf := make([]byte, copyBufferSize)
	for _, e := range p.entries {
		if err := p.writeBlob(ctx, tw, e, buf); err != nil {
			return err
		}
	}
	if err := writeFile(tw, indexFile, p.index); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write archive end: %w", err)
	}
	if cw.n != p.Size {
		// Unreachable unless the size computation and archive/tar
		// disagree; a wrong Content-Length must not go unnoticed.
		return fmt.Errorf("archive is %d bytes, planned %d", cw.n, p.Size)
	}
	if progress != nil {
		progress(cw.n)
	}
	return nil
}

// writeBlob writes one content entry, checking that the store still holds
// exactly the planned bytes.
func (p *Plan) writeBlob(ctx context.Context, tw *tar.Writer, e entry, buf []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r, size, err := p.blobs.Open(ctx, e.digest)
	if err != nil {
		return fmt.Errorf("open %s: %w", e.digest, err)
	}
	defer r.Close()
	if size != e.size {
		return fmt.Errorf("%s: %w: planned %d bytes, store has %d", e.digest, blob.ErrSizeMismatch, e.size, size)
	}
	if err := tw.WriteHeader(header(blobPath(e.digest), e.size)); err != nil {
		return fmt.Errorf("write header of %s: %w", e.digest, err)
	}
	// Hide tar.Writer's ReadFrom so that the copy goes through buf, in
	// chunks that let cancellation be noticed.
	n, err := io.CopyBuffer(struct{ io.Writer }{tw}, ctxReader(ctx, io.LimitReader(r, e.size)), buf)
	if err != nil {
		return fmt.Errorf("write %s: %w", e.digest, err)
	}
	if n != e.size {
		return fmt.Errorf("%s: %w: store gave %d of %d bytes", e.digest, blob.ErrSizeMismatch, n, e.size)
	}
	return nil
}

// writeFile writes a small regular file entry.
func writeFile(tw *tar.Writer, name string, body []byte) error {
	if err := tw.WriteHeader(header(name, int64(len(body)))); err != nil {
		return fmt.Errorf("write header of %s: %w", name, err)
	}
	if _, err := tw.Write(body); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// header is the header of a regular file entry. Owner, group and times are
// fixed; the USTAR format is forced so that every header is exactly one
// block (no PAX records whose length would depend on the content).
func header(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  time.Unix(exportTime, 0),
		Format:   tar.FormatUSTAR,
	}
}

// countingWriter counts the bytes written and reports progress every
// progressStep bytes.
type countingWriter struct {
	w        io.Writer
	n        int64
	reported int64
	progress func(int64)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	if c.progress != nil && c.n-c.reported >= progressStep {
		c.reported = c.n
		c.progress(c.n)
	}
	return n, err
}

// ctxReader returns a reader of r that fails once ctx is done, so that a
// long copy stops soon after cancellation.
func ctxReader(ctx context.Context, r io.Reader) io.Reader {
	return readFunc(func(b []byte) (int, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return r.Read(b)
	})
}

// readFunc adapts a function to io.Reader.
type readFunc func([]byte) (int, error)

func (f readFunc) Read(b []byte) (int, error) { return f(b) }
