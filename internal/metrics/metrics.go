// Package metrics owns every Prometheus collector of wharf: one Metrics
// struct, built by New on a Registerer the caller injects (there is no
// global registry and nothing registers in init).
//
// The packages that do the work do not import Prometheus, nor this package:
// each declares a small Observer interface of its own (ociapi, mirror,
// upstream) in plain types, and *Metrics implements all of them; the server
// wires them together.
//
// Invariants:
//   - Labels are only upstream, kind, result, code and source, each from a
//     small fixed set (configured upstream names, the API object kinds, the
//     cache results, HTTP status codes, cache|upstream). Never a repository,
//     tag or digest: their number is unbounded, and they may be private.
//   - A nil *Metrics is valid and records nothing, so that components and
//     tests that do not care about metrics pass nil.
//   - Recording never blocks on I/O: methods are called on the hot path,
//     once per request or per chunk of a blob.
package metrics

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values this package decides; the others come from the callers.
const (
	resultNone = "none" // no cache lookup: the /v2/ version check

	kindBlob     = "blob"
	kindManifest = "manifest"

	sourceCache    = "cache"
	sourceUpstream = "upstream"
)

// requestBuckets span a manifest hit (about a millisecond) to a blob of
// gigabytes streamed over a slow link (minutes).
var requestBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// upstreamBuckets measure the time to response headers, bounded by the
// header timeout (default 30 s).
var upstreamBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics holds the collectors. Create it with New; the zero value is not
// usable, a nil pointer is (and records nothing).
type Metrics struct {
	requests        *prometheus.CounterVec   // kind, result, code
	requestDuration *prometheus.HistogramVec // kind

	cacheHits        *prometheus.CounterVec // upstream, kind
	cacheMisses      *prometheus.CounterVec // upstream, kind
	staleServes      *prometheus.CounterVec // upstream
	coalescedWaiters *prometheus.CounterVec // upstream

	bytesServed   *prometheus.CounterVec // upstream, source
	upstreamBytes *prometheus.CounterVec // upstream

	upstreamRequests  *prometheus.CounterVec   // upstream, kind, code
	upstreamDuration  *prometheus.HistogramVec // upstream, kind
	upstreamErrors    *prometheus.CounterVec   // upstream, kind
	upstreamThrottled *prometheus.CounterVec   // upstream

	evictionRuns *prometheus.CounterVec // result
	evictedBytes prometheus.Counter
	evictedItems *prometheus.CounterVec // kind

	cache      *cacheCollector
	rateLimits *rateLimitCollector

	totals totals // process-wide sums for the admin API's overview
}

// totals mirrors a few counters as plain sums, so that the admin API can
// report them without gathering and parsing the registry.
type totals struct {
	requests, hits, misses, stale    atomic.Int64
	fromCache, fromUpstream, fetched atomic.Int64
}

// Totals are sums over every label since the Metrics were created.
type Totals struct {
	Requests          int64 // manifest and blob requests answered
	Hits, Misses      int64 // manifest and blob requests, as the hit and miss counters count them
	StaleServes       int64
	BytesFromCache    int64 // blob bytes served from committed files
	BytesFromUpstream int64 // blob bytes served while being fetched
	BytesFetched      int64 // bytes fetched from upstream
}

// Totals returns the sums so far; zero for a nil *Metrics.
func (m *Metrics) Totals() Totals {
	if m == nil {
		return Totals{}
	}
	t := &m.totals
	return Totals{
		Requests:          t.requests.Load(),
		Hits:              t.hits.Load(),
		Misses:            t.misses.Load(),
		StaleServes:       t.stale.Load(),
		BytesFromCache:    t.fromCache.Load(),
		BytesFromUpstream: t.fromUpstream.Load(),
		BytesFetched:      t.fetched.Load(),
	}
}

