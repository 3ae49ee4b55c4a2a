package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	return New(reg), reg
}

func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Request("blob", "docker.io", "hit", 200, time.Millisecond)
	m.BlobBytesServed("docker.io", true, 10)
	m.UpstreamBytes("docker.io", 10)
	m.UpstreamRequest("docker.io", "blob", 200, time.Millisecond, nil)
	m.WatchRateLimit("docker.io", func() (int, int) { return 1, 1 })
	m.WatchCache(func(context.Context) (CacheUsage, error) { return CacheUsage{}, nil })
}

// TestRequestClassification: one request feeds the request counters and,
// by its result, the cache hit, miss, stale and coalesced counters.
func TestRequestClassification(t *testing.T) {
	type counts struct{ Requests, Hits, Misses, Stale, Joined float64 }
	tests := []struct {
		kind, upstream, result string
		status                 int
		wantResult             string // label value recorded
		want                   counts
	}{
		{"blob", "docker.io", "hit", 200, "hit", counts{1, 1, 0, 0, 0}},
		{"manifest", "docker.io", "revalidated", 200, "revalidated", counts{1, 1, 0, 0, 0}},
		{"manifest", "docker.io", "stale", 200, "stale", counts{1, 1, 0, 1, 0}},
		{"blob", "docker.io", "miss", 200, "miss", counts{1, 0, 1, 0, 0}},
		{"blob", "docker.io", "joined", 206, "joined", counts{1, 0, 1, 0, 1}},
		{"blob", "docker.io", "pass", 200, "pass", counts{1, 0, 1, 0, 0}},
		{"blob", "docker.io", "error", 503, "error", counts{1, 0, 0, 0, 0}},
		// Tag lists are no cache lookup of content, but stale ones count.
		{"tags", "docker.io", "stale", 200, "stale", counts{1, 0, 0, 1, 0}},
		{"tags", "docker.io", "pass", 200, "pass", counts{1, 0, 0, 0, 0}},
		{"base", "", "", 200, "none", counts{1, 0, 0, 0, 0}},
		{"other", "", "error", 404, "error", counts{1, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %d", tt.kind, tt.result, tt.status), func(t *testing.T) {
			m, _ := newTestMetrics(t)
			m.Request(tt.kind, tt.upstream, tt.result, tt.status, 3*time.Millisecond)
			up := tt.upstream
			got := counts{
				Requests: testutil.ToFloat64(m.requests.WithLabelValues(tt.kind, tt.wantResult, fmt.Sprint(tt.status))),
				Hits:     testutil.ToFloat64(m.cacheHits.WithLabelValues(up, tt.kind)),
				Misses:   testutil.ToFloat64(m.cacheMisses.WithLabelValues(up, tt.kind)),
				Stale:    testutil.ToFloat64(m.staleServes.WithLabelValues(up)),
				Joined:   testutil.ToFloat64(m.coalescedWaiters.WithLabelValues(up)),
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("counters (-want +got):\n%s", diff)
			}
			if n := testutil.CollectAndCount(m.requestDuration); n != 1 {
				t.Errorf("%d duration series, want 1", n)
			}
		})
	}
}

