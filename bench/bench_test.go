//go:build bench

package bench

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections outlive the phase that opened them
		// until the transport's CloseIdleConnections runs in Cleanup.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// The workloads. Repositories are under library/ so that wharf routes them
// to its docker.io upstream the way `docker pull x` does.
const (
	pullRepo       = "library/bench-pull"
	pullLayers     = 4
	pullLayerBytes = 64 << 20 // 4 × 64 MiB = a 256 MiB image

	blobRepo    = "library/bench-blob"
	blobBytes   = 256 << 20
	blobClients = 64

	multiRepo     = "library/bench-multi"
	multiPlatform = "linux/amd64"

	tag = "latest"

	defaultRuns = 3
	maxRuns     = 20
	// idleSettle is how long a started wharf is left alone before its idle
	// RSS is read, so that start-up allocations have been touched and
	// settled.
	idleSettle = time.Second
	// phaseTimeout bounds one timed phase; the slowest, 64 × 256 MiB on two
	// CPUs, takes well under a minute.
	phaseTimeout = 5 * time.Minute
)

// Seeds of the synthetic images: each workload has its own content, so
// nothing one phase caches can serve another.
const (
	seedPull uint64 = 1 + iota
	seedBlob
	seedMulti
)

// dockerHub is the upstream shape of every figure: Docker Hub's anonymous
// Bearer token flow, blob GETs redirected to a CDN host.
var dockerHub = registrytest.Options{Auth: true, Redirect: registrytest.RedirectBlobs}

// TestE2E takes every figure, prints them, and writes results/latest.json.
func TestE2E(t *testing.T) {
	bin := wharfBinary(t)
	rep := &report{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Machine: describeMachine(t.Context(), bin, os.TempDir()),
		Runs:    runs(t),
	}
	finish := measureConditions(&rep.Conditions)
	t.Run("pull", func(t *testing.T) { rep.Pull = benchPull(t, bin, rep.Runs) })
	t.Run("concurrent", func(t *testing.T) { rep.Concurrent = benchConcurrent(t, bin, rep.Runs) })
	t.Run("requests", func(t *testing.T) { rep.Requests = benchRequests(t, bin) })

	finish()
	rep.print(os.Stdout)
	switch {
	case t.Failed():
		t.Log("a phase failed: results/latest.json left as it was")
		return
	case rep.Pull == nil || rep.Concurrent == nil || rep.Requests == nil:
		t.Log("not every phase ran (-run): results/latest.json left as it was")
		return
	}
	if err := rep.writeJSON("results/latest.json"); err != nil {
		t.Errorf("write results: %v", err)
	}
}