// New creates the collectors and registers them on reg. It panics if one
// is already registered there (a programming error, like registering twice).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_requests_total",
			Help: "Registry API requests answered, by API object kind (manifest, blob, tags, referrers, base, other), " +
				"cache result (hit, miss, revalidated, stale, joined, pass, none, or error for an error response or an aborted body) " +
				"and HTTP status code.",
		}, []string{"kind", "result", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wharf_request_duration_seconds",
			Help:    "Time from receiving a registry API request to the end of its response body, by API object kind.",
			Buckets: requestBuckets,
		}, []string{"kind"}),

		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_hits_total",
			Help: "Manifest and blob requests answered from the cache (results hit, revalidated and stale).",
		}, []string{"upstream", "kind"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_misses_total",
			Help: "Manifest and blob requests the cache could not answer by itself (results miss, joined and pass).",
		}, []string{"upstream", "kind"}),
		staleServes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_stale_serves_total",
			Help: "Requests answered with a stale tag or tag list because upstream failed.",
		}, []string{"upstream"}),
		coalescedWaiters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_coalesced_waiters_total",
			Help: "Blob requests that joined an upstream fetch another request started, instead of fetching again.",
		}, []string{"upstream"}),

		bytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_bytes_served_total",
			Help: "Blob bytes written to clients, by source: cache (read from a committed file) " +
				"or upstream (streamed while the upstream fetch was in progress).",
		}, []string{"upstream", "source"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_upstream_bytes_total",
			Help: "Bytes fetched from upstream into the cache (blobs and manifests).",
		}, []string{"upstream"}),

		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_upstream_requests_total",
			Help: "HTTP requests to upstream that got a response (every redirect hop, authentication round and retry counts), " +
				"by kind (manifest, blob, tags, referrers, ping, token) and status code.",
		}, []string{"upstream", "kind", "code"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wharf_upstream_request_duration_seconds",
			Help:    "Time from sending an HTTP request to upstream to its response headers (or the failure), by kind.",
			Buckets: upstreamBuckets,
		}, []string{"upstream", "kind"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_upstream_errors_total",
			Help: "HTTP requests to upstream that got no response: connection refused or reset, DNS or TLS failure, timeout.",
		}, []string{"upstream", "kind"}),
		upstreamThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_upstream_throttled_total",
			Help: "Upstream responses with status 429 Too Many Requests.",
		}, []string{"upstream"}),

		evictionRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_eviction_runs_total",
			Help: "Cache eviction runs, background or on demand, by result (ok or error).",
		}, []string{"result"}),
		evictedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wharf_evicted_bytes_total",
			Help: "Bytes of content deleted by cache eviction.",
		}),
		evictedItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_evicted_items_total",
			Help: "Manifests and blobs deleted by cache eviction, by kind (manifest or blob).",
		}, []string{"kind"}),

		cache:      newCacheCollector(),
		rateLimits: newRateLimitCollector(),
	}
	reg.MustRegister(
		m.requests, m.requestDuration,
		m.cacheHits, m.cacheMisses, m.staleServes, m.coalescedWaiters,
		m.bytesServed, m.upstreamBytes,
		m.upstreamRequests, m.upstreamDuration, m.upstreamErrors, m.upstreamThrottled,
		m.evictionRuns, m.evictedBytes, m.evictedItems,
		m.cache, m.rateLimits,
	)
	return m
}

