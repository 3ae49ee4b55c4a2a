package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultTimeout bounds one token exchange when Config.Timeout is zero.
	DefaultTimeout = 30 * time.Second
	// flightAttempts bounds how often a caller takes over a fetch whose
	// leader gave up because its own context ended.
	flightAttempts = 3
	// minSweep is the cache size below which expired tokens are not swept.
	minSweep = 64
)

// Config configures a Cache. The zero value is usable.
type Config struct {
	// Transport carries token requests; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// UserAgent is sent with every token request; default "wharf".
	UserAgent string
	// AllowedRealms lists realm hosts that CheckRealm accepts even on
	// internal addresses (see CheckRealm for the entry forms).
	AllowedRealms []string
	// Timeout bounds one token exchange, redirects included; default
	// DefaultTimeout.
	Timeout time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Cache fetches bearer tokens and keeps them until shortly before they
// expire. It is safe for concurrent use; create it with NewCache.
type Cache struct {
	transport http.RoundTripper
	userAgent string
	allow     []string
	timeout   time.Duration
	now       func() time.Time
	// salt keys the hash that stands for a password in cache keys, so
	// that the keys are useless for guessing passwords offline.
	salt [32]byte

	// onWait, when set by tests, is called when a caller starts waiting
	// for another caller's fetch.
	onWait func()

	mu      sync.Mutex
	tokens  map[string]token
	flights map[string]*flight
	sweepAt int
}

// flight is a token fetch in progress; waiters block on done.
type flight struct {
	done  chan struct{}
	value string
	err   error
	// abandoned: the fetch failed because the fetching caller's context
	// ended, which says nothing about the realm.
	abandoned bool
}

// NewCache returns an empty token cache.
func NewCache(cfg Config) *Cache {
	c := &Cache{
		transport: cfg.Transport,
		userAgent: cfg.UserAgent,
		allow:     slices.Clone(cfg.AllowedRealms),
		timeout:   cfg.Timeout,
		now:       cfg.Now,
		tokens:    map[string]token{},
		flights:   map[string]*flight{},
		sweepAt:   minSweep,
	}
	if c.transport == nil {
		c.transport = http.DefaultTransport
	}
	if c.userAgent == "" {
		c.userAgent = "wharf"
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	// crypto/rand.Read never fails (it panics on a broken system source).
	_, _ = rand.Read(c.salt[:])
	return c
}

// Token returns a bearer token for r: a cached one while it is usable,
// otherwise a fresh one from the realm. Concurrent calls for the same key
// share one fetch; a caller whose context ends stops waiting, and if the
// fetching caller's context ends the others fetch for themselves.
//
// Errors: ErrRealmNotAllowed (wrapped) when CheckRealm refuses the realm;
// *TokenError for a non-2xx answer; ErrNoToken (wrapped) for an unusable
// 2xx answer; the *url.Error of net/http for transport failures; the
// context's error when ctx ends while waiting.
func (c *Cache) Token(ctx context.Context, r Request) (string, error) {
	realm, err := CheckRealm(r.Realm, r.Origin, c.allow)
	if err != nil {
		return "", err
	}
	key := c.key(r)
	for attempt := 1; ; attempt++ {
		c.mu.Lock()
		if t, ok := c.tokens[key]; ok && t.usable(c.now()) {
			c.mu.Unlock()
			return t.value, nil
		}
		if f, ok := c.flights[key]; ok {
			c.mu.Unlock()
			if c.onWait != nil {
				c.onWait()
			}
			select {
			case <-f.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if f.err == nil {
				return f.value, nil
			}
			// The leader's context ended, not ours: fetch ourselves.
			if f.abandoned && ctx.Err() == nil && attempt < flightAttempts {
				continue
			}
			return "", f.err
		}
		f := &flight{done: make(chan struct{})}
		c.flights[key] = f
		c.mu.Unlock()

		t, err := c.fetch(ctx, r, realm)

		c.mu.Lock()
		delete(c.flights, key)
		if err == nil {
			c.store(key, t)
		}
		c.mu.Unlock()
		f.value, f.err, f.abandoned = t.value, err, err != nil && ctx.Err() != nil
		close(f.done)
		return t.value, err
	}
}

// Invalidate forgets the cached token for r if it is value: the registry
// rejected it (a 401 although it had not expired). A token that was
// replaced in the meantime by a concurrent refresh is kept.
func (c *Cache) Invalidate(r Request, value string) {
	key := c.key(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[key]; ok && t.value == value {
		delete(c.tokens, key)
	}
}

// store adds t under key; c.mu is held. Expired tokens are swept whenever
// the map has doubled since the last sweep, which bounds it to about twice
// the number of live tokens at amortised constant cost.
func (c *Cache) store(key string, t token) {
	c.tokens[key] = t
	if len(c.tokens) < c.sweepAt {
		return
	}
	now := c.now()
	for k, v := range c.tokens {
		if !v.usable(now) {
			delete(c.tokens, k)
		}
	}
	c.sweepAt = max(2*len(c.tokens), minSweep)
}

// key identifies a token: realm, service, the sorted set of scopes and the
// credential identity (client-compat.md §4.1). The password is represented
// by a keyed hash.
func (c *Cache) key(r Request) string {
	scopes := slices.Clone(r.Scopes)
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	identity := "-"
	if !r.Credentials.Anonymous() {
		m := hmac.New(sha256.New, c.salt[:])
		m.Write([]byte(r.Credentials.Username))
		m.Write([]byte{0})
		m.Write([]byte(r.Credentials.Password))
		identity = r.Credentials.Username + "\x00" + hex.EncodeToString(m.Sum(nil))
	}
	return strings.Join([]string{r.Realm, r.Service, strings.Join(scopes, " "), identity}, "\x00")
}
