package mirror

import (
	"context"
	"sync"

	"github.com/opencontainers/go-digest"
)

// inUse is what eviction must not touch: a reference count per digest the
// Service is using — every open Blob (OpenBlob to Close), every fill (start
// to commit and index records), every manifest being read or stored — and
// the digests reserved for deletion.
//
// A digest is never both pinned and reserved: reserve fails while any of
// its digests is pinned, and pin waits while its digest is reserved. After
// the reservation ends the content is gone, so the waiting request finds a
// miss and fetches it again, exactly as if it had arrived a moment later.
// The zero value is ready to use.
type inUse struct {
	mu       sync.Mutex
	pins     map[digest.Digest]int
	reserved map[digest.Digest]chan struct{} // closed when the reservation ends
}

// pin marks d in use until unpin is called (exactly once), waiting while d
// is reserved for deletion.
func (u *inUse) pin(ctx context.Context, d digest.Digest) (unpin func(), err error) {
	for {
		u.mu.Lock()
		wait, reserved := u.reserved[d]
		if !reserved {
			u.addLocked(d)
			u.mu.Unlock()
			return func() { u.unpin(d) }, nil
		}
		u.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// hold adds a pin on d for a caller that already holds one, so d cannot be
// reserved and there is nothing to wait for. Release it with unpin.
func (u *inUse) hold(d digest.Digest) {
	u.mu.Lock()
	u.addLocked(d)
	u.mu.Unlock()
}

func (u *inUse) addLocked(d digest.Digest) {
	if u.pins == nil {
		u.pins = make(map[digest.Digest]int)
	}
	u.pins[d]++
}

func (u *inUse) unpin(d digest.Digest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := u.pins[d] - 1; n > 0 {
		u.pins[d] = n
	} else {
		delete(u.pins, d)
	}
}

func (u *inUse) pinned(d digest.Digest) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pins[d] > 0
}

// reserve reserves all of ds, or none when one of them is pinned, already
// reserved, or busy (checked under the same lock, so no pin can slip in
// between). release ends the reservation and may be called more than once.
func (u *inUse) reserve(ds []digest.Digest, busy func(digest.Digest) bool) (release func(), ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, d := range ds {
		if _, r := u.reserved[d]; r || u.pins[d] > 0 || busy(d) {
			return nil, false
		}
	}
	if u.reserved == nil {
		u.reserved = make(map[digest.Digest]chan struct{})
	}
	done := make(chan struct{})
	for _, d := range ds {
		u.reserved[d] = done
	}
	return sync.OnceFunc(func() {
		u.mu.Lock()
		for _, d := range ds {
			if u.reserved[d] == done {
				delete(u.reserved, d)
			}
		}
		u.mu.Unlock()
		close(done)
	}), true
}

// InUse reports whether d is being served or fetched right now, or was
// served since last-access times were last written to the index (so that
// the index's last access of d is out of date).
func (s *Service) InUse(d digest.Digest) bool {
	return s.inuse.pinned(d) || s.access.touched(d)
}

// FlushAccess writes the batched last-access times to the index now, so
// that a decision by last access (eviction) sees every request served so
// far.
func (s *Service) FlushAccess(ctx context.Context) error {
	return s.access.flush(ctx)
}

// Reserve reserves ds for deletion from the cache, if none of them is in
// use (InUse) or reserved already; it reserves all of ds or nothing. While
// they are reserved, requests for any of them wait; after release they
// proceed, find whatever was deleted missing, and fetch it again. The
// caller deletes the content (index records first, then bytes) and then
// calls release, which may be called more than once.
//
// release also forgets the repository links the Service remembers, since
// the index no longer has those of deleted content; they are looked up in
// the index again as requests come.
func (s *Service) Reserve(ds ...digest.Digest) (release func(), ok bool) {
	end, ok := s.inuse.reserve(ds, s.access.touched)
	if !ok {
		return nil, false
	}
	return func() {
		s.links.reset()
		end()
	}, true
}

// reset forgets every remembered link.
func (c *linkCache) reset() {
	c.mu.Lock()
	c.set = nil
	c.mu.Unlock()
}

// touched reports whether d was served since the last flush.
func (a *accessLog) touched(d digest.Digest) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.pending[d]
	return ok
}
