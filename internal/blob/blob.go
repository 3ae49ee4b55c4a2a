// Package blob defines the content-addressed store that holds every blob and
// manifest wharf has cached.
//
// Invariants every implementation keeps:
//   - Content is addressed by its digest and is immutable once committed.
//   - Nothing becomes visible through Stat or Open unless its bytes were
//     verified against the digest (and the expected size, when known) while
//     they were written. A failed check commits nothing.
//   - A crash at any point leaves either the complete, verified blob or no
//     blob at all; leftovers of interrupted writes are removed when the store
//     is opened again.
//
// The shared test suite in package blobtest is the definition of these
// semantics; every implementation, fakes included, must pass it.
package blob

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors. Implementations wrap them with context; callers test with
// errors.Is.
var (
	// ErrNotFound: no committed blob has this digest.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch: the bytes written do not hash to the expected digest.
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrSizeMismatch: more or fewer bytes were written than announced.
	ErrSizeMismatch = errors.New("blob size mismatch")
	// ErrUnsupportedDigest: the digest algorithm is not available or the
	// digest is malformed.
	ErrUnsupportedDigest = errors.New("unsupported digest")
)

// Reader reads a committed blob. Implementations backed by files return an
// *os.File so that the HTTP layer can hand it to sendfile.
type Reader interface {
	io.ReadSeekCloser
	io.ReaderAt
}

// Writer receives the bytes of one blob. Bytes are hashed as they arrive.
//
// ReadAt gives access to the bytes written so far, so that readers can
// follow a write that is still in progress (streaming a cache fill to
// several clients). ReadAt may be called concurrently with Write from other
// goroutines, but only for offsets below the number of bytes whose Write
// call has already returned.
type Writer interface {
	io.Writer
	io.ReaderAt
	// Commit verifies size and digest, makes the blob durable and visible.
	// It fails with ErrSizeMismatch or ErrDigestMismatch (wrapped) and then
	// stores nothing. Committing a blob that already exists succeeds.
	Commit(ctx context.Context) error
	// Cancel discards the write. It is safe to call after Commit (no-op), so
	// callers can always defer it.
	Cancel() error
}

// Store is a content-addressed blob store.
type Store interface {
	// Stat returns the size of a committed blob, or ErrNotFound.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	// Open returns a reader of a committed blob and its size, or ErrNotFound.
	Open(ctx context.Context, d digest.Digest) (Reader, int64, error)
	// Create starts a verified write of blob d. size is the expected size, or
	// -1 when unknown.
	Create(ctx context.Context, d digest.Digest, size int64) (Writer, error)
	// Delete removes a committed blob. Readers that already opened it keep
	// reading it. Deleting a missing blob returns ErrNotFound.
	Delete(ctx context.Context, d digest.Digest) error
	// Walk calls fn for every committed blob, in no particular order. An
	// error from fn stops the walk and is returned.
	Walk(ctx context.Context, fn func(d digest.Digest, size int64) error) error
}
