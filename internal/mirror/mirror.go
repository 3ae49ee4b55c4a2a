// Package mirror is the pull-through core of wharf: it answers manifest, blob,
// tag-list and referrers requests for an upstream repository from the local
// cache, filling the cache from upstream on a miss.
//
// Invariants:
//   - Content addressed by digest is immutable: a cached digest is served with
//     no upstream request (once it is known to belong to the repository).
//   - Tags are mutable: a cached tag is trusted for the upstream's tag TTL,
//     then revalidated with an upstream HEAD (never a GET unless the digest
//     changed); when upstream fails, the last known mapping is served while it
//     is younger than the upstream's maximum staleness (stale-if-error).
//   - One upstream fetch per digest per process: concurrent requests for an
//     uncached blob share one fetch that the Service owns (it outlives the
//     client that started it); every waiter streams the bytes as they land in
//     the store's temp file.
//   - Nothing unverified is ever committed, and no response is ever completed
//     with unverified bytes: the last byte of every streamed response is held
//     back until the whole blob has been verified and committed.
//   - Content is served for a repository only if it was seen in that
//     repository (linked in the index) or upstream confirms that the
//     repository has it, so the cache never hands content across
//     repositories.
//   - Content being served, fetched or stored is pinned (inuse.go):
//     eviction reserves content before deleting it, never reserves pinned
//     content, and requests for reserved content wait until it is gone.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/upstream"
)

// Upstream is what the mirror needs from an upstream registry client;
// *upstream.Client implements it.
type Upstream interface {
	HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error)
	GetManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, []byte, error)
	HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error)
	Do(ctx context.Context, method, repo, suffix, rawQuery string, accept []string) (*http.Response, error)
}

// Policy is the freshness policy of one upstream.
type Policy struct {
	// TagTTL is how long a tag mapping is trusted before it is revalidated
	// upstream with a HEAD request. Zero revalidates on every request.
	TagTTL time.Duration
	// MaxStale bounds stale-if-error: when upstream fails, a tag mapping
	// last confirmed at most MaxStale ago is served anyway.
	MaxStale time.Duration
	// NegativeTTL is how long an upstream 404 for a tag is remembered.
	NegativeTTL time.Duration
}

// UpstreamConfig configures one upstream registry.
type UpstreamConfig struct {
	Name   string // canonical registry name, e.g. "docker.io"
	Client Upstream
	Policy Policy
}

// Config configures a Service.
type Config struct {
	Upstreams []UpstreamConfig
	Blobs     blob.Store
	Index     meta.Index
	Logger    *slog.Logger
	// FetchTimeout bounds one upstream blob fetch, which runs detached from
	// the client that started it. Default 1h.
	FetchTimeout time.Duration
	// AccessFlushInterval is how often batched last-access times are
	// written to the index. Default 15s.
	AccessFlushInterval time.Duration
	// RevalidateTimeout bounds the upstream check of a cached tag that
	// could be served stale: a hanging upstream must not hold a pull for
	// minutes when the answer is already on disk. Default 10s.
	RevalidateTimeout time.Duration
	// DownBackoff is how long an upstream that failed is considered down.
	// While it is, the revalidation of a tag that can be served stale gets
	// only DownProbeTimeout, so each pull waits at most that long, and the
	// first pull after the upstream recovers gets the fresh answer.
	// Defaults 30s and 1s.
	DownBackoff      time.Duration
	DownProbeTimeout time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Observer, when set, is told the bytes served and fetched (metrics).
	Observer Observer
}

// Errors returned by the Service. Upstream failures are returned as the
// upstream package's errors (wrapped), so callers can map status codes.
var (
	ErrUnknownUpstream = errors.New("unknown upstream")
	// ErrNotFound: the object does not exist (upstream said 404, possibly
	// remembered by the negative cache).
	ErrNotFound = errors.New("not found")
	// ErrNotInRepository: the content is cached but not known to belong to
	// the requested repository, and upstream could not confirm it.
	ErrNotInRepository = errors.New("content not known in this repository")
	// ErrListingTooLarge: an upstream tags/list or referrers answer is
	// larger than the 8 MiB wharf relays.
	ErrListingTooLarge = errors.New("upstream listing too large")
)

// Service is the pull-through cache. Create it with New and stop it with
// Close.
type Service struct {
	ups     map[string]*upstreamState
	blobs   blob.Store
	index   meta.Index
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
	obs     Observer

	revalidateTimeout time.Duration
	downBackoff       time.Duration
	downProbeTimeout  time.Duration

	tags singleflight.Group // key: upstream \x00 repo \x00 tag
	mans singleflight.Group // key: upstream \x00 repo \x00 digest

	fillMu sync.Mutex
	fills  map[digest.Digest]*fill

	access *accessLog
	links  linkCache
	inuse  inUse // what eviction must not delete; see inuse.go

	// bg tracks goroutines the Service owns (fills, the access flusher).
	bg       sync.WaitGroup
	stopCtx  context.Context
	stopFunc context.CancelFunc
}

