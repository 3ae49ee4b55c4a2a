//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/ui"
)

// fakeAdmin is a hand-written admin API (the wire format of package
// adminapi) with just enough state to drive every page of the UI through
// the cases a fresh wharf does not produce: a bearer token, an upstream
// that is down, a rate limit, 120 repositories to page through, a delete
// that keeps content, an error answer, and prefetch jobs that fail or run
// until canceled. It records what it was asked.
type fakeAdmin struct {
	token string

	mu       sync.Mutex
	requests []fakeRequest
	repos    []adminapi.Repository
	tags     map[string][]adminapi.Tag // by "upstream/name"
	jobs     []*adminapi.PrefetchJob   // oldest first
	prefetch []adminapi.PrefetchRequest
}

// fakeRequest is one request the fake answered.
type fakeRequest struct {
	Method, Path string
	Query        url.Values
	Authorized   bool
}

const fakeRepos = 120

func newFakeAdmin(token string) *fakeAdmin {
	f := &fakeAdmin{token: token, tags: map[string][]adminapi.Tag{}}
	seen := time.Now().UTC().Add(-90 * time.Minute)
	for i := range fakeRepos {
		name := fmt.Sprintf("library/app-%03d", i)
		f.repos = append(f.repos, adminapi.Repository{
			Upstream: "docker.io", Name: name, Tags: 2, Manifests: 2,
			Bytes: int64(i+1) << 20, LastAccess: seen,
		})
		dgst := fmt.Sprintf("sha256:%064x", i+1)
		for _, tag := range []string{"1.0", "latest"} {
			f.tags["docker.io/"+name] = append(f.tags["docker.io/"+name], adminapi.Tag{
				Upstream: "docker.io", Repo: name, Name: tag, Digest: dgst,
				MediaType: "application/vnd.oci.image.manifest.v1+json",
				Bytes:     int64(i+1) << 20, CheckedAt: seen, LastAccess: seen,
				Reference: "docker.io/" + name + ":" + tag,
			})
		}
	}
	return f
}

// handler serves the UI at "/" and the fake API under /api/v1/, as the
// admin listener does.
func (f *fakeAdmin) handler() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/stats", f.stats)
	api.HandleFunc("GET /api/v1/upstreams", f.upstreams)
	api.HandleFunc("GET /api/v1/repositories", f.repositories)
	api.HandleFunc("GET /api/v1/tags", f.listTags)
	api.HandleFunc("DELETE /api/v1/tags", f.deleteTag)
	api.HandleFunc("DELETE /api/v1/repositories", f.deleteRepository)
	api.HandleFunc("POST /api/v1/gc", func(w http.ResponseWriter, r *http.Request) {
		fakeError(w, http.StatusServiceUnavailable, adminapi.CodeUnavailable, "eviction is already running")
	})
	api.HandleFunc("POST /api/v1/prefetch", f.startPrefetch)
	api.HandleFunc("GET /api/v1/prefetch", f.listJobs)
	api.HandleFunc("GET /api/v1/prefetch/{id}", f.getJob)
	api.HandleFunc("DELETE /api/v1/prefetch/{id}", f.cancelJob)

	mux := http.NewServeMux()
	mux.Handle("/", ui.Handler())
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		ok := r.Header.Get("Authorization") == "Bearer "+f.token
		f.mu.Lock()
		f.requests = append(f.requests, fakeRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Authorized: ok})
		f.mu.Unlock()
		if !ok {
			fakeError(w, http.StatusUnauthorized, adminapi.CodeUnauthorized, "missing or wrong bearer token")
			return
		}
		api.ServeHTTP(w, r)
	})
	return mux
}

func fakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fakeError(w http.ResponseWriter, status int, code, msg string) {
	fakeJSON(w, status, adminapi.ErrorBody{Errors: []adminapi.ErrorItem{{Code: code, Message: msg}}})
}