// runs is the number of repetitions of each timed figure: $BENCH_RUNS, or 3.
func runs(t *testing.T) int {
	s := os.Getenv("BENCH_RUNS")
	if s == "" {
		return defaultRuns
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxRuns {
		t.Fatalf("BENCH_RUNS=%q: want a number from 1 to %d", s, maxRuns)
	}
	return n
}

// benchPull is figure 1: the same 256 MiB image pulled straight from the
// upstream, through a cold wharf, and through the same wharf again (warm).
// The three are interleaved in every run, so that a drift of the machine
// over the run affects them alike.
func benchPull(t *testing.T, bin string, runs int) *pullReport {
	hub := registrytest.New(t, dockerHub)
	sizes := make([]int64, pullLayers)
	for i := range sizes {
		sizes[i] = pullLayerBytes
	}
	img := registrytest.RandomImage(t, seedPull, sizes...)
	hub.PushImage(t, pullRepo, tag, img)
	total := imageBytes(t, img)

	upstream := map[string]string{"docker.io": hub.URL()}
	var direct, cold, warm pullRuns
	for i := range runs {
		direct.add(timedPull(t, hub.URL(), pullRepo, total, nil))

		w := startWharf(t, wharfOptions{bin: bin, dataDir: t.TempDir(), upstreams: upstream})
		r := timedPull(t, w.url, pullRepo, total, w)
		r.rss = r.mem.HWM // a fresh process: its peak is this pull's
		cold.add(r)

		s := sampleRSS(w.pid)
		r = timedPull(t, w.url, pullRepo, total, w)
		r.rss, _ = s.Stop()
		r.rss = max(r.rss, r.mem.RSS)
		warm.add(r)
		w.stop()
		t.Logf("run %d: direct %.3fs, cold %.3fs, warm %.3fs", i+1, direct.secs[i], cold.secs[i], warm.secs[i])
	}

	p := &pullReport{
		Layers: pullLayers, LayerBytes: pullLayerBytes, Bytes: total,
		Direct: direct.row(total, false), Cold: cold.row(total, true), Warm: warm.row(total, true),
	}
	p.ColdOverDirect = ratio{p.Cold.Seconds.Median / p.Direct.Seconds.Median, p.Cold.Seconds.Min / p.Direct.Seconds.Min}
	p.WarmOverDirect = ratio{p.Warm.Seconds.Median / p.Direct.Seconds.Median, p.Warm.Seconds.Min / p.Direct.Seconds.Min}
	return p
}

// pullResult is one timed pull.
type pullResult struct {
	secs     float64
	mem      memStatus // wharf's memory right after the pull
	rss      int64     // wharf's peak RSS during the pull, filled in by the caller
	wharfCPU float64   // CPU seconds wharf used during the pull
	selfCPU  float64   // CPU seconds the test process (client, upstream) used
}

// pullRuns accumulates the runs of one row of figure 1.
type pullRuns struct{ secs, rss, wharfCPU, selfCPU []float64 }

func (p *pullRuns) add(r pullResult) {
	p.secs = append(p.secs, r.secs)
	p.rss = append(p.rss, float64(r.rss))
	p.wharfCPU = append(p.wharfCPU, r.wharfCPU)
	p.selfCPU = append(p.selfCPU, r.selfCPU)
}

func (p *pullRuns) row(bytes int64, viaWharf bool) pullRow {
	r := pullRow{
		Seconds:        newStat(p.secs),
		MBps:           newStat(throughput(bytes, p.secs)),
		TestCPUSeconds: newStat(p.selfCPU),
	}
	if viaWharf {
		rss, cpu := newStat(p.rss), newStat(p.wharfCPU)
		r.PeakRSSBytes, r.WharfCPUSeconds = &rss, &cpu
	}
	return r
}

// timedPull pulls repo:tag from base with a new pull session and a new
// connection pool. With a wharf process given (nil for a direct pull), it
// also measures that process's CPU time and reads its memory after the pull.
func timedPull(t *testing.T, base, repo string, wantBytes int64, w *wharfProc) pullResult {
	t.Helper()
	hc := newHTTPClient(layerConcurrency)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), phaseTimeout)
	defer cancel()
	cpu := startCPU(t, w)
	start := time.Now()
	st, err := newPuller(hc, base).pull(ctx, repo, tag, multiPlatform)
	r := pullResult{secs: time.Since(start).Seconds()}
	r.wharfCPU, r.selfCPU = cpu.stop(t)
	if err != nil {
		t.Fatalf("pull %s from %s: %v", repo, base, err)
	}
	if wantBytes > 0 && st.BlobBytes != wantBytes {
		t.Fatalf("pull %s from %s: %d bytes of blobs, want %d", repo, base, st.BlobBytes, wantBytes)
	}
	if w != nil {
		if r.mem, err = w.mem(); err != nil {
			t.Fatalf("wharf memory: %v", err)
		}
	}
	return r
}

