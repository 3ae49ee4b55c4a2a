// Package fsstore implements blob.Store on a local filesystem.
//
// Layout under the root directory:
//
//	blobs/<algorithm>/<first two hex digits>/<hex>   committed blobs, mode 0444
//	tmp/<random>                                     writes in progress
//
// Invariants:
//   - A file under blobs/ exists only if its bytes were hashed while they
//     were written and matched the digest its name spells (and the announced
//     size). Files reach blobs/ by rename(2) from tmp/, which is atomic
//     because both live under the same root, and only after the file was
//     fsynced; the shard directory is fsynced after the rename so the new
//     name survives a crash.
//   - Committed files are never modified, only removed by Delete. Readers
//     keep the open file, so a Delete does not disturb them.
//   - Anything in tmp/ belongs to a write that has not committed. New removes
//     it all, which is how a crash (even kill -9 mid-write) is cleaned up;
//     therefore only one Store may use a root at a time.
//
// The two-digit shard directories keep directory sizes manageable with
// millions of blobs, the same scheme as the OCI image layout's blobs/<alg>/
// plus one level (image-spec, image-layout.md "Blobs").
package fsstore

import (
	"context"
	// The digest package resolves algorithms through crypto.Hash; importing
	// the implementations makes sha256 and sha512 (and sha384) available.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/blob"
)

const (
	blobsDir = "blobs"
	tmpDir   = "tmp"
	// dirPerm is for the directories of the tree. Blobs are public content
	// pulled from registries; files are read-only (filePerm) so that
	// nothing, wharf included, rewrites committed content in place.
	dirPerm  = 0o755
	filePerm = 0o444
)

// Store is a blob.Store backed by a directory tree. It is safe for
// concurrent use.
type Store struct {
	blobs string // <root>/blobs
	tmp   string // <root>/tmp
}

var _ blob.Store = (*Store)(nil)

// New opens the store rooted at root, creating the directories it needs and
// removing every leftover of writes that never committed.
func New(root string) (*Store, error) {
	s := &Store{
		blobs: filepath.Join(root, blobsDir),
		tmp:   filepath.Join(root, tmpDir),
	}
	for _, dir := range []string{s.blobs, s.tmp} {
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return nil, fmt.Errorf("fsstore: %w", err)
		}
	}
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("fsstore: removing leftover temporary files: %w", err)
	}
	return s, nil
}

// Path returns the file that holds (or would hold) blob d, or "" when d is
// not a valid digest. It is meant for diagnostics; read blobs through Open.
func (s *Store) Path(d digest.Digest) string {
	p, err := s.path(d)
	if err != nil {
		return ""
	}
	return p
}

// path validates d and returns its file name. Validation is what keeps a
// digest from naming a file outside the tree: a valid encoded part is
// lower-case hex only.
func (s *Store) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%w: %q: %w", blob.ErrUnsupportedDigest, d, err)
	}
	enc := d.Encoded()
	return filepath.Join(s.blobs, d.Algorithm().String(), enc[:2], enc), nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p, err := s.path(d)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, notFound(d, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("fsstore: %s is not a regular file", p)
	}
	return fi.Size(), nil
}

// Open implements blob.Store. The Reader is the *os.File itself, so that
// io.Copy to a net.Conn can use sendfile(2).
func (s *Store) Open(ctx context.Context, d digest.Digest) (_ blob.Reader, _ int64, err error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	p, err := s.path(d)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, notFound(d, err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	// The size comes from the open file, not the name: it stays right
	// even if the blob is deleted right after.
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("fsstore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("fsstore: %s is not a regular file", p)
	}
	return f, fi.Size(), nil
}

// Delete implements blob.Store. The shard directory stays; it will most
// likely be used again.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return notFound(d, err)
	}
	return nil
}

