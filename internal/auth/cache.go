package auth

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// Bounds of the verification cache.
const (
	maxCacheEntries = 1024
	cacheTTL        = 5 * time.Minute
)

// verifyCache remembers successful bcrypt verifications so that a client
// sending Basic credentials on every request (or fetching a token per
// repository) pays the ~50–100 ms of bcrypt once per five minutes, not per
// request. Keys are HMACs of user and password; only successes are kept,
// each for one generation of the htpasswd file.
type verifyCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]*list.Element // of *cacheEntry
	order   *list.List                          // insertion order, oldest at the front
}

type cacheEntry struct {
	key     [sha256.Size]byte
	gen     uint64
	expires time.Time
}

func newVerifyCache() *verifyCache {
	return &verifyCache{entries: make(map[[sha256.Size]byte]*list.Element), order: list.New()}
}

// hit reports whether key was verified for generation gen and has not
// expired.
func (c *verifyCache) hit(key [sha256.Size]byte, gen uint64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	ent := e.Value.(*cacheEntry)
	if ent.gen != gen || !now.Before(ent.expires) {
		delete(c.entries, key)
		c.order.Remove(e)
		return false
	}
	return true
}

// add records a successful verification, dropping the oldest entry when
// full.
func (c *verifyCache) add(key [sha256.Size]byte, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		c.order.Remove(e)
	}
	for c.order.Len() >= maxCacheEntries {
		front := c.order.Front()
		delete(c.entries, front.Value.(*cacheEntry).key)
		c.order.Remove(front)
	}
	c.entries[key] = c.order.PushBack(&cacheEntry{key: key, gen: gen, expires: now.Add(cacheTTL)})
}

// clear drops every entry (the htpasswd file was reloaded).
func (c *verifyCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.order.Init()
}

// len is the number of entries (tests).
func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