func (f *fakeAdmin) stats(w http.ResponseWriter, r *http.Request) {
	started := time.Now().UTC().Add(-3 * time.Hour)
	fakeJSON(w, http.StatusOK, adminapi.Stats{
		Version: "1.2.3",
		Started: started,
		Cache: adminapi.Cache{
			Bytes: 3 << 30, MaxBytes: 10 << 30, Manifests: 240, Blobs: 1200, MaxAge: "720h0m0s",
			LastGC: &adminapi.GCReport{Manifests: 3, Blobs: 9, Bytes: 512 << 20, SizeBefore: 3<<30 + 512<<20, SizeAfter: 3 << 30,
				Started: started.Add(time.Hour), Duration: "1.5s"},
		},
		Traffic: adminapi.Traffic{Requests: 400, Hits: 300, Misses: 100, HitRatio: 0.75,
			BytesFromCache: 7 << 30, BytesFromUpstream: 1 << 30, BytesFetched: 2 << 30, StaleServes: 4},
	})
}

func (f *fakeAdmin) upstreams(w http.ResponseWriter, r *http.Request) {
	now := time.Now().UTC()
	fakeJSON(w, http.StatusOK, []adminapi.Upstream{
		{Name: "docker.io", URL: "https://registry-1.docker.io", Aliases: []string{"index.docker.io"}, Health: "ok", LastOK: now.Add(-time.Minute),
			RateLimit: &adminapi.RateLimit{Limit: 100, Remaining: 87, Window: "6h", Source: "203.0.113.7", Seen: now.Add(-time.Minute)}},
		{Name: "ghcr.io", URL: "https://ghcr.io", Health: "down", Error: "dial tcp: connection refused", LastError: now.Add(-2 * time.Minute)},
		{Name: "quay.io", URL: "https://quay.io", Health: "unknown"},
	})
}

