package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
)

// fillChunk is the most a fill reads from upstream in one call.
const fillChunk = 1 << 20

// readerChunk is the buffer one streaming reader copies through.
const readerChunk = 256 << 10

var readerBufs = sync.Pool{New: func() any { b := make([]byte, readerChunk); return &b }}

// ErrFetchFailed reports that the shared upstream fetch of a blob failed
// after it started; the blob was not committed.
var ErrFetchFailed = errors.New("upstream blob fetch failed")

// StatBlob returns the size of blob d of repo on upstream up without
// downloading it: from the cache, or from an upstream HEAD on a miss.
func (s *Service) StatBlob(ctx context.Context, up, repo string, d digest.Digest) (int64, Result, error) {
	u, err := s.upstream(up)
	if err != nil {
		return 0, "", err
	}
	unpin, err := s.inuse.pin(ctx, d)
	if err != nil {
		return 0, "", err
	}
	defer unpin()
	size, err := s.blobs.Stat(ctx, d)
	if err == nil {
		if err := s.linkedOrConfirmed(ctx, u, repo, d, s.headBlob(u, repo, d)); err != nil {
			return 0, "", err
		}
		return size, ResultHit, nil
	}
	if !errors.Is(err, blob.ErrNotFound) {
		return 0, "", err
	}
	size, err = u.client.HeadBlob(ctx, repo, d)
	if err != nil {
		return 0, "", notFoundAs(err)
	}
	return size, ResultPass, nil
}

func (s *Service) headBlob(u *upstreamState, repo string, d digest.Digest) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := u.client.HeadBlob(ctx, repo, d)
		return err
	}
}

// Blob is an open blob: either a committed file or a fill in progress.
// Close it when done.
type Blob struct {
	Digest digest.Digest
	Size   int64
	Result Result

	s    *Service
	file blob.Reader
	fill *fill

	// unpin releases the in-use pin OpenBlob took (inuse.go).
	unpin func()

	upstream string // as requested, for metrics
}

// OpenBlob opens blob d of repo on upstream up. On a miss it starts (or
// joins) the one shared upstream fetch of d and returns as soon as the size
// is known; the bytes are then streamed by WriteRange as they arrive.
func (s *Service) OpenBlob(ctx context.Context, up, repo string, d digest.Digest) (b *Blob, err error) {
	u, err := s.upstream(up)
	if err != nil {
		return nil, err
	}
	// Pinned until Close, so that eviction never deletes a blob while it
	// is served.
	unpin, err := s.inuse.pin(ctx, d)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unpin()
			return
		}
		b.unpin = unpin
	}()
	if b, err := s.openCommitted(ctx, u, repo, d, ResultHit); !errors.Is(err, blob.ErrNotFound) {
		return b, err
	}

	f, started := s.startOrJoinFill(u, repo, d)
	if !started && (f.upstream != u.name || f.repo != repo) {
		// Joining a fetch made for another repository: only if this one
		// has the blob too.
		if err := s.linkedOrConfirmed(ctx, u, repo, d, s.headBlob(u, repo, d)); err != nil {
			return nil, err
		}
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.size < 0 {
		// Upstream sent no Content-Length: a response must announce its
		// length (so that an aborted transfer is detectable), so wait for
		// the verified blob.
		select {
		case <-f.doneCh:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err, done := f.result(); done {
		if err != nil {
			return nil, notFoundAs(err)
		}
		// Finished already: serve the committed file.
		res := ResultMiss
		if !started {
			res = ResultJoined
		}
		return s.openCommitted(ctx, u, repo, d, res)
	}
	s.access.touch(d)
	res := ResultMiss
	if !started {
		res = ResultJoined
	}
	return &Blob{Digest: d, Size: f.size, Result: res, s: s, upstream: u.name, fill: f}, nil
}

// openCommitted opens a committed blob for u/repo; the error wraps
// blob.ErrNotFound when it is not cached.
func (s *Service) openCommitted(ctx context.Context, u *upstreamState, repo string, d digest.Digest, res Result) (*Blob, error) {
	r, size, err := s.blobs.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := s.linkedOrConfirmed(ctx, u, repo, d, s.headBlob(u, repo, d)); err != nil {
		r.Close()
		return nil, err
	}
	s.access.touch(d)
	return &Blob{Digest: d, Size: size, Result: res, s: s, upstream: u.name, file: r}, nil
}

// Close releases the blob.
func (b *Blob) Close() error {
	if b.unpin != nil {
		defer b.unpin()
		b.unpin = nil
	}
	if b.file != nil {
		return b.file.Close()
	}
	return nil
}

// WriteRange writes bytes [start, start+n) of the blob to dst. For a fill in
// progress it streams bytes as they arrive and holds back the last byte of
// the range until the whole blob is verified and committed, so a response
// never completes with unverified content: if the fetch fails, WriteRange
// returns an error and the caller must abort the connection.
func (b *Blob) WriteRange(ctx context.Context, dst io.Writer, start, n int64) error {
	if start < 0 || n < 0 || start+n > b.Size {
		return fmt.Errorf("range %d+%d outside blob of %d bytes", start, n, b.Size)
	}
	if b.file != nil {
		return copyFile(b.s.served(dst, b.upstream, true), b.file, start, n)
	}
	return b.fill.copyRange(ctx, b.s, b.s.served(dst, b.upstream, false), start, n)
}

// copyFile copies a section of a committed file. io.Copy from an
// *io.LimitedReader over an *os.File lets net/http use sendfile.
func copyFile(dst io.Writer, r blob.Reader, start, n int64) error {
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return err
	}
	got, err := io.Copy(dst, io.LimitReader(r, n))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("short read from cache: %d of %d bytes: %w", got, n, io.ErrUnexpectedEOF)
	}
	return nil
}

