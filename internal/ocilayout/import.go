package ocilayout

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
)

// Importer records an archive's content in the cache. Its fields are set
// before the first Import and not changed afterwards. Imports through one
// Importer run one at a time; every import into a cache must go through the
// same Importer (see turn).
type Importer struct {
	Blobs blob.Store
	Index meta.Index
	// Name maps a full reference from a standard annotation ("quay.io/a/b:1")
	// to a configured upstream/repo/tag (tag "" for a digest reference); used
	// when the wharf annotations are absent. An error leaves that image
	// unnamed (content still imported). nil: unnamed.
	Name func(ref string) (upstream, repo, tag string, err error)
	// Known reports whether an upstream name from AnnotationUpstream is
	// configured; an unknown one leaves the image unnamed. nil: all known.
	Known func(upstream string) bool
	// Reserve, when set, is called before rolling back blobs committed by a
	// failed import (the server passes mirror.Service.Reserve so a blob being
	// served is not deleted under a reader); refused → that blob is kept.
	Reserve func(ds ...digest.Digest) (release func(), ok bool)
	// Now is the clock for Tag.CheckedAt; nil: time.Now.
	Now func() time.Time

	// turn serialises imports through this Importer (a one-slot
	// semaphore, made on first use): a failing import deletes the blobs
	// it committed, which a concurrent import may have found present and
	// be about to record.
	turnOnce sync.Once
	turn     chan struct{}
}

// Report is what an import recorded.
type Report struct {
	// Images are the references recorded, "docker.io/library/nginx:1.27"
	// (or "...@sha256:..." for an image named by digest only), in the order
	// of index.json, each once. Unnamed images are not listed.
	Images []string
	// Manifests and Blobs count the content entries of the archive (each
	// digest once): manifests reached from index.json, and everything else.
	Manifests int
	Blobs     int
	Bytes     int64 // bytes of blob entries read from the archive, each digest once
	// Skipped counts the blob entries already in the store: read and
	// verified, not rewritten.
	Skipped int
}

// rollbackTimeout bounds the deletion of the blobs of a failed import, which
// runs even when the import's context was cancelled.
const rollbackTimeout = time.Minute