// Walk implements blob.Store. Anything in the tree that is not a valid
// digest file in its right place is ignored.
func (s *Store) Walk(ctx context.Context, fn func(d digest.Digest, size int64) error) error {
	algs, err := os.ReadDir(s.blobs)
	if err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}
	for _, a := range algs {
		alg := digest.Algorithm(a.Name())
		if !a.IsDir() || !alg.Available() {
			continue
		}
		algDir := filepath.Join(s.blobs, a.Name())
		shards, err := os.ReadDir(algDir)
		if err != nil {
			return fmt.Errorf("fsstore: %w", err)
		}
		for _, sh := range shards {
			if !sh.IsDir() || len(sh.Name()) != 2 {
				continue
			}
			if err := s.walkShard(ctx, alg, filepath.Join(algDir, sh.Name()), sh.Name(), fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) walkShard(ctx context.Context, alg digest.Algorithm, dir, shard string, fn func(digest.Digest, int64) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := e.Name()
		d := digest.NewDigestFromEncoded(alg, name)
		if !e.Type().IsRegular() || d.Validate() != nil || name[:2] != shard {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return fmt.Errorf("fsstore: %w", err)
		}
		if err := fn(d, fi.Size()); err != nil {
			return err
		}
	}
	return nil
}

// Create implements blob.Store.
func (s *Store) Create(ctx context.Context, d digest.Digest, size int64) (blob.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	target, err := s.path(d)
	if err != nil {
		return nil, err
	}
	if size < -1 {
		return nil, fmt.Errorf("%w: %s: invalid expected size %d", blob.ErrSizeMismatch, d, size)
	}
	// CreateTemp opens with O_RDWR|O_CREATE|O_EXCL and mode 0600: the name
	// is ours alone, and the same descriptor serves ReadAt.
	f, err := os.CreateTemp(s.tmp, "ingest-*")
	if err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	return &writer{
		s:      s,
		d:      d,
		size:   size,
		target: target,
		f:      f,
		h:      d.Algorithm().Hash(),
	}, nil
}

type writerState int

const (
	writing writerState = iota
	committed
	discarded
)

var errWriterClosed = fmt.Errorf("fsstore: blob writer: %w", os.ErrClosed)

// writer is a blob.Writer on a temporary file.
type writer struct {
	s      *Store
	d      digest.Digest
	size   int64  // expected size, -1 when unknown
	target string // final path under blobs/
	// f is never reassigned, so ReadAt uses it without taking mu:
	// os.File.ReadAt is pread(2), safe concurrently with Write, and after
	// Close it fails with os.ErrClosed.
	f *os.File

	// mu serialises Write, Commit and Cancel, which may come from
	// different goroutines (a fill that completes while the last client
	// leaves).
	mu      sync.Mutex
	h       hash.Hash
	n       int64 // bytes written and hashed
	err     error // sticky failure of an earlier Write
	state   writerState
	fClosed bool
	tmpGone bool // the temporary file was renamed or removed
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.state != writing:
		return 0, errWriterClosed
	case w.err != nil:
		return 0, w.err
	case w.size >= 0 && w.n+int64(len(p)) > w.size:
		// Fail before writing anything: the source sends more than it
		// announced, and a blob that large would be refused anyway.
		w.err = fmt.Errorf("%w: %s: more than the announced %d bytes", blob.ErrSizeMismatch, w.d, w.size)
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("fsstore: writing %s: %w", w.d, err)
		return n, w.err
	}
	return n, nil
}

func (w *writer) ReadAt(p []byte, off int64) (int, error) {
	return w.f.ReadAt(p, off)
}

// Commit implements blob.Writer: verify, fsync, make read-only, rename into
// place, fsync the directory. Any failure before the rename discards the
// temporary file. A failure of the final directory fsync is reported, but the
// blob is then already visible (verified, possibly not yet durable).
func (w *writer) Commit(ctx context.Context) (err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case committed:
		return nil
	case discarded:
		return errWriterClosed
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.discard())
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	if w.size >= 0 && w.n != w.size {
		return fmt.Errorf("%w: %s: got %d bytes, announced %d", blob.ErrSizeMismatch, w.d, w.n, w.size)
	}
	if got := digest.NewDigest(w.d.Algorithm(), w.h); got != w.d {
		return fmt.Errorf("%w: expected %s, got %s", blob.ErrDigestMismatch, w.d, got)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}
	if err := w.f.Chmod(filePerm); err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}
	w.fClosed = true
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}

	dir := filepath.Dir(w.target)
	if err := w.s.ensureDir(dir); err != nil {
		return err
	}
	switch _, err := os.Lstat(w.target); {
	case err == nil:
		// Already stored: content by digest is immutable, so ours is
		// redundant. A leftover (if Remove fails) is only a temporary
		// file, which the next New removes.
		w.state = committed
		w.tmpGone = true
		_ = os.Remove(w.f.Name())
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("fsstore: %w", err)
	}
	// Two writers of the same digest may both get here; the later rename
	// atomically replaces a file with identical verified bytes, and readers
	// of the earlier one keep their inode.
	if err := os.Rename(w.f.Name(), w.target); err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}
	w.state = committed
	w.tmpGone = true
	return syncDir(dir)
}

func (w *writer) Cancel() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.discard()
}

// discard closes and removes the temporary file of a write that did not
// commit. Callers hold mu.
func (w *writer) discard() error {
	if w.state != writing {
		return nil
	}
	w.state = discarded
	var errs []error
	if !w.fClosed {
		w.fClosed = true
		errs = append(errs, w.f.Close())
	}
	if !w.tmpGone {
		w.tmpGone = true
		// Gone already if a New since Create removed it.
		if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fsstore: discarding write of %s: %w", w.d, err)
	}
	return nil
}

// ensureDir creates a shard directory (and its algorithm directory) on
// demand. A directory that was created is made durable by fsyncing its
// parent, so that a blob renamed into it is reachable after a crash.
func (s *Store) ensureDir(dir string) error {
	for range 2 {
		err := os.Mkdir(dir, dirPerm)
		switch {
		case err == nil:
			return syncDir(filepath.Dir(dir))
		case errors.Is(err, fs.ErrExist):
			return nil
		case errors.Is(err, fs.ErrNotExist) && filepath.Dir(dir) != s.blobs:
			// The algorithm directory is missing; create it and retry.
			if err := s.ensureDir(filepath.Dir(dir)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("fsstore: %w", err)
		}
	}
	return fmt.Errorf("fsstore: cannot create %s", dir)
}

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsstore: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsstore: syncing %s: %w", dir, err)
	}
	return nil
}

// notFound maps a missing file to blob.ErrNotFound and wraps anything else.
func notFound(d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	return fmt.Errorf("fsstore: %w", err)
}
