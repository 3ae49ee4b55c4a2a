// Package meta defines the metadata index of the cache: which tag points to
// which digest and when that was last confirmed upstream, what every cached
// manifest is (media type, size, the descriptors it references), the size of
// every cached blob, which repository of which upstream each piece of content
// was seen in, and when content was last served.
//
// The index never holds content; bytes live in a blob.Store. A record here is
// written only after the content it describes was committed to the store, so
// after a crash the index may miss content (which is then adopted or
// re-fetched) but never describes content that is absent: Reconcile removes
// such records when the server starts.
//
// The shared test suite in package metatest defines these semantics; every
// implementation passes it.
package meta

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors. Implementations wrap them with context; callers test
// with errors.Is.
var (
	// ErrNotFound reports a missing record.
	ErrNotFound = errors.New("not found in index")
	// ErrInvalid reports a record that cannot be stored: an empty name or
	// digest, or a negative size (see Batch.Validate).
	ErrInvalid = errors.New("invalid index record")
)

// Tag records the digest a tag pointed to when upstream last confirmed it.
type Tag struct {
	Upstream string // configured upstream name, e.g. "docker.io"
	Repo     string // repository within that upstream, e.g. "library/nginx"
	Name     string // the tag, e.g. "latest"
	Digest   digest.Digest
	// CheckedAt is when upstream last confirmed (or first returned) this
	// mapping. Freshness decisions are based on it.
	CheckedAt time.Time
}

// Manifest describes a cached manifest whose bytes are in the blob store.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	// Refs are the digests this manifest references: config and layers of
	// an image manifest, child manifests of an index, a subject. Used for
	// repository scoping and eviction (a referenced digest is kept while
	// the manifest is).
	Refs []digest.Digest
}

// Blob describes a cached blob.
type Blob struct {
	Digest digest.Digest
	Size   int64
}

// ManifestAccess is a manifest record with the last time it was served, as
// listed for eviction.
type ManifestAccess struct {
	Manifest
	// LastAccess is the latest time recorded by Touch, or the zero time
	// when the manifest was never touched.
	LastAccess time.Time
}

// BlobAccess is a blob record with the last time it was served, as listed
// for eviction.
type BlobAccess struct {
	Blob
	// LastAccess is the latest time recorded by Touch, or the zero time
	// when the blob was never touched.
	LastAccess time.Time
}

// Usage totals what the index describes.
type Usage struct {
	Manifests int // manifest records
	Blobs     int // blob records
	// Bytes is the size of the content described: every digest recorded
	// as a manifest, a blob or both counts once, since its bytes are one
	// entry of the blob store.
	Bytes int64
}

// Repository summarises one cached repository: one that has a tag or a
// link recorded.
type Repository struct {
	Upstream string // configured upstream name, e.g. "docker.io"
	Name     string // repository within that upstream, e.g. "library/nginx"
	Tags     int    // tag records of the repository
	// Manifests counts the manifest records linked to the repository.
	Manifests int
	// Bytes is the size of the content linked to the repository
	// (manifests and blobs recorded in the index), each digest once.
	Bytes int64
	// LastAccess is the latest last access of content linked to the
	// repository, or the zero time.
	LastAccess time.Time
}

// RepositoryQuery selects a page of repositories. Repositories are ordered
// by Upstream, then Name, in byte order.
type RepositoryQuery struct {
	Upstream string // only this upstream; "" for all
	// Match keeps repositories whose "upstream/name" contains it,
	// ignoring the case of ASCII letters (repository names are ASCII, see
	// the distribution spec's name grammar); "" keeps all.
	Match string
	// AfterUpstream and AfterName resume a listing after that repository
	// (exclusive); both empty start at the beginning.
	AfterUpstream, AfterName string
	// Limit is the most repositories returned; 0 or less means no limit.
	Limit int
}

// Batch is content recorded in one transaction (import): either every
// record is written or none is. Blobs and Manifests must describe content
// already committed to the blob store.
type Batch struct {
	Blobs     []Blob
	Manifests []Manifest
	Links     []Link
	Tags      []Tag
}

// Link says that content was seen in a repository.
type Link struct {
	Upstream, Repo string
	Digest         digest.Digest
}

// Validate reports the first record of b that cannot be stored, as an
// error wrapping ErrInvalid: a blob, manifest, link or tag with an empty
// digest, a manifest with an empty ref, a negative size, or a link or tag
// with an empty upstream, repository or tag name. Record runs it before
// writing anything.
func (b Batch) Validate() error {
	invalid := func(what string, i int, problem string) error {
		return fmt.Errorf("%w: %s %d: %s", ErrInvalid, what, i, problem)
	}
	for i, bl := range b.Blobs {
		switch {
		case bl.Digest == "":
			return invalid("blob", i, "empty digest")
		case bl.Size < 0:
			return invalid("blob", i, fmt.Sprintf("negative size %d", bl.Size))
		}
	}
	for i, m := range b.Manifests {
		switch {
		case m.Digest == "":
			return invalid("manifest", i, "empty digest")
		case m.Size < 0:
			return invalid("manifest", i, fmt.Sprintf("negative size %d", m.Size))
		}
		for j, ref := range m.Refs {
			if ref == "" {
				return invalid("manifest", i, fmt.Sprintf("ref %d: empty digest", j))
			}
		}
	}
	for i, l := range b.Links {
		switch {
		case l.Upstream == "" || l.Repo == "":
			return invalid("link", i, "empty upstream or repository")
		case l.Digest == "":
			return invalid("link", i, "empty digest")
		}
	}
	for i, t := range b.Tags {
		switch {
		case t.Upstream == "" || t.Repo == "" || t.Name == "":
			return invalid("tag", i, "empty upstream, repository or name")
		case t.Digest == "":
			return invalid("tag", i, "empty digest")
		}
	}
	return nil
}