func (f *fakeAdmin) repositories(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 || limit > 1000 {
		fakeError(w, http.StatusBadRequest, adminapi.CodeInvalid, "limit")
		return
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		if start, err = strconv.Atoi(c); err != nil {
			fakeError(w, http.StatusBadRequest, adminapi.CodeInvalid, "cursor")
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var match []adminapi.Repository
	for _, repo := range f.repos {
		if strings.Contains(repo.Name, q.Get("q")) && (q.Get("upstream") == "" || q.Get("upstream") == repo.Upstream) {
			match = append(match, repo)
		}
	}
	page := adminapi.RepositoryPage{Repositories: []adminapi.Repository{}}
	if start < len(match) {
		end := min(start+limit, len(match))
		page.Repositories = match[start:end]
		if end < len(match) {
			page.Next = strconv.Itoa(end)
		}
	}
	fakeJSON(w, http.StatusOK, page)
}

func (f *fakeAdmin) listTags(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tags, ok := f.tags[r.URL.Query().Get("upstream")+"/"+r.URL.Query().Get("repo")]
	if !ok || len(tags) == 0 {
		fakeError(w, http.StatusNotFound, adminapi.CodeNotFound, "repository not cached")
		return
	}
	fakeJSON(w, http.StatusOK, tags)
}

// deleteTag removes the tag; the manifest stays, since the repository's
// other tag points to the same digest.
func (f *fakeAdmin) deleteTag(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("upstream") + "/" + q.Get("repo")
	f.mu.Lock()
	defer f.mu.Unlock()
	tags := f.tags[key]
	i := slices.IndexFunc(tags, func(t adminapi.Tag) bool { return t.Name == q.Get("tag") })
	if i < 0 {
		fakeError(w, http.StatusNotFound, adminapi.CodeNotFound, "tag not cached")
		return
	}
	gone := tags[i]
	f.tags[key] = slices.Delete(tags, i, i+1)
	d := adminapi.Deletion{Tags: 1}
	for _, other := range f.tags[key] {
		if other.Digest == gone.Digest {
			d.Kept = append(d.Kept, adminapi.Kept{Digest: gone.Digest, Reason: adminapi.KeptTagged, By: []string{other.Reference}})
		}
	}
	fakeJSON(w, http.StatusOK, d)
}

func (f *fakeAdmin) deleteRepository(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("upstream") + "/" + q.Get("repo")
	f.mu.Lock()
	defer f.mu.Unlock()
	tags, ok := f.tags[key]
	if !ok {
		fakeError(w, http.StatusNotFound, adminapi.CodeNotFound, "repository not cached")
		return
	}
	delete(f.tags, key)
	fakeJSON(w, http.StatusOK, adminapi.Deletion{Tags: len(tags), Manifests: 1, Blobs: 3, Bytes: 5 << 20})
}

// Prefetch items by reference: "missing:…" fails at once, "slow:…" runs
// until canceled, anything else is done after four polls.
func (f *fakeAdmin) startPrefetch(w http.ResponseWriter, r *http.Request) {
	var req adminapi.PrefetchRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Refs) == 0 {
		fakeError(w, http.StatusBadRequest, adminapi.CodeInvalid, "refs")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prefetch = append(f.prefetch, req)
	job := &adminapi.PrefetchJob{ID: fmt.Sprintf("job-%d", len(f.jobs)+1), State: adminapi.StateRunning, Created: time.Now().UTC()}
	for _, ref := range req.Refs {
		job.Items = append(job.Items, adminapi.PrefetchItem{Ref: ref, Reference: "docker.io/library/" + ref, State: adminapi.StateRunning, TotalBytes: 40 << 20})
	}
	f.jobs = append(f.jobs, job)
	fakeJSON(w, http.StatusAccepted, job)
}

// advance moves a running job one poll further.
func advance(job *adminapi.PrefetchJob) {
	if job.State != adminapi.StateRunning {
		return
	}
	job.Bytes, job.TotalBytes, job.Done, job.Failed = 0, 0, 0, 0
	running := false
	for i := range job.Items {
		it := &job.Items[i]
		if it.State == adminapi.StateRunning {
			switch {
			case strings.HasPrefix(it.Ref, "missing:"):
				it.State, it.Error = adminapi.StateFailed, "manifest unknown: "+it.Reference
			case strings.HasPrefix(it.Ref, "slow:"):
				it.Bytes = min(it.Bytes+1<<20, it.TotalBytes/2)
			default:
				it.Bytes = min(it.Bytes+10<<20, it.TotalBytes)
				it.Cached = 4 << 20
				if it.Bytes == it.TotalBytes {
					it.State, it.Digest = adminapi.StateDone, fmt.Sprintf("sha256:%064x", len(it.Ref))
				}
			}
		}
		running = running || it.State == adminapi.StateRunning
		job.Bytes += it.Bytes
		job.TotalBytes += it.TotalBytes
		switch it.State {
		case adminapi.StateDone:
			job.Done++
		case adminapi.StateFailed:
			job.Failed++
		}
	}
	if !running {
		job.State = adminapi.StateDone
		if job.Failed > 0 {
			job.State = adminapi.StateFailed
		}
		job.Finished = time.Now().UTC()
	}
}

func (f *fakeAdmin) job(id string) *adminapi.PrefetchJob {
	for _, j := range f.jobs {
		if j.ID == id {
			return j
		}
	}
	return nil
}

func (f *fakeAdmin) listJobs(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []adminapi.PrefetchJob{}
	for _, j := range slices.Backward(f.jobs) {
		out = append(out, *j)
	}
	fakeJSON(w, http.StatusOK, out)
}

func (f *fakeAdmin) getJob(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.job(r.PathValue("id"))
	if j == nil {
		fakeError(w, http.StatusNotFound, adminapi.CodeNotFound, "no such job")
		return
	}
	advance(j)
	fakeJSON(w, http.StatusOK, j)
}

func (f *fakeAdmin) cancelJob(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.job(r.PathValue("id"))
	if j == nil {
		fakeError(w, http.StatusNotFound, adminapi.CodeNotFound, "no such job")
		return
	}
	if j.State == adminapi.StateRunning {
		for i := range j.Items {
			if j.Items[i].State == adminapi.StateRunning {
				j.Items[i].State = adminapi.StateCanceled
			}
		}
		j.State, j.Finished = adminapi.StateCanceled, time.Now().UTC()
	}
	fakeJSON(w, http.StatusOK, j)
}

// seen returns the requests the fake answered that match method and path.
func (f *fakeAdmin) seen(method, path string) []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.requests {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeAdmin) prefetchRequests() []adminapi.PrefetchRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.prefetch)
}