type upstreamState struct {
	name   string
	client Upstream
	policy Policy

	negMu sync.Mutex
	neg   map[string]time.Time // repo \x00 tag → expiry of a remembered 404

	downMu    sync.Mutex
	downUntil time.Time // until then, stale-able revalidations get a short probe
}

// down reports whether the upstream recently failed.
func (u *upstreamState) down(now time.Time) bool {
	u.downMu.Lock()
	defer u.downMu.Unlock()
	return now.Before(u.downUntil)
}

func (u *upstreamState) markDown(until time.Time) {
	u.downMu.Lock()
	u.downUntil = until
	u.downMu.Unlock()
}

// New creates a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Blobs == nil || cfg.Index == nil {
		return nil, errors.New("mirror: blob store and index are required")
	}
	s := &Service{
		ups:     make(map[string]*upstreamState, len(cfg.Upstreams)),
		blobs:   cfg.Blobs,
		index:   cfg.Index,
		log:     cfg.Logger,
		now:     cfg.Now,
		timeout: cfg.FetchTimeout,
		obs:     observerOrNop(cfg.Observer),
		fills:   make(map[digest.Digest]*fill),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.timeout <= 0 {
		s.timeout = time.Hour
	}
	s.revalidateTimeout, s.downBackoff, s.downProbeTimeout = cfg.RevalidateTimeout, cfg.DownBackoff, cfg.DownProbeTimeout
	if s.revalidateTimeout <= 0 {
		s.revalidateTimeout = 10 * time.Second
	}
	if s.downBackoff <= 0 {
		s.downBackoff = 30 * time.Second
	}
	if s.downProbeTimeout <= 0 {
		s.downProbeTimeout = time.Second
	}
	for _, u := range cfg.Upstreams {
		if u.Name == "" || u.Client == nil {
			return nil, fmt.Errorf("mirror: upstream %q has no name or client", u.Name)
		}
		if _, dup := s.ups[u.Name]; dup {
			return nil, fmt.Errorf("mirror: upstream %q configured twice", u.Name)
		}
		s.ups[u.Name] = &upstreamState{name: u.Name, client: u.Client, policy: u.Policy, neg: make(map[string]time.Time)}
	}
	s.stopCtx, s.stopFunc = context.WithCancel(context.Background())
	flush := cfg.AccessFlushInterval
	if flush <= 0 {
		flush = 15 * time.Second
	}
	s.access = newAccessLog(s.index, s.log)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.access.run(s.stopCtx, flush)
	}()
	return s, nil
}

// Upstreams returns the names of the configured upstreams, sorted.
func (s *Service) Upstreams() []string {
	names := make([]string, 0, len(s.ups))
	for n := range s.ups {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Close cancels in-flight fetches, waits for every goroutine the Service
// started and flushes the access log.
func (s *Service) Close() error {
	s.stopFunc()
	s.bg.Wait()
	return s.access.flush(context.Background())
}

func (s *Service) upstream(name string) (*upstreamState, error) {
	u, ok := s.ups[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownUpstream, name)
	}
	return u, nil
}

// detached returns a context for work that must not be cancelled by the
// client that triggered it (shared fetches), bounded by d and by Close.
func (s *Service) detached(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(s.stopCtx, d)
	return ctx, cancel
}

// linkedOrConfirmed reports whether cached content d may be served for
// u/repo: either it was seen there, or upstream confirms it now (and the link
// is recorded). confirm performs the upstream check.
func (s *Service) linkedOrConfirmed(ctx context.Context, u *upstreamState, repo string, d digest.Digest, confirm func(context.Context) error) error {
	key := u.name + "\x00" + repo + "\x00" + string(d)
	if s.links.has(key) {
		return nil
	}
	ok, err := s.index.Linked(ctx, u.name, repo, d)
	if err != nil {
		return fmt.Errorf("index lookup: %w", err)
	}
	if ok {
		s.links.add(key)
		return nil
	}
	if err := confirm(ctx); err != nil {
		if upstream.IsNotFound(err) {
			return fmt.Errorf("%w: %s in %s/%s", ErrNotFound, d, u.name, repo)
		}
		return fmt.Errorf("%w: %s in %s/%s: %w", ErrNotInRepository, d, u.name, repo, err)
	}
	if err := s.index.Link(ctx, u.name, repo, d); err != nil {
		return fmt.Errorf("index link: %w", err)
	}
	s.links.add(key)
	return nil
}

// linkCache remembers links confirmed in the index, so that a cache hit
// does not query the index every time. Links are removed only with evicted
// content, and eviction resets the set (Reserve), so a remembered link stays
// true; the set is bounded by starting over when it is full.
type linkCache struct {
	mu  sync.RWMutex
	set map[string]struct{}
}

const maxCachedLinks = 1 << 17

func (c *linkCache) has(key string) bool {
	c.mu.RLock()
	_, ok := c.set[key]
	c.mu.RUnlock()
	return ok
}

func (c *linkCache) add(key string) {
	c.mu.Lock()
	if c.set == nil || len(c.set) >= maxCachedLinks {
		c.set = make(map[string]struct{})
	}
	c.set[key] = struct{}{}
	c.mu.Unlock()
}