// fill is one upstream fetch of a blob into the store, readable while it
// runs.
type fill struct {
	digest   digest.Digest
	upstream string
	repo     string

	ready chan struct{} // closed once size is set or the fetch failed early
	size  int64         // set before ready closes; -1 if upstream did not say

	// rw guards w against Commit/Cancel while readers ReadAt from it.
	rw     sync.RWMutex
	w      blob.Writer
	closed bool

	mu      sync.Mutex
	written int64
	wake    chan struct{} // closed and replaced whenever written or done changes
	done    bool
	err     error
	doneCh  chan struct{}
}

func (f *fill) state() (written int64, done bool, err error, wake <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written, f.done, f.err, f.wake
}

func (f *fill) result() (error, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err, f.done
}

func (f *fill) advance(n int) {
	f.mu.Lock()
	f.written += int64(n)
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	close(f.wake)
	f.wake = make(chan struct{})
	close(f.doneCh)
	f.mu.Unlock()
}

// startOrJoinFill returns the in-flight fill of d, starting one if there is
// none. The fill runs in a goroutine owned by the Service, detached from the
// client: it continues when the client that started it goes away.
func (s *Service) startOrJoinFill(u *upstreamState, repo string, d digest.Digest) (*fill, bool) {
	s.fillMu.Lock()
	defer s.fillMu.Unlock()
	if f, ok := s.fills[d]; ok {
		// A fill that failed is on its way out of the map; never join it.
		if err, done := f.result(); !done || err == nil {
			return f, false
		}
	}
	f := &fill{
		digest: d, upstream: u.name, repo: repo,
		ready: make(chan struct{}), size: -1,
		wake: make(chan struct{}), doneCh: make(chan struct{}),
	}
	s.fills[d] = f
	s.inuse.hold(d) // the fill keeps d in use until it is committed and indexed
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.inuse.unpin(d)
		ctx, cancel := s.detached(s.timeout)
		defer cancel()
		err := s.runFill(ctx, u, f)
		s.fillMu.Lock()
		if s.fills[d] == f {
			delete(s.fills, d)
		}
		s.fillMu.Unlock()
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "blob fetch failed",
				attrUpstream(u.name), attrRepo(repo), attrDigest(d), attrErr(err))
		}
	}()
	return f, true
}

// runFill fetches f.digest from upstream into the store. Every exit path
// finishes f (waking readers) exactly once, and ready is always closed.
func (s *Service) runFill(ctx context.Context, u *upstreamState, f *fill) (err error) {
	readyClosed := false
	defer func() {
		if !readyClosed {
			close(f.ready)
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrFetchFailed, err)
			if f.w != nil {
				f.rw.Lock()
				f.w.Cancel()
				f.closed = true
				f.rw.Unlock()
			}
		}
		f.finish(err)
	}()

	body, size, err := u.client.GetBlob(ctx, f.repo, f.digest)
	if err != nil {
		return err
	}
	defer body.Close()
	w, err := s.blobs.Create(ctx, f.digest, size)
	if err != nil {
		return err
	}
	f.w, f.size = w, size
	close(f.ready)
	readyClosed = true

	// Each Read returns what the connection has; readers are woken after
	// every write, so a slow upstream still streams without delay.
	buf := make([]byte, fillChunk)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			f.advance(n)
			s.obs.UpstreamBytes(u.name, int64(n))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	// Commit closes the writer whether it succeeds or not: readers must
	// stop using it in the same critical section.
	f.rw.Lock()
	err = w.Commit(ctx)
	f.closed = true
	f.rw.Unlock()
	if err != nil {
		return err
	}
	var written int64
	written, _, _, _ = f.state()
	if err := s.index.PutBlob(ctx, meta.Blob{Digest: f.digest, Size: written}); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "index blob failed", attrDigest(f.digest), attrErr(err))
	}
	if err := s.index.Link(ctx, u.name, f.repo, f.digest); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "index link failed", attrDigest(f.digest), attrErr(err))
	}
	return nil
}

// copyRange streams [start, start+n) of a fill to dst, following the temp
// file as it grows, and switches to the committed file once the fill is
// done. The final byte is written only after verification succeeded.
func (f *fill) copyRange(ctx context.Context, s *Service, dst io.Writer, start, n int64) error {
	if n == 0 {
		return nil
	}
	end := start + n
	bp := readerBufs.Get().(*[]byte)
	defer readerBufs.Put(bp)
	buf := *bp
	off := start
	for off < end {
		written, done, ferr, wake := f.state()
		if done {
			if ferr != nil {
				return ferr
			}
			r, _, err := s.blobs.Open(ctx, f.digest)
			if err != nil {
				return fmt.Errorf("open committed blob: %w", err)
			}
			err = copyFile(servedFromCache(dst), r, off, end-off)
			r.Close()
			return err
		}
		avail := min(written, end-1) // hold back the last byte until verified
		if off < avail {
			k := min(int64(len(buf)), avail-off)
			got, err := f.readAt(buf[:k], off)
			if err != nil {
				return err
			}
			if got > 0 {
				if _, err := dst.Write(buf[:got]); err != nil {
					return err
				}
				off += int64(got)
				continue
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// readAt reads from the in-progress temp file. It returns 0 bytes without an
// error when the writer was just closed (the fill is finishing): the caller
// waits for the done signal and switches to the committed file.
func (f *fill) readAt(p []byte, off int64) (int, error) {
	f.rw.RLock()
	defer f.rw.RUnlock()
	if f.closed {
		return 0, nil
	}
	n, err := f.w.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}