// Import reads a tar stream (entries in any order; index.json and oci-layout
// may come first or last; "./"-prefixed names accepted; directories ignored;
// other entries ignored) and:
//   - writes every blobs/sha256/<hex> entry through Blobs.Create(d, size) so
//     it is verified while written (a mismatch fails the import); a blob
//     already in the store is skipped (its bytes are still read and
//     verified, so a corrupt archive fails either way);
//   - buffers oci-layout and index.json (limit 4 MiB each → ErrNotLayout if
//     larger);
//   - at the end, checks oci-layout's imageLayoutVersion, then walks
//     index.json: every descriptor must be a manifest/index media type that
//     is present (archive or store); for an image manifest, config and
//     layers must be present (archive or store) else ErrIncomplete; children
//     of an index may be absent. Then ONE Index.Record batch: blob records
//     for all non-manifest content, manifest records (with Refs computed from
//     the manifest body, like the mirror does), links of every digest of a
//     named image to its upstream/repo, and tags. CheckedAt = Now() for tags.
//   - On any error (bad digest, truncated tar, ctx cancelled, ErrNotLayout,
//     ErrIncomplete) no index record is written and blobs this import newly
//     committed are deleted again (via Reserve when set). So an interrupted
//     import leaves nothing it added visible.
//
// Nested indexes (index.json → index → manifests) work, up to 8 levels. A
// manifest may be at most 4 MiB. A child manifest of an index that is present
// is recorded even when its own config or layers are absent, as the mirror
// records a manifest before its layers are pulled. Entries under blobs/ whose
// name is not a valid digest are ignored like other unknown entries; content
// that is referenced but missing is reported by the walk.
func (im *Importer) Import(ctx context.Context, r io.Reader) (_ Report, err error) {
	im.turnOnce.Do(func() { im.turn = make(chan struct{}, 1) })
	select {
	case im.turn <- struct{}{}:
		defer func() { <-im.turn }()
	case <-ctx.Done():
		return Report{}, ctx.Err()
	}
	st := &importState{im: im, archive: make(map[digest.Digest]int64)}
	defer func() {
		if err != nil {
			if rerr := im.rollback(ctx, st.committed); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	if err := st.read(ctx, r); err != nil {
		return Report{}, err
	}
	batch, err := st.resolve(ctx)
	if err != nil {
		return Report{}, err
	}
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	if err := im.Index.Record(ctx, batch); err != nil {
		return Report{}, fmt.Errorf("record import: %w", err)
	}
	return st.rep, nil
}

// importState is one import in progress.
type importState struct {
	im        *Importer
	rep       Report
	layout    []byte                  // oci-layout, nil until read
	index     []byte                  // index.json, nil until read
	archive   map[digest.Digest]int64 // content entries read: digest → size
	committed []digest.Digest         // blobs this import wrote to the store

	// Filled by resolve.
	manifests map[digest.Digest]*walked
}

// walked is a manifest found by the walk of index.json.
type walked struct {
	record meta.Manifest
	body   *manifestBody
	// closure is the manifest and every digest it references, transitively
	// through the children present: what a named image links.
	closure []digest.Digest
}

// read consumes the tar stream, storing content and buffering the two layout
// files.
func (st *importState) read(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	buf := make([]byte, copyBufferSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if errors.Is(err, tar.ErrHeader) {
			return fmt.Errorf("%w: %w", ErrNotLayout, err)
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg { // directories, links, devices, old GNU sparse files
			continue
		}
		if sparse(hdr) {
			// A few bytes of archive could expand to exabytes of
			// zeros; no tool writes layout content sparse.
			return fmt.Errorf("%w: %s is a sparse file", ErrNotLayout, hdr.Name)
		}
		name := entryName(hdr.Name)
		switch {
		case name == layoutFile:
			if st.layout, err = readSmall(ctx, tr, name, hdr.Size); err != nil {
				return err
			}
		case name == indexFile:
			if st.index, err = readSmall(ctx, tr, name, hdr.Size); err != nil {
				return err
			}
		default:
			d, ok := blobDigest(name)
			if !ok {
				continue
			}
			if err := st.blob(ctx, tr, d, hdr.Size, buf); err != nil {
				return err
			}
		}
	}
}

// sparse reports whether hdr is a GNU sparse file in PAX form, which
// archive/tar presents as a regular file whose holes read as zeros.
func sparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// entryName normalises a tar entry name: archives made with "tar -C dir ."
// name their entries "./oci-layout"; a leading slash is dropped as tar does.
func entryName(name string) string {
	name = path.Clean("/" + name)
	return strings.TrimPrefix(name, "/")
}

// blobDigest returns the digest of a content entry "blobs/<alg>/<encoded>"
// (image-layout.md, "Blobs"), or false when name is not one.
func blobDigest(name string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(name, blobsDir+"/")
	if !ok {
		return "", false
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	if d.Validate() != nil {
		return "", false
	}
	return d, true
}

// readSmall reads oci-layout or index.json.
func readSmall(ctx context.Context, r io.Reader, name string, size int64) ([]byte, error) {
	if size > maxManifestSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the limit of %d", ErrNotLayout, name, size, maxManifestSize)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(ctxReader(ctx, r), body); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return body, nil
}

// blob stores one content entry of size bytes, verified against d, or
// verifies and skips it when the store has it already.
func (st *importState) blob(ctx context.Context, r io.Reader, d digest.Digest, size int64, buf []byte) error {
	r = ctxReader(ctx, r)
	if prev, dup := st.archive[d]; dup {
		// A second entry of the same content: consistent or corrupt.
		if prev != size {
			return fmt.Errorf("%s: %w: entries of %d and %d bytes", d, blob.ErrSizeMismatch, prev, size)
		}
		return verify(d, r, buf)
	}
	stored, err := st.im.Blobs.Stat(ctx, d)
	switch {
	case err == nil:
		if stored != size {
			return fmt.Errorf("%s: %w: archive has %d bytes, store has %d", d, blob.ErrSizeMismatch, size, stored)
		}
		if err := verify(d, r, buf); err != nil {
			return err
		}
		st.rep.Skipped++
	case errors.Is(err, blob.ErrNotFound):
		if err := st.store(ctx, r, d, size, buf); err != nil {
			return err
		}
	default:
		return fmt.Errorf("stat %s: %w", d, err)
	}
	st.archive[d] = size
	st.rep.Bytes += size
	return nil
}

// store writes content d to the store through a verified write.
func (st *importState) store(ctx context.Context, r io.Reader, d digest.Digest, size int64, buf []byte) error {
	w, err := st.im.Blobs.Create(ctx, d, size)
	if err != nil {
		return fmt.Errorf("store %s: %w", d, err)
	}
	defer w.Cancel()
	// Hide a ReadFrom of the writer so that the copy goes through buf, in
	// chunks that let cancellation be noticed.
	if _, err := io.CopyBuffer(struct{ io.Writer }{w}, r, buf); err != nil {
		return fmt.Errorf("store %s: %w", d, err)
	}
	if err := w.Commit(ctx); err != nil {
		return fmt.Errorf("store %s: %w", d, err)
	}
	st.committed = append(st.committed, d)
	return nil
}

// verify reads r to its end and checks that it hashes to d.
func verify(d digest.Digest, r io.Reader, buf []byte) error {
	v := d.Verifier()
	if _, err := io.CopyBuffer(v, r, buf); err != nil {
		return fmt.Errorf("read %s: %w", d, err)
	}
	if !v.Verified() {
		return fmt.Errorf("%s: %w", d, blob.ErrDigestMismatch)
	}
	return nil
}

// present returns the size of content d in the archive or the store, or
// false when it is in neither.
func (st *importState) present(ctx context.Context, d digest.Digest) (int64, bool, error) {
	if size, ok := st.archive[d]; ok {
		return size, true, nil
	}
	if d.Validate() != nil {
		return 0, false, nil
	}
	size, err := st.im.Blobs.Stat(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("stat %s: %w", d, err)
	}
	return size, true, nil
}

// resolve checks the layout files, walks index.json and builds the batch of
// records.
func (st *importState) resolve(ctx context.Context) (meta.Batch, error) {
	if st.layout == nil {
		return meta.Batch{}, fmt.Errorf("%w: no %s", ErrNotLayout, layoutFile)
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(st.layout, &layout); err != nil {
		return meta.Batch{}, fmt.Errorf("%w: %s: %w", ErrNotLayout, layoutFile, err)
	}
	// image-layout.md: imageLayoutVersion is "1.0.0" today; a later minor
	// version stays compatible under the spec's semantic versioning.
	if !strings.HasPrefix(layout.Version, "1.") {
		return meta.Batch{}, fmt.Errorf("%w: imageLayoutVersion %q", ErrNotLayout, layout.Version)
	}
	if st.index == nil {
		return meta.Batch{}, fmt.Errorf("%w: no %s", ErrNotLayout, indexFile)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(st.index, &idx); err != nil {
		return meta.Batch{}, fmt.Errorf("%w: %s: %w", ErrNotLayout, indexFile, err)
	}
	if idx.SchemaVersion != 2 || (idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex) {
		return meta.Batch{}, fmt.Errorf("%w: %s: schemaVersion %d, mediaType %q", ErrNotLayout, indexFile, idx.SchemaVersion, idx.MediaType)
	}

	st.manifests = make(map[digest.Digest]*walked)
	now := time.Now
	if st.im.Now != nil {
		now = st.im.Now
	}
	checked := now()
	var batch meta.Batch
	links := make(map[meta.Link]bool)
	tags := make(map[[3]string]int) // upstream, repo, name → index in batch.Tags
	images := make(map[string]bool)
	for i, desc := range idx.Manifests {
		if err := ctx.Err(); err != nil {
			return meta.Batch{}, err
		}
		if !isManifestType(desc.MediaType) || desc.Digest.Validate() != nil {
			return meta.Batch{}, fmt.Errorf("%w: %s descriptor %d: %q %q is not a manifest", ErrNotLayout, indexFile, i, desc.MediaType, desc.Digest)
		}
		w, err := st.walk(ctx, desc, 0)
		if err != nil {
			return meta.Batch{}, err
		}
		if w == nil {
			return meta.Batch{}, fmt.Errorf("%w: manifest %s of %s descriptor %d is not in the archive", ErrIncomplete, desc.Digest, indexFile, i)
		}
		if isImageType(desc.MediaType) {
			if err := st.complete(ctx, w); err != nil {
				return meta.Batch{}, err
			}
		}
		up, repo, tag, ok := st.im.name(desc)
		if !ok {
			continue
		}
		for _, d := range w.closure {
			l := meta.Link{Upstream: up, Repo: repo, Digest: d}
			if !links[l] {
				links[l] = true
				batch.Links = append(batch.Links, l)
			}
		}
		if tag != "" {
			t := meta.Tag{Upstream: up, Repo: repo, Name: tag, Digest: desc.Digest, CheckedAt: checked}
			key := [3]string{up, repo, tag}
			if j, dup := tags[key]; dup {
				batch.Tags[j] = t // a later descriptor moves the tag, as in a registry
			} else {
				tags[key] = len(batch.Tags)
				batch.Tags = append(batch.Tags, t)
			}
		}
		if ref := fullReference(up, repo, tag, desc.Digest); !images[ref] {
			images[ref] = true
			st.rep.Images = append(st.rep.Images, ref)
		}
	}

	// Content records: every manifest walked, and every other digest that
	// is present and either in the archive or referenced by a manifest.
	blobs := make(map[digest.Digest]bool)
	for _, w := range st.manifests {
		batch.Manifests = append(batch.Manifests, w.record)
		for _, ref := range w.record.Refs {
			if st.manifests[ref] == nil {
				blobs[ref] = true
			}
		}
	}
	for d := range st.archive {
		if st.manifests[d] != nil {
			st.rep.Manifests++
			continue
		}
		st.rep.Blobs++
		blobs[d] = true
	}
	for d := range blobs {
		size, ok, err := st.present(ctx, d)
		if err != nil {
			return meta.Batch{}, err
		}
		if ok {
			batch.Blobs = append(batch.Blobs, meta.Blob{Digest: d, Size: size})
		}
	}
	// Sorted, so that the same archive always makes the same batch.
	slices.SortFunc(batch.Manifests, func(a, b meta.Manifest) int { return compareDigests(a.Digest, b.Digest) })
	slices.SortFunc(batch.Blobs, func(a, b meta.Blob) int { return compareDigests(a.Digest, b.Digest) })
	return batch, nil
}

// walk records manifest desc and, for an index, its children that are
// present. It returns nil when desc is not present.
func (st *importState) walk(ctx context.Context, desc ocispec.Descriptor, depth int) (*walked, error) {
	if w := st.manifests[desc.Digest]; w != nil {
		return w, nil
	}
	size, ok, err := st.present(ctx, desc.Digest)
	if err != nil || !ok {
		return nil, err
	}
	if size != desc.Size {
		return nil, fmt.Errorf("%w: manifest %s: %w: descriptor says %d bytes, content has %d", ErrNotLayout, desc.Digest, blob.ErrSizeMismatch, desc.Size, size)
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: indexes nested deeper than %d", ErrNotLayout, maxDepth)
	}
	body, err := st.readManifest(ctx, desc.Digest, size)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(body)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %w", ErrNotLayout, desc.Digest, err)
	}
	// image-spec descriptor.md: the descriptor's mediaType and the
	// manifest's own must agree; the manifest may omit it.
	if m.MediaType != "" && m.MediaType != desc.MediaType {
		return nil, fmt.Errorf("%w: manifest %s is %q, its descriptor says %q", ErrNotLayout, desc.Digest, m.MediaType, desc.MediaType)
	}
	refs := meta.ManifestRefs(body)
	w := &walked{
		record: meta.Manifest{Digest: desc.Digest, MediaType: desc.MediaType, Size: size, Refs: refs},
		body:   m,
	}
	seen := map[digest.Digest]bool{desc.Digest: true}
	w.closure = append(w.closure, desc.Digest)
	add := func(ds []digest.Digest) {
		for _, d := range ds {
			if !seen[d] {
				seen[d] = true
				w.closure = append(w.closure, d)
			}
		}
	}
	add(refs)
	if isIndexType(desc.MediaType) {
		for _, child := range m.Manifests {
			if !isManifestType(child.MediaType) || child.Digest.Validate() != nil {
				continue
			}
			cw, err := st.walk(ctx, child, depth+1)
			if err != nil {
				return nil, err
			}
			if cw != nil { // absent children are normal: one platform pulled
				add(cw.closure)
			}
		}
	}
	st.manifests[desc.Digest] = w
	return w, nil
}

// readManifest reads manifest d back from the store, where read put it (or
// found it).
func (st *importState) readManifest(ctx context.Context, d digest.Digest, size int64) ([]byte, error) {
	if size > maxManifestSize {
		return nil, fmt.Errorf("%w: manifest %s is %d bytes, more than the limit of %d", ErrNotLayout, d, size, maxManifestSize)
	}
	r, _, err := st.im.Blobs.Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("open manifest %s: %w", d, err)
	}
	defer r.Close()
	body, err := readManifest(r, size)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	return body, nil
}

// complete checks that an image manifest named in index.json has its config
// and every layer.
func (st *importState) complete(ctx context.Context, w *walked) error {
	for _, desc := range w.body.imageBlobs() {
		size, ok, err := st.present(ctx, desc.Digest)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: image %s: %s %s is missing", ErrIncomplete, w.record.Digest, desc.MediaType, desc.Digest)
		}
		if size != desc.Size {
			return fmt.Errorf("%w: image %s: %s: %w: descriptor says %d bytes, content has %d", ErrNotLayout, w.record.Digest, desc.Digest, blob.ErrSizeMismatch, desc.Size, size)
		}
	}
	return nil
}

// name returns the upstream, repository and tag desc is to be recorded
// under, or false to leave it unnamed. wharf's own annotations win; without
// them the standard ones go through Name.
func (im *Importer) name(desc ocispec.Descriptor) (upstream, repo, tag string, ok bool) {
	a := desc.Annotations
	if up, repo := a[AnnotationUpstream], a[AnnotationRepository]; up != "" && repo != "" {
		tag := a[AnnotationTag]
		if (im.Known != nil && !im.Known(up)) || !validName(up, repo, tag) {
			return "", "", "", false
		}
		return up, repo, tag, true
	}
	if im.Name == nil {
		return "", "", "", false
	}
	// containerd's annotation holds the full name; the OCI one often holds
	// only a tag (image-layout.md leaves its form open), which Name refuses.
	for _, key := range []string{annotationContainerdName, ocispec.AnnotationRefName} {
		ref := a[key]
		if ref == "" {
			continue
		}
		up, repo, tag, err := im.Name(ref)
		if err == nil && validName(up, repo, tag) {
			return up, repo, tag, true
		}
	}
	return "", "", "", false
}

// rollback deletes the blobs a failed import committed, except those
// Reserve refuses (being served right now: another client's pull stored or
// served the same content meanwhile). It runs detached from ctx, which may
// be what was cancelled.
func (im *Importer) rollback(ctx context.Context, committed []digest.Digest) error {
	if len(committed) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	var errs []error
	for _, d := range committed {
		release := func() {}
		if im.Reserve != nil {
			rel, ok := im.Reserve(d)
			if !ok {
				continue
			}
			release = rel
		}
		err := im.Blobs.Delete(ctx, d)
		release()
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			errs = append(errs, fmt.Errorf("roll back %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