// Index is the metadata index. All methods are safe for concurrent use.
type Index interface {
	// Tag returns the mapping of upstream/repo:name, or ErrNotFound.
	Tag(ctx context.Context, upstream, repo, name string) (Tag, error)
	// PutTag creates or replaces a tag mapping.
	PutTag(ctx context.Context, t Tag) error
	// DeleteTag removes the mapping of upstream/repo:name (upstream said
	// the tag is gone). Deleting a missing tag is not an error.
	DeleteTag(ctx context.Context, upstream, repo, name string) error
	// Tags lists cached tags of one repository, sorted by name.
	Tags(ctx context.Context, upstream, repo string) ([]Tag, error)

	// Manifest returns a cached manifest record, or ErrNotFound.
	Manifest(ctx context.Context, d digest.Digest) (Manifest, error)
	// PutManifest records a manifest (replacing an existing record).
	PutManifest(ctx context.Context, m Manifest) error

	// Blob returns a cached blob record, or ErrNotFound.
	Blob(ctx context.Context, d digest.Digest) (Blob, error)
	// PutBlob records a blob (replacing an existing record).
	PutBlob(ctx context.Context, b Blob) error

	// Link records that content ds was seen in upstream/repo, so it may be
	// served for that repository without asking upstream.
	Link(ctx context.Context, upstream, repo string, ds ...digest.Digest) error
	// Linked reports whether d was seen in upstream/repo.
	Linked(ctx context.Context, upstream, repo string, d digest.Digest) (bool, error)

	// Touch records that ds were served at time at (last access).
	Touch(ctx context.Context, at time.Time, ds ...digest.Digest) error
	// LastAccess returns the last access time of d, or ErrNotFound when d
	// was never touched.
	LastAccess(ctx context.Context, d digest.Digest) (time.Time, error)

	// Manifests lists every manifest record with its Refs and last access,
	// ordered by last access (never touched first), then by digest. It is
	// one consistent snapshot.
	Manifests(ctx context.Context) ([]ManifestAccess, error)
	// Blobs lists every blob record with its last access, ordered like
	// Manifests. It is one consistent snapshot.
	Blobs(ctx context.Context) ([]BlobAccess, error)
	// Usage counts the manifest and blob records and the bytes they
	// describe.
	Usage(ctx context.Context) (Usage, error)

	// Evict forgets content ds whose bytes are about to be deleted from
	// the blob store, keeping every digest that a manifest record outside
	// the evicted set still references: such a digest, and transitively
	// everything a kept manifest references, stays with all its records.
	// For every other digest of ds it removes, in one transaction, the
	// manifest record with its Refs, the blob record, the tags pointing
	// to it, its links and its last access — the records Reconcile
	// removes for absent content. It returns those evicted digests, in the
	// order of ds and without duplicates; a digest with no records at all
	// is among them. The caller deletes exactly their bytes, after Evict
	// returned, so that the index never describes absent content.
	//
	// The check runs in the same transaction as the removal, so a manifest
	// recorded concurrently that shares a layer with an evicted one keeps
	// that layer.
	Evict(ctx context.Context, ds ...digest.Digest) (evicted []digest.Digest, err error)

	// Reconcile makes the index agree with the content that exists: present
	// reports whether a digest's bytes are in the blob store. Manifest and
	// blob records of absent content are removed, and so are tags and links
	// that point to them. It returns how many records were removed.
	Reconcile(ctx context.Context, present func(digest.Digest) bool) (removed int, err error)

	// Repositories lists a page of cached repositories (those with a tag
	// or a link) selected by q.
	Repositories(ctx context.Context, q RepositoryQuery) ([]Repository, error)
	// TagsOf lists every tag, in any repository, that points to d, ordered
	// by upstream, repository and name.
	TagsOf(ctx context.Context, d digest.Digest) ([]Tag, error)
	// DeleteRepository removes every tag and link of upstream/repo in one
	// transaction and returns the digests they pointed to, sorted and
	// without duplicates. Content records stay: deciding what to evict is
	// the caller's. Deleting an unknown repository returns no digests.
	DeleteRepository(ctx context.Context, upstream, repo string) ([]digest.Digest, error)
	// BlobPage lists up to limit blob records with their last access whose
	// digest sorts after after ("" starts at the beginning), ordered by
	// digest in byte order; a limit of 0 or less means no limit.
	BlobPage(ctx context.Context, after digest.Digest, limit int) ([]BlobAccess, error)
	// Record writes every record of b in one transaction: blobs and
	// manifests (replacing existing records, like PutBlob and
	// PutManifest), links, then tags (like PutTag). A batch that fails
	// b.Validate returns that error (wrapping ErrInvalid) and writes
	// nothing; any other failure writes nothing either.
	Record(ctx context.Context, b Batch) error

	// Close releases the index.
	Close() error
}
