package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// scrape is one scrape of /metrics on the admin handler.
type scrape map[string]*dto.MetricFamily

func (h *harness) scrape(t *testing.T) scrape {
	t.Helper()
	rec := httptest.NewRecorder()
	h.inst.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// scrapeSettled scrapes once n registry requests were recorded: a
// handler records its request (and the last bytes it served) only after
// its final write returned, which may be after the client read the body.
func (h *harness) scrapeSettled(t *testing.T, n int) scrape {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := h.scrape(t)
		if got := s.sum("wharf_request_duration_seconds"); got >= float64(n) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sum adds the values of every sample of name whose labels include want
// (name=value pairs).
func (s scrape) sum(name string, want ...string) float64 {
	total := 0.0
	mf, ok := s[name]
	if !ok {
		return 0
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// TestMetricsEndpoint pulls an image cold and warm through wharf and reads
// /metrics on the admin handler: cache hits and misses, bytes served from
// the cache, upstream traffic that matches the upstream's own request log,
// and no label that names a repository or a digest.
func TestMetricsEndpoint(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 4200, 30000, 50000)
	h.hub.PushImage(t, "library/metricsapp", "tag-metrics", img)
	manifest, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	blobBytes := float64(len(config) + 30000 + 50000)
	const blobs = 3 // config and two layers

	pullAll(t, h, "/v2/library/metricsapp", "tag-metrics")
	cold := h.scrapeSettled(t, 1+blobs)
	upstreamRequests := float64(len(h.hub.Requests()))
	pullAll(t, h, "/v2/library/metricsapp", "tag-metrics")
	warm := h.scrapeSettled(t, 2*(1+blobs))

	checks := []struct {
		what      string
		got, want float64
	}{
		{"manifest misses", warm.sum("wharf_cache_misses_total", "upstream", "docker.io", "kind", "manifest"), 1},
		{"blob misses", warm.sum("wharf_cache_misses_total", "upstream", "docker.io", "kind", "blob"), blobs},
		{"manifest hits", warm.sum("wharf_cache_hits_total", "upstream", "docker.io", "kind", "manifest"), 1},
		{"blob hits", warm.sum("wharf_cache_hits_total", "upstream", "docker.io", "kind", "blob"), blobs},
		{"blob hit requests", warm.sum("wharf_requests_total", "kind", "blob", "result", "hit", "code", "200"), blobs},
		{"request durations", warm.sum("wharf_request_duration_seconds"), 2 * (1 + blobs)},
		{"blob bytes served", warm.sum("wharf_bytes_served_total", "upstream", "docker.io"), 2 * blobBytes},
		{"blob bytes served from the cache by the warm pull",
			warm.sum("wharf_bytes_served_total", "source", "cache") - cold.sum("wharf_bytes_served_total", "source", "cache"), blobBytes},
		{"bytes fetched", warm.sum("wharf_upstream_bytes_total", "upstream", "docker.io"), blobBytes + float64(len(manifest))},
		// Every request the upstream's registry, CDN and token servers
		// saw was counted once, and the warm pull sent none.
		{"upstream requests", cold.sum("wharf_upstream_requests_total", "upstream", "docker.io"), upstreamRequests},
		{"upstream requests after the warm pull", warm.sum("wharf_upstream_requests_total", "upstream", "docker.io"), upstreamRequests},
		{"token requests", warm.sum("wharf_upstream_requests_total", "upstream", "docker.io", "kind", "token"),
			float64(h.hub.Count(registrytest.TokenRequests()))},
		{"upstream errors", warm.sum("wharf_upstream_errors_total"), 0},
		{"blobs cached", warm.sum("wharf_cache_blobs"), blobs},
		{"manifests cached", warm.sum("wharf_cache_manifests"), 1},
		{"cache size", warm.sum("wharf_cache_size_bytes"), blobBytes + float64(len(manifest))},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if warm.sum("wharf_upstream_requests_total", "upstream", "docker.io", "kind", "blob") == 0 {
		t.Error("no upstream blob requests counted")
	}
	// The fake Docker Hub sends ratelimit headers.
	if _, ok := warm["wharf_dockerhub_ratelimit_remaining"]; !ok {
		t.Error("no wharf_dockerhub_ratelimit_remaining")
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := warm[name]; !ok {
			t.Errorf("no %s", name)
		}
	}

	allowed := map[string]bool{"upstream": true, "kind": true, "result": true, "code": true, "source": true, "le": true}
	for name, mf := range warm {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.HasPrefix(name, "wharf_") && !allowed[l.GetName()] {
					t.Errorf("%s has label %q", name, l.GetName())
				}
				if v := l.GetValue(); strings.Contains(v, "metricsapp") || strings.Contains(v, "sha256") || strings.Contains(v, "tag-metrics") {
					t.Errorf("%s: label %s=%q names a repository, tag or digest", name, l.GetName(), v)
				}
			}
		}
	}
}
