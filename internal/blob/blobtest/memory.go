package blobtest

import (
	"bytes"
	"context"
	// The digest package resolves algorithms through crypto.Hash; importing
	// the implementations makes sha256 and sha512 (and sha384) available.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/blob"
)

// NewMemory returns a blob.Store that keeps everything in memory. It passes
// Run and is meant for tests of packages that consume a blob.Store. Its
// Writer behaves like the filesystem store's: bytes are verified on Commit,
// ReadAt follows a write in progress, and ReadAt after Commit or Cancel fails
// with an error that wraps os.ErrClosed.
func NewMemory() blob.Store {
	return &memStore{blobs: make(map[digest.Digest][]byte)}
}

type memStore struct {
	mu    sync.RWMutex
	blobs map[digest.Digest][]byte // committed, never modified in place
}

// checkDigest reports a malformed or unsupported digest as
// blob.ErrUnsupportedDigest.
func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %q: %w", blob.ErrUnsupportedDigest, d, err)
	}
	return nil
}

func (s *memStore) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	b, err := s.get(ctx, d)
	if err != nil {
		return 0, err
	}
	return int64(len(b)), nil
}

func (s *memStore) Open(ctx context.Context, d digest.Digest) (blob.Reader, int64, error) {
	b, err := s.get(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	// The slice is never written after commit, so a reader may keep it
	// after Delete drops it from the map, like an open file after unlink.
	return memReader{bytes.NewReader(b)}, int64(len(b)), nil
}

func (s *memStore) get(ctx context.Context, d digest.Digest) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.blobs[d]
	if !ok {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	return b, nil
}

func (s *memStore) Create(ctx context.Context, d digest.Digest, size int64) (blob.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	if size < -1 {
		return nil, fmt.Errorf("%w: %s: invalid expected size %d", blob.ErrSizeMismatch, d, size)
	}
	return &memWriter{s: s, d: d, size: size, h: d.Algorithm().Hash()}, nil
}

func (s *memStore) Delete(ctx context.Context, d digest.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkDigest(d); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.blobs[d]; !ok {
		return fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	delete(s.blobs, d)
	return nil
}

func (s *memStore) Walk(ctx context.Context, fn func(d digest.Digest, size int64) error) error {
	// Snapshot first so that fn may call back into the store.
	s.mu.RLock()
	type entry struct {
		d    digest.Digest
		size int64
	}
	entries := make([]entry, 0, len(s.blobs))
	for d, b := range s.blobs {
		entries = append(entries, entry{d, int64(len(b))})
	}
	s.mu.RUnlock()
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e.d, e.size); err != nil {
			return err
		}
	}
	return nil
}

type memReader struct{ *bytes.Reader }

func (memReader) Close() error { return nil }

type writerState int

const (
	writing writerState = iota
	committed
	discarded
)

var errWriterClosed = fmt.Errorf("blob writer: %w", os.ErrClosed)

type memWriter struct {
	s    *memStore
	d    digest.Digest
	size int64 // expected size, -1 when unknown

	// mu serialises Write, Commit and Cancel, and guards buf against
	// concurrent ReadAt.
	mu    sync.RWMutex
	h     hash.Hash
	buf   []byte
	err   error // sticky failure of an earlier Write
	state writerState
}

func (w *memWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.state != writing:
		return 0, errWriterClosed
	case w.err != nil:
		return 0, w.err
	case w.size >= 0 && int64(len(w.buf))+int64(len(p)) > w.size:
		w.err = fmt.Errorf("%w: %s: more than the announced %d bytes", blob.ErrSizeMismatch, w.d, w.size)
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	w.h.Write(p)
	return len(p), nil
}

func (w *memWriter) ReadAt(p []byte, off int64) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.state != writing {
		return 0, errWriterClosed
	}
	if off < 0 {
		return 0, errors.New("blob writer: negative offset")
	}
	if off >= int64(len(w.buf)) {
		return 0, io.EOF
	}
	n := copy(p, w.buf[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (w *memWriter) Commit(ctx context.Context) (err error) {
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
			w.discard()
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	if w.size >= 0 && int64(len(w.buf)) != w.size {
		return fmt.Errorf("%w: %s: got %d bytes, announced %d", blob.ErrSizeMismatch, w.d, len(w.buf), w.size)
	}
	if got := digest.NewDigest(w.d.Algorithm(), w.h); got != w.d {
		return fmt.Errorf("%w: expected %s, got %s", blob.ErrDigestMismatch, w.d, got)
	}
	w.s.mu.Lock()
	if _, ok := w.s.blobs[w.d]; !ok {
		w.s.blobs[w.d] = w.buf
	}
	w.s.mu.Unlock()
	w.buf = nil
	w.state = committed
	return nil
}

func (w *memWriter) Cancel() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.discard()
	return nil
}

// discard drops the bytes of a write that did not commit. Callers hold mu.
func (w *memWriter) discard() {
	if w.state == writing {
		w.state = discarded
		w.buf = nil
	}
}