// Eviction records one cache eviction run: what it deleted, or that it
// failed (what it deleted before failing still counts).
func (m *Metrics) Eviction(manifests, blobs int, bytes int64, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.evictionRuns.WithLabelValues(result).Inc()
	m.evictedBytes.Add(float64(bytes))
	m.evictedItems.WithLabelValues(kindManifest).Add(float64(manifests))
	m.evictedItems.WithLabelValues(kindBlob).Add(float64(blobs))
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors, for a process's /metrics endpoint; pass it to New.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics of g in the Prometheus exposition formats.
// A collector that fails is reported in the response and the rest is
// still served.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Request records one registry API request when its response is complete
// (ociapi.Observer). kind is the API object ("manifest", "blob", "tags",
// "referrers", "base", "other"); upstream is "" when the request was not
// routed to one; result is the cache result (the X-Wharf-Cache values),
// "error" for an error response or an aborted body, or "" when the request
// involved no cache lookup (recorded as "none").
// Manifest and blob requests also count as cache hits or misses, stale
// answers as stale serves, and joined fetches as coalesced waiters.
func (m *Metrics) Request(kind, upstream, result string, status int, elapsed time.Duration) {
	if m == nil {
		return
	}
	if result == "" {
		result = resultNone
	}
	m.requests.WithLabelValues(kind, result, strconv.Itoa(status)).Inc()
	m.requestDuration.WithLabelValues(kind).Observe(elapsed.Seconds())
	if upstream == "" {
		return
	}
	switch result {
	case "stale":
		m.staleServes.WithLabelValues(upstream).Inc()
		m.totals.stale.Add(1)
	case "joined":
		m.coalescedWaiters.WithLabelValues(upstream).Inc()
	}
	if kind != kindManifest && kind != kindBlob {
		return
	}
	m.totals.requests.Add(1)
	switch result {
	case "hit", "revalidated", "stale":
		m.cacheHits.WithLabelValues(upstream, kind).Inc()
		m.totals.hits.Add(1)
	case "miss", "joined", "pass":
		m.cacheMisses.WithLabelValues(upstream, kind).Inc()
		m.totals.misses.Add(1)
	}
}

// BlobBytesServed records n blob bytes written to a client of upstream
// (mirror.Observer): read from a committed file when fromCache, else from
// an upstream fetch in progress.
func (m *Metrics) BlobBytesServed(upstream string, fromCache bool, n int64) {
	if m == nil || n <= 0 {
		return
	}
	source := sourceUpstream
	if fromCache {
		source = sourceCache
		m.totals.fromCache.Add(n)
	} else {
		m.totals.fromUpstream.Add(n)
	}
	m.bytesServed.WithLabelValues(upstream, source).Add(float64(n))
}

// UpstreamBytes records n bytes fetched from upstream into the cache
// (mirror.Observer).
func (m *Metrics) UpstreamBytes(upstream string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.upstreamBytes.WithLabelValues(upstream).Add(float64(n))
	m.totals.fetched.Add(n)
}

// UpstreamRequest records one HTTP exchange with upstream
// (upstream.Observer). kind is "manifest", "blob", "tags", "referrers",
// "ping" or "token"; status is 0 when no response came back, and err then
// says why. A request cancelled because its client went away says nothing
// about upstream and is not recorded.
func (m *Metrics) UpstreamRequest(upstream, kind string, status int, elapsed time.Duration, err error) {
	if m == nil {
		return
	}
	if status == 0 && errors.Is(err, context.Canceled) {
		return
	}
	m.upstreamDuration.WithLabelValues(upstream, kind).Observe(elapsed.Seconds())
	if status == 0 {
		m.upstreamErrors.WithLabelValues(upstream, kind).Inc()
		return
	}
	m.upstreamRequests.WithLabelValues(upstream, kind, strconv.Itoa(status)).Inc()
	if status == http.StatusTooManyRequests {
		m.upstreamThrottled.WithLabelValues(upstream).Inc()
	}
}

// WatchRateLimit makes the Docker Hub rate-limit gauges of upstream read
// read() at every scrape. read returns the pulls per window the upstream
// last reported, -1 for a value it did not report (then no sample is
// exposed). A later call for the same upstream replaces the earlier one.
func (m *Metrics) WatchRateLimit(upstream string, read func() (limit, remaining int)) {
	if m == nil {
		return
	}
	m.rateLimits.watch(upstream, read)
}

// rateLimitCollector exposes the rate-limit headers upstream clients
// remembered, read at scrape time so that the gauges are never older than
// the last response.
type rateLimitCollector struct {
	limit, remaining *prometheus.Desc

	mu      sync.Mutex
	sources map[string]func() (limit, remaining int)
}

func newRateLimitCollector() *rateLimitCollector {
	return &rateLimitCollector{
		limit: prometheus.NewDesc("wharf_dockerhub_ratelimit_limit",
			"Pulls allowed per window, from the ratelimit-limit header of the upstream's latest response that had one.",
			[]string{"upstream"}, nil),
		remaining: prometheus.NewDesc("wharf_dockerhub_ratelimit_remaining",
			"Pulls left in the current window, from the ratelimit-remaining header of the upstream's latest response that had one.",
			[]string{"upstream"}, nil),
		sources: make(map[string]func() (int, int)),
	}
}

func (c *rateLimitCollector) watch(upstream string, read func() (int, int)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[upstream] = read
}

func (c *rateLimitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.limit
	ch <- c.remaining
}

func (c *rateLimitCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := maps.Clone(c.sources)
	c.mu.Unlock()
	for upstream, read := range sources {
		limit, remaining := read()
		if limit >= 0 {
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(limit), upstream)
		}
		if remaining >= 0 {
			ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, float64(remaining), upstream)
		}
	}
}

// CacheUsage is what the cache holds.
type CacheUsage struct {
	Blobs, Manifests int64
	// Bytes is the size of the content, each stored file counted once.
	Bytes int64
}

// scrapeTimeout bounds reading the cache usage during one scrape.
const scrapeTimeout = 10 * time.Second

// WatchCache makes the cache gauges call read at every scrape, so that
// they always agree with the index, whatever filled or evicted it. An
// error is reported to the scraper for these gauges only. A later call
// replaces the earlier one.
func (m *Metrics) WatchCache(read func(context.Context) (CacheUsage, error)) {
	if m == nil {
		return
	}
	m.cache.mu.Lock()
	m.cache.read = read
	m.cache.mu.Unlock()
}

// cacheCollector exposes the cache usage, read at scrape time.
type cacheCollector struct {
	bytes, blobs, manifests *prometheus.Desc

	mu   sync.Mutex
	read func(context.Context) (CacheUsage, error)
}

func newCacheCollector() *cacheCollector {
	return &cacheCollector{
		bytes:     prometheus.NewDesc("wharf_cache_size_bytes", "Bytes of content in the cache (blobs and manifests, each stored file once).", nil, nil),
		blobs:     prometheus.NewDesc("wharf_cache_blobs", "Blobs in the cache.", nil, nil),
		manifests: prometheus.NewDesc("wharf_cache_manifests", "Manifests in the cache.", nil, nil),
	}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.blobs
	ch <- c.manifests
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	read := c.read
	c.mu.Unlock()
	if read == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	u, err := read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.bytes, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(u.Bytes))
	ch <- prometheus.MustNewConstMetric(c.blobs, prometheus.GaugeValue, float64(u.Blobs))
	ch <- prometheus.MustNewConstMetric(c.manifests, prometheus.GaugeValue, float64(u.Manifests))
}