// eventually waits, bounded by uiStepTimeout, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(uiStepTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, uiStepTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// rowsOf is a JavaScript expression: the data-<attr> values of the rows
// matching sel, joined by commas.
func rowsOf(sel, attr string) string {
	return fmt.Sprintf(`[...document.querySelectorAll(%s)].map((r) => r.dataset[%s]).join(',')`, jsString(sel), jsString(attr))
}

// TestUIFakeAPI drives every page of the UI against fakeAdmin in the test
// process: the token form, the overview's figures, badges and error
// banner, paging and search, tag and repository deletion (a dismissed
// confirm deletes nothing), copying a reference, and prefetch jobs that
// fail, finish and are canceled.
func TestUIFakeAPI(t *testing.T) {
	fake := newFakeAdmin("s3cret")
	srv := httptest.NewServer(fake.handler()) // 127.0.0.1
	t.Cleanup(srv.Close)
	b := newBrowser(t)

	// The first answer is 401: the token form. A wrong token brings it back.
	b.do("open the UI", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(css(`[data-testid=auth]`)))
	b.do("sign in with a wrong token",
		chromedp.SendKeys(css(`#token-input`), "wrong"),
		chromedp.Click(css(`[data-testid=token-submit]`)),
	)
	poll[bool](b, "the token form again, saying the token was wrong", uiStepTimeout,
		`!document.querySelector('#auth').hidden && document.querySelector('#auth-reason').textContent.includes('not accepted')`)
	b.do("sign in",
		chromedp.SendKeys(css(`#token-input`), "s3cret"),
		chromedp.Click(css(`[data-testid=token-submit]`)),
		chromedp.WaitNotVisible(css(`[data-testid=auth]`)),
	)

	// Overview figures.
	poll[bool](b, "the cache size", uiStepTimeout, `document.querySelector('[data-testid=cache-size]').textContent === '3.00 GiB of 10.0 GiB · 30.0%'`)
	for sel, want := range map[string]string{
		`[data-testid=hit-ratio]`:                                     "75.0%",
		`[data-testid=requests]`:                                      "400",
		`[data-testid=bytes-saved]`:                                   "7.00 GiB",
		`[data-testid=bytes-fetched]`:                                 "2.00 GiB",
		`[data-testid=stale-serves]`:                                  "4",
		`[data-testid=version]`:                                       "v1.2.3",
		`tr[data-upstream="docker.io"] [data-testid=rate-limit]`:      "87/100 per 6h",
		`tr[data-upstream="docker.io"] [data-testid=upstream-health]`: "ok",
		`tr[data-upstream="ghcr.io"] [data-testid=upstream-health]`:   "down",
		`tr[data-upstream="quay.io"] [data-testid=upstream-health]`:   "unknown",
	} {
		if got := value(b, "read "+sel, chromedp.Text(css(sel))); got != want {
			t.Errorf("%s: %q, want %q", sel, got, want)
		}
	}
	if tip := value(b, "read the down upstream's tooltip", chromedp.AttributeValue(css(`tr[data-upstream="ghcr.io"] [data-testid=upstream-health]`), "title")); !strings.Contains(tip.Value, "connection refused") {
		t.Errorf("tooltip of the down upstream %q, want its error", tip.Value)
	}
	if tok := value(b, "read the stored token", chromedp.Evaluate[string](`sessionStorage.getItem('wharf.adminToken')`)); tok != "s3cret" {
		t.Errorf("sessionStorage token %q, want the one signed in with", tok)
	}
	b.screenshot("overview")

	// Probe, and an error answer shown in the banner.
	b.do("probe", chromedp.Click(css(`[data-testid=probe]`)))
	eventually(t, "a probe request", func() bool {
		return slices.ContainsFunc(fake.seen("GET", "/api/v1/upstreams"), func(r fakeRequest) bool { return r.Query.Get("probe") == "1" })
	})
	b.do("run eviction", chromedp.Click(css(`[data-testid=gc-run]`)), chromedp.WaitVisible(css(`[data-testid=error-banner]`)))
	if got := value(b, "read the banner", chromedp.Text(css(`[data-testid=error-text]`))); !strings.Contains(got, "UNAVAILABLE: eviction is already running") {
		t.Errorf("banner %q, want the API's error code and message", got)
	}
	b.screenshot("error-banner")
	b.do("dismiss the banner", chromedp.Click(css(`#banner-close`)), chromedp.WaitNotVisible(css(`[data-testid=error-banner]`)))

	// Repositories: pages of 50 with a cursor, then a search.
	b.do("open the repositories", chromedp.Click(css(`[data-testid=nav-repositories]`)))
	for _, n := range []int{50, 100, 120} {
		poll[bool](b, fmt.Sprintf("%d repository rows", n), uiStepTimeout,
			fmt.Sprintf(`document.querySelectorAll('tr[data-testid=repo-row]').length === %d`, n))
		if n < fakeRepos {
			b.do("load more", chromedp.Click(css(`[data-testid=load-more]`)))
		}
	}
	poll[bool](b, "no more to load", uiStepTimeout, `document.querySelector('[data-testid=load-more]').hidden`)
	cursors := []string{}
	for _, r := range fake.seen("GET", "/api/v1/repositories") {
		cursors = append(cursors, r.Query.Get("cursor"))
	}
	if !slices.Contains(cursors, "50") || !slices.Contains(cursors, "100") {
		t.Errorf("repository pages requested with cursors %q, want 50 and 100", cursors)
	}
	b.do("search", chromedp.SendKeys(css(`#repo-search`), "app-00"))
	want := []string{}
	for i := range 10 {
		want = append(want, fmt.Sprintf("docker.io/library/app-%03d", i))
	}
	poll[bool](b, "the ten matching rows", uiStepTimeout, rowsOf(`tr[data-testid=repo-row]`, "repo")+` === `+jsString(strings.Join(want, ",")))
	if h := value(b, "read the address", chromedp.Evaluate[string](`location.hash`)); !strings.Contains(h, "q=app-00") {
		t.Errorf("address %q does not keep the search", h)
	}

	// One repository: a dismissed confirm deletes nothing; a tag delete
	// shows what it kept and why; the reference copies.
	b.do("open a repository",
		chromedp.Click(css(`tr[data-repo="docker.io/library/app-007"] a`)),
		chromedp.WaitVisible(css(`tr[data-testid=tag-row][data-tag="latest"]`)),
	)
	b.acceptDialogs.Store(false)
	b.do("dismiss deleting the repository", chromedp.Click(css(`[data-testid=delete-repo]`)))
	b.acceptDialogs.Store(true)
	if d := b.takeDialogs(); len(d) != 1 || !strings.Contains(d[0], "docker.io/library/app-007") {
		t.Errorf("dialogs %q, want one confirm naming the repository", d)
	}
	b.do("delete a tag",
		chromedp.Click(css(`tr[data-tag="1.0"] [data-testid=delete-tag]`)),
		chromedp.WaitVisible(css(`[data-testid=deletion-result] [data-testid=kept][data-reason=tagged]`)),
		chromedp.WaitNotPresent(css(`tr[data-testid=tag-row][data-tag="1.0"]`)),
		chromedp.WaitVisible(css(`tr[data-testid=tag-row][data-tag="latest"]`)),
	)
	if got := value(b, "read the deletion result", chromedp.Text(css(`[data-testid=deletion-result]`))); !strings.Contains(got, "another tag points to it") || !strings.Contains(got, "docker.io/library/app-007:latest") {
		t.Errorf("deletion result %q, want the kept manifest, why, and by what", got)
	}
	if n := len(fake.seen("DELETE", "/api/v1/repositories")); n != 0 {
		t.Errorf("%d repository deletes after a dismissed confirm, want 0", n)
	}
	for _, perm := range []string{"clipboard-write", "clipboard-read"} {
		if _, err := chromedp.CallBrowser(b.ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: perm},
			Setting:    cdpbrowser.PermissionSettingGranted,
			Origin:     srv.URL,
		}); err != nil {
			t.Fatalf("granting %s: %v", perm, err)
		}
	}
	b.do("copy the reference", chromedp.Click(css(`tr[data-tag="latest"] [data-testid=copy-ref]`)))
	poll[bool](b, "the copy confirmed", uiStepTimeout, `document.querySelector('tr[data-tag="latest"] [data-testid=copy-ref]').textContent === 'Copied'`)
	if got := value(b, "read the clipboard", chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise)); got != "docker.io/library/app-007:latest" {
		t.Errorf("clipboard %q, want the tag's reference", got)
	}
	b.screenshot("repository")
	b.do("delete the repository",
		chromedp.Click(css(`[data-testid=delete-repo]`)),
		chromedp.WaitVisible(css(`[data-testid=tags-empty]`)),
	)
	if got := value(b, "read the deletion result", chromedp.Text(css(`[data-testid=deletion-result]`))); !strings.Contains(got, "Deleted repository docker.io/library/app-007") || !strings.Contains(got, "5.00 MiB freed") {
		t.Errorf("deletion result %q, want the repository and the bytes freed", got)
	}

	// Prefetch: one job that fails on one item, one canceled.
	b.do("submit a prefetch",
		chromedp.Click(css(`[data-testid=nav-prefetch]`)),
		chromedp.SendKeys(css(`#prefetch-refs`), "nginx:1.27\nmissing:1"),
		chromedp.SendKeys(css(`#prefetch-platforms`), "linux/amd64, linux/arm64/v8"),
		chromedp.SendKeys(css(`#prefetch-concurrency`), "2"),
		chromedp.Click(css(`[data-testid=prefetch-submit]`)),
	)
	poll[bool](b, "the job failed", uiJobTimeout, `document.querySelector('[data-testid=prefetch-job]').dataset.state === 'failed'`)
	if diff := cmp.Diff([]adminapi.PrefetchRequest{{Refs: []string{"nginx:1.27", "missing:1"}, Platforms: []string{"linux/amd64", "linux/arm64/v8"}, Concurrency: 2}}, fake.prefetchRequests()); diff != "" {
		t.Errorf("prefetch request (-want +got):\n%s", diff)
	}
	if got := rowsOf(`[data-testid=prefetch-item]`, "state"); value(b, "read the item states", chromedp.Evaluate[string](got)) != "done,failed" {
		t.Errorf("item states %q, want done,failed", value(b, "read the item states", chromedp.Evaluate[string](got)))
	}
	if got := value(b, "read the item error", chromedp.Text(css(`[data-testid=prefetch-item][data-ref="missing:1"] [data-testid=item-error]`))); !strings.Contains(got, "manifest unknown") {
		t.Errorf("item error %q, want the API's", got)
	}
	b.do("submit a slow prefetch",
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#prefetch-refs').value = ''`),
		chromedp.SendKeys(css(`#prefetch-refs`), "slow:1"),
		chromedp.Click(css(`[data-testid=prefetch-submit]`)),
	)
	poll[bool](b, "the slow job running", uiStepTimeout,
		`(() => { const j = document.querySelector('[data-testid=prefetch-job]'); return j.dataset.jobId === 'job-2' && j.dataset.state === 'running' && !j.hidden; })()`)
	b.do("cancel it", chromedp.Click(css(`[data-testid=prefetch-cancel]`)))
	poll[bool](b, "the job canceled", uiStepTimeout, `document.querySelector('[data-testid=prefetch-job]').dataset.state === 'canceled'`)
	if n := len(fake.seen("DELETE", "/api/v1/prefetch/job-2")); n != 1 {
		t.Errorf("%d cancel requests, want 1", n)
	}
	poll[bool](b, "both jobs listed", uiStepTimeout, rowsOf(`tr[data-testid=job-row]`, "state")+` === 'canceled,failed'`)
	b.screenshot("prefetch")

	// After signing in, every request carried the token.
	fake.mu.Lock()
	defer fake.mu.Unlock()
	signedIn := slices.IndexFunc(fake.requests, func(r fakeRequest) bool { return r.Authorized })
	if signedIn < 0 {
		t.Fatal("no authorized request")
	}
	for _, r := range fake.requests[signedIn:] {
		if !r.Authorized {
			t.Errorf("%s %s after signing in came without the token", r.Method, r.Path)
		}
	}
}