// benchConcurrent is figure 2: blobClients clients GET one uncached 256 MiB
// blob at once through a fresh wharf (cold), then again through a second
// fresh wharf on the same data directory (warm). Each phase has its own
// process so that VmHWM is that phase's peak.
func benchConcurrent(t *testing.T, bin string, runs int) *concurrentReport {
	hub := registrytest.New(t, dockerHub)
	img := registrytest.RandomImage(t, seedBlob, blobBytes)
	hub.PushImage(t, blobRepo, tag, img)
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v (%d)", err, len(layers))
	}
	h, err := layers[0].Digest()
	if err != nil {
		t.Fatalf("layer digest: %v", err)
	}
	dgst := digest.Digest(h.String())
	upstream := map[string]string{"docker.io": hub.URL()}
	// The request log is written before authentication, so a GET that was
	// answered 401 (wharf's first request, before it has a token) is in it
	// too: a fetch is an authorized GET at the registry, followed by one
	// download from the storage host it redirects to.
	isGET := registrytest.BlobGETs(dgst)
	fetches := func(r registrytest.Request) bool {
		return r.Server == registrytest.ServerRegistry && isGET(r) && r.Header.Get("Authorization") != ""
	}
	challenged := func(r registrytest.Request) bool {
		return r.Server == registrytest.ServerRegistry && isGET(r) && r.Header.Get("Authorization") == ""
	}
	downloads := registrytest.On(registrytest.ServerStorage, isGET)
	record := func(p *phaseRuns) {
		p.fetches = append(p.fetches, hub.Count(fetches))
		p.challenged = append(p.challenged, hub.Count(challenged))
		p.downloads = append(p.downloads, hub.Count(downloads))
	}

	var idle []float64
	var cold, warm phaseRuns
	for i := range runs {
		dir := t.TempDir()

		w := startWharf(t, wharfOptions{bin: bin, dataDir: dir, upstreams: upstream})
		time.Sleep(idleSettle)
		m, err := w.mem()
		if err != nil {
			t.Fatalf("wharf memory: %v", err)
		}
		idle = append(idle, float64(m.RSS))
		hub.ResetRequests()
		cold.add(concurrentGETs(t, w, dgst))
		record(&cold)
		w.stop()
		// The property the cache exists for: however many clients ask at
		// once, the upstream sends the blob once.
		if cold.fetches[i] != 1 || cold.downloads[i] != 1 {
			t.Errorf("run %d: %d upstream fetches and %d downloads of the blob for %d concurrent cold pulls, want 1 and 1",
				i+1, cold.fetches[i], cold.downloads[i], blobClients)
		}

		w = startWharf(t, wharfOptions{bin: bin, dataDir: dir, upstreams: upstream})
		hub.ResetRequests()
		warm.add(concurrentGETs(t, w, dgst))
		record(&warm)
		w.stop()
		if n := warm.fetches[i] + warm.challenged[i] + warm.downloads[i]; n != 0 {
			t.Errorf("run %d: %d upstream GETs of a cached blob, want 0", i+1, n)
		}
		t.Logf("run %d: cold %.2fs (peak %s), warm %.2fs (peak %s)", i+1,
			cold.wall[i], mib(int64(cold.hwm[i])), warm.wall[i], mib(int64(warm.hwm[i])))
	}
	return &concurrentReport{
		Clients: blobClients, BlobBytes: blobBytes,
		IdleRSSBytes: newStat(idle),
		Cold:         cold.row(),
		Warm:         warm.row(),
	}
}

// phaseResult is one phase of figure 2.
type phaseResult struct {
	wall       float64 // seconds
	hwm        int64   // VmHWM after the phase
	sampledRSS int64   // largest VmRSS sampled during the phase
	wharfCPU   float64 // CPU seconds wharf used during the phase
	selfCPU    float64 // CPU seconds the test process (clients, upstream) used
}

// phaseRuns accumulates the runs of one phase of figure 2.
type phaseRuns struct {
	wall, hwm, sampled, wharfCPU, selfCPU []float64
	fetches, challenged, downloads        []int
}

func (p *phaseRuns) add(r phaseResult) {
	p.wall = append(p.wall, r.wall)
	p.hwm = append(p.hwm, float64(r.hwm))
	p.sampled = append(p.sampled, float64(r.sampledRSS))
	p.wharfCPU = append(p.wharfCPU, r.wharfCPU)
	p.selfCPU = append(p.selfCPU, r.selfCPU)
}

func (p *phaseRuns) row() concurrentRow {
	return concurrentRow{
		WallSeconds:         newStat(p.wall),
		AggregateMBps:       newStat(throughput(blobClients*blobBytes, p.wall)),
		PeakRSSBytes:        newStat(p.hwm),
		SampledPeakRSSBytes: newStat(p.sampled),
		WharfCPUSeconds:     newStat(p.wharfCPU),
		TestCPUSeconds:      newStat(p.selfCPU),
		UpstreamFetches:     p.fetches,
		UpstreamChallenged:  p.challenged,
		StorageDownloads:    p.downloads,
	}
}