func TestBytes(t *testing.T) {
	m, _ := newTestMetrics(t)
	m.BlobBytesServed("docker.io", true, 100)
	m.BlobBytesServed("docker.io", false, 30)
	m.BlobBytesServed("docker.io", false, 0) // a failed write
	m.BlobBytesServed("ghcr.io", true, 5)
	m.UpstreamBytes("docker.io", 30)
	m.UpstreamBytes("docker.io", 12)
	got := map[string]float64{
		"docker.io cache":    testutil.ToFloat64(m.bytesServed.WithLabelValues("docker.io", "cache")),
		"docker.io upstream": testutil.ToFloat64(m.bytesServed.WithLabelValues("docker.io", "upstream")),
		"ghcr.io cache":      testutil.ToFloat64(m.bytesServed.WithLabelValues("ghcr.io", "cache")),
		"docker.io fetched":  testutil.ToFloat64(m.upstreamBytes.WithLabelValues("docker.io")),
	}
	want := map[string]float64{"docker.io cache": 100, "docker.io upstream": 30, "ghcr.io cache": 5, "docker.io fetched": 42}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUpstreamRequest(t *testing.T) {
	m, _ := newTestMetrics(t)
	m.UpstreamRequest("docker.io", "manifest", 200, 10*time.Millisecond, nil)
	m.UpstreamRequest("docker.io", "manifest", 429, 10*time.Millisecond, nil)
	m.UpstreamRequest("docker.io", "token", 200, 10*time.Millisecond, nil)
	m.UpstreamRequest("docker.io", "blob", 0, time.Second, errors.New("connection reset"))
	m.UpstreamRequest("docker.io", "blob", 0, time.Second, fmt.Errorf("fill: %w", context.DeadlineExceeded))
	// The client went away: nothing learned about upstream.
	m.UpstreamRequest("docker.io", "blob", 0, time.Second, fmt.Errorf("upstream: %w", context.Canceled))

	got := map[string]float64{
		"manifest 200": testutil.ToFloat64(m.upstreamRequests.WithLabelValues("docker.io", "manifest", "200")),
		"manifest 429": testutil.ToFloat64(m.upstreamRequests.WithLabelValues("docker.io", "manifest", "429")),
		"token 200":    testutil.ToFloat64(m.upstreamRequests.WithLabelValues("docker.io", "token", "200")),
		"blob errors":  testutil.ToFloat64(m.upstreamErrors.WithLabelValues("docker.io", "blob")),
		"throttled":    testutil.ToFloat64(m.upstreamThrottled.WithLabelValues("docker.io")),
	}
	want := map[string]float64{"manifest 200": 1, "manifest 429": 1, "token 200": 1, "blob errors": 2, "throttled": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if n := testutil.CollectAndCount(m.upstreamRequests); n != 3 {
		t.Errorf("%d request series, want 3 (no series for requests without a response)", n)
	}
	// Durations: two manifest, one token, two blob observations; the
	// cancelled request is not among them.
	const want2 = `
# HELP wharf_upstream_request_duration_seconds Time from sending an HTTP request to upstream to its response headers (or the failure), by kind.
# TYPE wharf_upstream_request_duration_seconds histogram
`
	if err := testutil.CollectAndCompare(m.upstreamDuration, strings.NewReader(want2+durationLines("blob", 2, 2)+durationLines("manifest", 2, 0.02)+durationLines("token", 1, 0.01))); err != nil {
		t.Error(err)
	}
}

// durationLines renders the expected histogram of n observations summing
// to sum seconds, all of the same value.
func durationLines(kind string, n int, sum float64) string {
	var b strings.Builder
	each := sum / float64(n)
	for _, le := range upstreamBuckets {
		c := 0
		if each <= le {
			c = n
		}
		fmt.Fprintf(&b, "wharf_upstream_request_duration_seconds_bucket{kind=%q,upstream=\"docker.io\",le=\"%g\"} %d\n", kind, le, c)
	}
	fmt.Fprintf(&b, "wharf_upstream_request_duration_seconds_bucket{kind=%q,upstream=\"docker.io\",le=\"+Inf\"} %d\n", kind, n)
	fmt.Fprintf(&b, "wharf_upstream_request_duration_seconds_sum{kind=%q,upstream=\"docker.io\"} %g\n", kind, sum)
	fmt.Fprintf(&b, "wharf_upstream_request_duration_seconds_count{kind=%q,upstream=\"docker.io\"} %d\n", kind, n)
	return b.String()
}

// TestRateLimitReadAtScrape: the gauges show what the upstream reported at
// the moment of the scrape, and nothing for values it never reported.
func TestRateLimitReadAtScrape(t *testing.T) {
	m, reg := newTestMetrics(t)
	limit, remaining := 100, 76
	m.WatchRateLimit("docker.io", func() (int, int) { return limit, remaining })
	m.WatchRateLimit("ghcr.io", func() (int, int) { return -1, -1 })
	const head = `
# HELP wharf_dockerhub_ratelimit_limit Pulls allowed per window, from the ratelimit-limit header of the upstream's latest response that had one.
# TYPE wharf_dockerhub_ratelimit_limit gauge
wharf_dockerhub_ratelimit_limit{upstream="docker.io"} 100
# HELP wharf_dockerhub_ratelimit_remaining Pulls left in the current window, from the ratelimit-remaining header of the upstream's latest response that had one.
# TYPE wharf_dockerhub_ratelimit_remaining gauge
`
	names := []string{"wharf_dockerhub_ratelimit_limit", "wharf_dockerhub_ratelimit_remaining"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(head+`wharf_dockerhub_ratelimit_remaining{upstream="docker.io"} 76`+"\n"), names...); err != nil {
		t.Error(err)
	}
	remaining = 75
	if err := testutil.GatherAndCompare(reg, strings.NewReader(head+`wharf_dockerhub_ratelimit_remaining{upstream="docker.io"} 75`+"\n"), names...); err != nil {
		t.Error(err)
	}
}

func TestCacheReadAtScrape(t *testing.T) {
	m, reg := newTestMetrics(t)
	names := []string{"wharf_cache_blobs", "wharf_cache_manifests", "wharf_cache_size_bytes"}
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != 0 {
		t.Fatalf("before WatchCache: %d series, %v", n, err)
	}
	usage := CacheUsage{Blobs: 3, Manifests: 2, Bytes: 4096}
	var readErr error
	m.WatchCache(func(ctx context.Context) (CacheUsage, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("cache usage read without a deadline")
		}
		return usage, readErr
	})
	const want = `
# HELP wharf_cache_blobs Blobs in the cache.
# TYPE wharf_cache_blobs gauge
wharf_cache_blobs 3
# HELP wharf_cache_manifests Manifests in the cache.
# TYPE wharf_cache_manifests gauge
wharf_cache_manifests 2
# HELP wharf_cache_size_bytes Bytes of content in the cache (blobs and manifests, each stored file once).
# TYPE wharf_cache_size_bytes gauge
wharf_cache_size_bytes 4096
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	readErr = errors.New("index closed")
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "index closed") {
		t.Errorf("failing read: gather error %v", err)
	}
}

// TestHandlerServesRegistry: the handler serves what the registry holds,
// the runtime and process collectors included, and keeps serving the rest
// when one collector fails.
func TestHandlerServesRegistry(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	m.Request("blob", "docker.io", "hit", 200, time.Millisecond)
	m.WatchCache(func(context.Context) (CacheUsage, error) { return CacheUsage{}, errors.New("broken") })
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`wharf_requests_total{code="200",kind="blob",result="hit"} 1`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %q in:\n%.2000s", want, body)
		}
	}
}

// allNames exercises every collector once and returns the names of the
// metric families of wharf, sorted.
func allNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for name := range allFamilies(t) {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// allFamilies exercises every collector once and returns the type of
// every metric family of wharf by name.
func allFamilies(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	m, reg := newTestMetrics(t)
	m.Request("blob", "docker.io", "joined", 200, time.Millisecond)
	m.Request("blob", "docker.io", "stale", 200, time.Millisecond)
	m.Request("blob", "docker.io", "miss", 200, time.Millisecond)
	m.BlobBytesServed("docker.io", true, 1)
	m.UpstreamBytes("docker.io", 1)
	m.UpstreamRequest("docker.io", "blob", 429, time.Millisecond, nil)
	m.UpstreamRequest("docker.io", "blob", 0, time.Millisecond, errors.New("reset"))
	m.WatchRateLimit("docker.io", func() (int, int) { return 100, 99 })
	m.WatchCache(func(context.Context) (CacheUsage, error) { return CacheUsage{Blobs: 1}, nil })
	m.Eviction(1, 1, 1, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := make(map[string]dto.MetricType, len(mfs))
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType()
	}
	return types
}

// TestMetricNamesAndLabels lists every metric wharf exports (the README's
// list) and checks that labels stay within the allowed set.
func TestMetricNamesAndLabels(t *testing.T) {
	want := []string{
		"wharf_bytes_served_total",
		"wharf_cache_blobs",
		"wharf_cache_hits_total",
		"wharf_cache_manifests",
		"wharf_cache_misses_total",
		"wharf_cache_size_bytes",
		"wharf_coalesced_waiters_total",
		"wharf_dockerhub_ratelimit_limit",
		"wharf_dockerhub_ratelimit_remaining",
		"wharf_evicted_bytes_total",
		"wharf_evicted_items_total",
		"wharf_eviction_runs_total",
		"wharf_request_duration_seconds",
		"wharf_requests_total",
		"wharf_stale_serves_total",
		"wharf_upstream_bytes_total",
		"wharf_upstream_errors_total",
		"wharf_upstream_request_duration_seconds",
		"wharf_upstream_requests_total",
		"wharf_upstream_throttled_total",
	}
	if diff := cmp.Diff(want, allNames(t)); diff != "" {
		t.Errorf("metric names (-want +got):\n%s", diff)
	}

	allowed := map[string]bool{"upstream": true, "kind": true, "result": true, "code": true, "source": true}
	m, reg := newTestMetrics(t)
	m.Request("blob", "docker.io", "hit", 200, time.Millisecond)
	m.BlobBytesServed("docker.io", true, 1)
	m.UpstreamRequest("docker.io", "blob", 200, time.Millisecond, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("%s has label %q", mf.GetName(), l.GetName())
				}
			}
		}
	}
}

func TestEviction(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.Eviction(2, 5, 1000, nil)
	m.Eviction(1, 0, 10, errors.New("disk"))
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.evictionRuns.WithLabelValues("ok")), 1, "ok runs"},
		{testutil.ToFloat64(m.evictionRuns.WithLabelValues("error")), 1, "failed runs"},
		{testutil.ToFloat64(m.evictedBytes), 1010, "bytes"},
		{testutil.ToFloat64(m.evictedItems.WithLabelValues("manifest")), 3, "manifests"},
		{testutil.ToFloat64(m.evictedItems.WithLabelValues("blob")), 5, "blobs"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	var nilMetrics *Metrics
	nilMetrics.Eviction(1, 1, 1, nil)
}

func TestTotals(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.Request("manifest", "docker.io", "hit", 200, time.Millisecond)
	m.Request("blob", "docker.io", "miss", 200, time.Millisecond)
	m.Request("blob", "ghcr.io", "stale", 200, time.Millisecond)
	m.Request("tags", "docker.io", "pass", 200, time.Millisecond) // not a manifest or blob
	m.Request("base", "", "", 200, time.Millisecond)
	m.BlobBytesServed("docker.io", true, 100)
	m.BlobBytesServed("docker.io", false, 40)
	m.UpstreamBytes("docker.io", 45)
	want := Totals{Requests: 3, Hits: 2, Misses: 1, StaleServes: 1, BytesFromCache: 100, BytesFromUpstream: 40, BytesFetched: 45}
	if got := m.Totals(); got != want {
		t.Errorf("Totals = %+v, want %+v", got, want)
	}
	var nilMetrics *Metrics
	if got := nilMetrics.Totals(); got != (Totals{}) {
		t.Errorf("nil Totals = %+v", got)
	}
}