// concurrentGETs starts blobClients GETs of dgst through w at once, each on
// its own connection, waits until every client has verified its copy, and
// reports the wall time and wharf's memory.
func concurrentGETs(t *testing.T, w *wharfProc, dgst digest.Digest) phaseResult {
	t.Helper()
	hc := newHTTPClient(blobClients)
	defer hc.CloseIdleConnections()
	p := newPuller(hc, w.url)
	ctx, cancel := context.WithTimeout(t.Context(), phaseTimeout)
	defer cancel()

	s := sampleRSS(w.pid)
	cpu := startCPU(t, w)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range blobClients {
		g.Go(func() error { return p.blob(gctx, blobRepo, dgst, blobBytes) })
	}
	err := g.Wait()
	r := phaseResult{wall: time.Since(start).Seconds()}
	r.wharfCPU, r.selfCPU = cpu.stop(t)
	sampled, _ := s.Stop()
	if err != nil {
		t.Fatalf("%d concurrent GETs of %s: %v", blobClients, dgst, err)
	}
	m, err := w.mem()
	if err != nil {
		t.Fatalf("wharf memory: %v", err)
	}
	r.hwm, r.sampledRSS = m.HWM, max(sampled, m.RSS)
	return r
}

// benchRequests is figure 3: what reaches the upstream for one containerd
// pull of a multi-arch image, straight and through wharf in its states.
func benchRequests(t *testing.T, bin string) []requestRow {
	hub := registrytest.New(t, dockerHub)
	hub.PushIndex(t, multiRepo, tag, registrytest.RandomIndex(t, seedMulti, "linux/amd64", "linux/arm64"))
	upstream := map[string]string{"docker.io": hub.URL()}

	var rows []requestRow
	count := func(name, base string) {
		t.Helper()
		hub.ResetRequests()
		timedPull(t, base, multiRepo, 0, nil)
		rows = append(rows, countRequests(name, hub))
	}

	count("direct from upstream", hub.URL())

	dir := t.TempDir()
	w := startWharf(t, wharfOptions{bin: bin, dataDir: dir, upstreams: upstream})
	count("wharf cold", w.url)
	count("wharf warm", w.url)
	w.stop()

	w = startWharf(t, wharfOptions{bin: bin, dataDir: dir, upstreams: upstream})
	count("wharf warm, restarted", w.url)
	w.stop()

	// tag_ttl 0 revalidates the tag on every pull: the price of always
	// seeing a moved tag at once. The first pull after a start also pays
	// for a token; the next one shows the steady state.
	w = startWharf(t, wharfOptions{bin: bin, dataDir: dir, upstreams: upstream, env: []string{"WHARF_TAG_TTL=0s"}})
	count("wharf warm, tag_ttl 0, restarted", w.url)
	count("wharf warm, tag_ttl 0", w.url)
	w.stop()
	return rows
}

// countRequests sorts the upstream's request log into figure 3's columns.
func countRequests(name string, hub *registrytest.Registry) requestRow {
	blobGET := func(server string) func(registrytest.Request) bool {
		return func(r registrytest.Request) bool {
			return r.Server == server && r.Method == http.MethodGet &&
				strings.HasPrefix(r.Path, "/v2/") && strings.Contains(r.Path, "/blobs/")
		}
	}
	return requestRow{
		Pull:          name,
		Total:         len(hub.Requests()),
		ManifestGETs:  hub.Count(registrytest.ManifestGETs()),
		ManifestHEADs: hub.Count(registrytest.ManifestHEADs()),
		BlobGETs:      hub.Count(blobGET(registrytest.ServerRegistry)),
		StorageGETs:   hub.Count(blobGET(registrytest.ServerStorage)),
		TokenRequests: hub.Count(registrytest.TokenRequests()),
		Unauthorized: hub.Count(func(r registrytest.Request) bool {
			return r.Server == registrytest.ServerRegistry && r.Header.Get("Authorization") == ""
		}),
	}
}

// newHTTPClient is a client like containerd's: no transparent
// decompression (blobs are verified as sent), no proxy from the
// environment, enough idle connections for conns parallel downloads.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: conns,
		MaxIdleConns:        2 * conns,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// imageBytes is the size of img's config and layers: what a pull fetches
// besides manifests.
func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// throughput converts seconds per transfer of n bytes into 10^6 bytes per
// second.
func throughput(n int64, secs []float64) []float64 {
	out := make([]float64, len(secs))
	for i, s := range secs {
		out[i] = float64(n) / 1e6 / s
	}
	return out
}
