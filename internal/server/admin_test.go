package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// admin sends a request to the admin listener's handler.
func (h *harness) admin(method, path string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	h.t.Helper()
	req := httptest.NewRequest(method, path, body)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.inst.AdminHandler().ServeHTTP(rec, req)
	return rec
}

// adminJSON sends a request and decodes a JSON answer of the wanted status
// into out (nil to skip).
func adminJSON(t *testing.T, h *harness, method, path string, in any, status int, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	rec := h.admin(method, path, body)
	if rec.Code != status {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
}

func adminCode(t *testing.T, h *harness, method, path string, in any, status int, code string) {
	t.Helper()
	var e adminapi.ErrorBody
	adminJSON(t, h, method, path, in, status, &e)
	if len(e.Errors) != 1 || e.Errors[0].Code != code || e.Errors[0].Message == "" {
		t.Fatalf("%s %s: errors %+v, want one %s with a message", method, path, e.Errors, code)
	}
}

// imageSize is the size of an image's manifest, config and layers.
func imageSize(t *testing.T, h *harness, base, tag string) int64 {
	t.Helper()
	var n int64
	for _, ref := range pullAll(t, h, base, tag) {
		if strings.HasPrefix(ref, "sha256:") {
			r := h.do("HEAD", base+"/manifests/"+ref)
			if r.StatusCode != http.StatusOK {
				r = h.do("HEAD", base+"/blobs/"+ref)
			}
			n += r.ContentLength
		}
	}
	return n
}

func TestAdminBrowseAndDelete(t *testing.T) {
	h := newHarness(t, defaultOptions())
	imgA := registrytest.RandomImage(t, 101, 3000, 5000)
	imgB := registrytest.RandomImage(t, 102, 7000)
	dA := h.hub.PushImage(t, "library/app", "1", imgA)
	h.hub.PushImage(t, "library/shared", "x", imgA)
	dB := h.hub.PushImage(t, "library/app", "2", imgB)
	sizeA := imageSize(t, h, "/v2/library/app", "1")
	imageSize(t, h, "/v2/library/shared", "x")
	sizeB := imageSize(t, h, "/v2/library/app", "2")

	var stats adminapi.Stats
	adminJSON(t, h, "GET", "/api/v1/stats", nil, 200, &stats)
	if stats.Cache.Bytes != sizeA+sizeB || stats.Cache.Manifests != 2 || stats.Cache.Blobs != 5 {
		t.Errorf("stats cache = %+v, want %d bytes in 2 manifests and 5 blobs", stats.Cache, sizeA+sizeB)
	}
	if stats.Traffic.Hits == 0 || stats.Traffic.Misses == 0 || stats.Traffic.HitRatio <= 0 || stats.Traffic.HitRatio >= 1 {
		t.Errorf("stats traffic = %+v", stats.Traffic)
	}

	var ups []adminapi.Upstream
	adminJSON(t, h, "GET", "/api/v1/upstreams", nil, 200, &ups)
	byName := map[string]adminapi.Upstream{}
	for _, u := range ups {
		byName[u.Name] = u
	}
	if hub := byName["docker.io"]; hub.Health != "ok" || hub.RateLimit == nil || hub.RateLimit.Remaining < 0 || hub.URL != h.hub.URL() {
		t.Errorf("docker.io = %+v, want healthy with a rate limit", hub)
	}
	if q := byName["quay.io"]; q.Health != "unknown" {
		t.Errorf("quay.io = %+v, want unknown health (never asked)", q)
	}

	// Repositories: all, filtered, paginated.
	var page adminapi.RepositoryPage
	adminJSON(t, h, "GET", "/api/v1/repositories", nil, 200, &page)
	var names []string
	for _, r := range page.Repositories {
		names = append(names, r.Upstream+"/"+r.Name)
	}
	if diff := cmp.Diff([]string{"docker.io/library/app", "docker.io/library/shared"}, names); diff != "" || page.Next != "" {
		t.Errorf("repositories (-want +got):\n%s next %q", diff, page.Next)
	}
	if app := page.Repositories[0]; app.Tags != 2 || app.Manifests != 2 || app.Bytes != sizeA+sizeB || app.LastAccess.IsZero() {
		t.Errorf("library/app = %+v", app)
	}
	page = adminapi.RepositoryPage{}
	adminJSON(t, h, "GET", "/api/v1/repositories?q=SHAR", nil, 200, &page)
	if len(page.Repositories) != 1 || page.Repositories[0].Name != "library/shared" {
		t.Errorf("q=SHAR: %+v", page.Repositories)
	}
	page = adminapi.RepositoryPage{}
	adminJSON(t, h, "GET", "/api/v1/repositories?limit=1", nil, 200, &page)
	if len(page.Repositories) != 1 || page.Next == "" {
		t.Fatalf("limit=1: %+v", page)
	}
	next := page.Next
	page = adminapi.RepositoryPage{}
	adminJSON(t, h, "GET", "/api/v1/repositories?limit=1&cursor="+next, nil, 200, &page)
	if len(page.Repositories) != 1 || page.Repositories[0].Name != "library/shared" || page.Next != "" {
		t.Errorf("second page: %+v", page)
	}
	adminCode(t, h, "GET", "/api/v1/repositories?limit=0", nil, 400, adminapi.CodeInvalid)
	adminCode(t, h, "GET", "/api/v1/repositories?cursor=!!", nil, 400, adminapi.CodeInvalid)

	var tags []adminapi.Tag
	adminJSON(t, h, "GET", "/api/v1/tags?upstream=docker.io&repo=library/app", nil, 200, &tags)
	if len(tags) != 2 || tags[0].Name != "1" || tags[0].Digest != dA.String() || tags[0].Bytes != sizeA || tags[1].Digest != dB.String() ||
		tags[1].Bytes != sizeB || tags[0].Reference != "docker.io/library/app:1" || tags[0].MediaType == "" {
		t.Errorf("tags = %+v", tags)
	}
	adminCode(t, h, "GET", "/api/v1/tags?upstream=docker.io&repo=library/none", nil, 404, adminapi.CodeNotFound)
	adminCode(t, h, "GET", "/api/v1/tags?repo=library/app", nil, 400, adminapi.CodeInvalid)

	var blobs adminapi.BlobPage
	adminJSON(t, h, "GET", "/api/v1/blobs?limit=3", nil, 200, &blobs)
	if len(blobs.Blobs) != 3 || blobs.Next == "" {
		t.Fatalf("blobs page 1: %+v", blobs)
	}
	first, next := blobs.Blobs, blobs.Next
	blobs = adminapi.BlobPage{}
	adminJSON(t, h, "GET", "/api/v1/blobs?limit=3&cursor="+next, nil, 200, &blobs)
	if len(blobs.Blobs) != 2 || blobs.Next != "" || blobs.Blobs[0].Digest <= first[2].Digest {
		t.Errorf("blobs page 2: %+v after %+v", blobs, first)
	}

	// Deleting a tag whose image another tag still uses keeps the image.
	var del adminapi.Deletion
	adminJSON(t, h, "DELETE", "/api/v1/tags?upstream=docker.io&repo=library/app&tag=1", nil, 200, &del)
	if del.Tags != 1 || del.Bytes != 0 || len(del.Kept) != 1 || del.Kept[0].Reason != adminapi.KeptTagged ||
		!slicesContain(del.Kept[0].By, "docker.io/library/shared:x") {
		t.Errorf("delete app:1 = %+v, want the image kept because shared:x tags it", del)
	}
	// Deleting the last tag of an image frees it.
	del = adminapi.Deletion{}
	adminJSON(t, h, "DELETE", "/api/v1/tags?upstream=docker.io&repo=library/app&tag=2", nil, 200, &del)
	if del.Tags != 1 || del.Manifests != 1 || del.Blobs != 2 || del.Bytes != sizeB || len(del.Kept) != 0 {
		t.Errorf("delete app:2 = %+v, want its manifest, config and layer (%d bytes)", del, sizeB)
	}
	adminCode(t, h, "DELETE", "/api/v1/tags?upstream=docker.io&repo=library/app&tag=2", nil, 404, adminapi.CodeNotFound)
	// The image is fetched again on the next pull.
	h.hub.ResetRequests()
	if got := imageSize(t, h, "/v2/library/app", "2"); got != sizeB {
		t.Errorf("pull after delete: %d bytes", got)
	}
	if h.hub.Count(func(r registrytest.Request) bool { return strings.Contains(r.Path, "/blobs/") }) == 0 {
		t.Error("the pull after the delete sent no blob request upstream")
	}

	// Deleting by digest removes the tags that point to it.
	del = adminapi.Deletion{}
	adminJSON(t, h, "DELETE", "/api/v1/content/"+dA.String(), nil, 200, &del)
	if del.Manifests != 1 || del.Blobs != 3 || del.Bytes != sizeA || del.Tags != 1 {
		t.Errorf("delete %s = %+v", dA, del)
	}
	adminCode(t, h, "GET", "/api/v1/tags?upstream=docker.io&repo=library/shared", nil, 404, adminapi.CodeNotFound)
	adminCode(t, h, "DELETE", "/api/v1/content/"+dA.String(), nil, 404, adminapi.CodeNotFound)
	adminCode(t, h, "DELETE", "/api/v1/content/sha256:nothex", nil, 400, adminapi.CodeInvalid)

	// A repository.
	del = adminapi.Deletion{}
	adminJSON(t, h, "DELETE", "/api/v1/repositories?upstream=docker.io&repo=library/app", nil, 200, &del)
	if del.Tags != 1 || del.Manifests != 1 || del.Bytes != sizeB {
		t.Errorf("delete library/app = %+v", del)
	}
	adminCode(t, h, "DELETE", "/api/v1/repositories?upstream=docker.io&repo=library/app", nil, 404, adminapi.CodeNotFound)
	stats = adminapi.Stats{}
	adminJSON(t, h, "GET", "/api/v1/stats", nil, 200, &stats)
	if stats.Cache.Bytes != 0 || stats.Cache.Manifests != 0 || stats.Cache.Blobs != 0 {
		t.Errorf("cache after deleting everything: %+v", stats.Cache)
	}

	adminCode(t, h, "GET", "/api/v1/nothing", nil, 404, adminapi.CodeNotFound)
	adminCode(t, h, "POST", "/api/v1/stats", nil, 404, adminapi.CodeNotFound)
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestAdminToken(t *testing.T) {
	const token = "0123456789abcdef-token"
	o := defaultOptions()
	o.configure = func(c *config.Config) { c.AdminToken = token }
	h := newHarness(t, o)
	for _, path := range []string{"/api/v1/stats", "/metrics", "/api/v1/nothing"} {
		for _, auth := range []string{"", "Bearer wrong", "Basic " + token, token, "Bearer " + token + "x"} {
			rec := h.admin("GET", path, nil, "Authorization", auth)
			if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "Bearer") ||
				!strings.Contains(rec.Body.String(), adminapi.CodeUnauthorized) {
				t.Errorf("GET %s with %q: %d %s", path, auth, rec.Code, rec.Body)
			}
		}
		for _, auth := range []string{"Bearer " + token, "bearer " + token} {
			if rec := h.admin("GET", path, nil, "Authorization", auth); rec.Code == http.StatusUnauthorized {
				t.Errorf("GET %s with the token: %d", path, rec.Code)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if rec := h.admin("GET", path, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want open", path, rec.Code)
		}
	}
}

// waitJob polls a prefetch job until it ends.
func waitJob(t *testing.T, h *harness, id string) adminapi.PrefetchJob {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var job adminapi.PrefetchJob
		adminJSON(t, h, "GET", "/api/v1/prefetch/"+id, nil, 200, &job)
		switch job.State {
		case adminapi.StateDone, adminapi.StateFailed, adminapi.StateCanceled:
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch %s still %s: %+v", id, job.State, job)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAdminPrefetch(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 201, 40000, 60000)
	d := h.hub.PushImage(t, "library/warm", "1", img)
	idx := registrytest.RandomIndex(t, 202, "linux/amd64", "linux/arm64")
	h.k8s.PushIndex(t, "pause", "3.10", idx)

	adminCode(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{}, 400, adminapi.CodeInvalid)
	adminCode(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{Refs: []string{"UPPER/case"}}, 400, adminapi.CodeInvalid)
	adminCode(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{Refs: []string{"unknown.example/x:1"}}, 400, adminapi.CodeInvalid)
	adminCode(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{Refs: []string{"warm"}, Platforms: []string{"linux"}}, 400, adminapi.CodeInvalid)
	adminCode(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{Refs: []string{"warm"}, Concurrency: 99}, 400, adminapi.CodeInvalid)
	adminCode(t, h, "GET", "/api/v1/prefetch/nope", nil, 404, adminapi.CodeNotFound)

	var job adminapi.PrefetchJob
	adminJSON(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{
		Refs:      []string{"warm:1", "registry.k8s.io/pause:3.10", "docker.io/library/missing:1"},
		Platforms: []string{"linux/arm64"},
	}, 202, &job)
	if job.ID == "" || len(job.Items) != 3 || job.Items[0].Reference != "docker.io/library/warm:1" {
		t.Fatalf("job = %+v", job)
	}
	job = waitJob(t, h, job.ID)
	if job.State != adminapi.StateFailed || job.Done != 2 || job.Failed != 1 {
		t.Fatalf("job = %+v, want 2 done and the missing image failed", job)
	}
	warm := job.Items[0]
	if warm.State != adminapi.StateDone || warm.Digest != d.String() || warm.Bytes != warm.TotalBytes || warm.TotalBytes < 100000 || warm.Cached != 0 {
		t.Errorf("warm item = %+v", warm)
	}
	if miss := job.Items[2]; miss.Error == "" {
		t.Errorf("missing item = %+v, want an error", miss)
	}
	var list []adminapi.PrefetchJob
	adminJSON(t, h, "GET", "/api/v1/prefetch", nil, 200, &list)
	if len(list) != 1 || list[0].ID != job.ID {
		t.Errorf("job list = %+v", list)
	}

	// Everything prefetched is now served with the upstreams down, and
	// the amd64 half of the index was not fetched.
	h.hub.Down()
	h.k8s.Down()
	pullAll(t, h, "/v2/library/warm", "1")
	r := h.do("GET", "/v2/registry.k8s.io/pause/manifests/3.10")
	expectStatus(t, r, http.StatusOK)
	var index struct {
		Manifests []struct {
			Digest   string
			Platform struct{ Architecture string }
		}
	}
	json.Unmarshal(r.body, &index)
	for _, m := range index.Manifests {
		r := h.do("GET", "/v2/registry.k8s.io/pause/manifests/"+m.Digest)
		if got, want := r.StatusCode == http.StatusOK, m.Platform.Architecture == "arm64"; got != want {
			t.Errorf("%s manifest served with upstream down: %v, want %v", m.Platform.Architecture, got, want)
		}
	}

	// A second prefetch of the same image finds it all cached.
	h.hub.Up()
	adminJSON(t, h, "POST", "/api/v1/prefetch", adminapi.PrefetchRequest{Refs: []string{"docker.io/library/warm:1"}}, 202, &job)
	job = waitJob(t, h, job.ID)
	if it := job.Items[0]; job.State != adminapi.StateDone || it.Cached != it.TotalBytes || it.TotalBytes != warm.TotalBytes {
		t.Errorf("second prefetch = %+v, want everything cached", job)
	}
}

func TestAdminExportImport(t *testing.T) {
	src := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 301, 20000, 30000)
	d := src.hub.PushImage(t, "library/carry", "1", img)
	src.ghcr.PushImage(t, "org/tool", "v2", registrytest.RandomImage(t, 302, 9000))
	idx := registrytest.RandomIndex(t, 303, "linux/amd64", "linux/arm64")
	src.k8s.PushIndex(t, "pause", "3.10", idx)
	pullAll(t, src, "/v2/library/carry", "1")
	pullAll(t, src, "/v2/ghcr.io/org/tool", "v2")
	pullAll(t, src, "/v2/registry.k8s.io/pause", "3.10")

	adminCode(t, src, "GET", "/api/v1/export?ref=docker.io/library/absent:1", nil, 404, adminapi.CodeNotFound)
	adminCode(t, src, "GET", "/api/v1/export?ref=Bad:ref", nil, 400, adminapi.CodeInvalid)

	one := src.admin("GET", "/api/v1/export?ref=carry:1", nil)
	if one.Code != 200 || one.Header().Get("Content-Type") != "application/x-tar" ||
		one.Header().Get("Content-Length") != strconv.Itoa(one.Body.Len()) || one.Header().Get(adminapi.HeaderExportImages) != "1" {
		t.Fatalf("export carry:1: %d %v (%d bytes)", one.Code, one.Header(), one.Body.Len())
	}
	all := src.admin("GET", "/api/v1/export", nil)
	if all.Code != 200 || all.Header().Get(adminapi.HeaderExportImages) != "3" ||
		all.Header().Get("Content-Length") != strconv.Itoa(all.Body.Len()) {
		t.Fatalf("export all: %d %v", all.Code, all.Header())
	}

	// Another wharf whose upstreams are all down imports it and serves
	// every image from the cache.
	dst := newHarness(t, defaultOptions())
	dst.hub.Down()
	dst.ghcr.Down()
	dst.k8s.Down()
	var rep adminapi.ImportReport
	adminJSON(t, dst, "POST", "/api/v1/import", nil, 400, nil) // empty body: not a layout
	rec := dst.admin("POST", "/api/v1/import", bytes.NewReader(all.Body.Bytes()))
	if rec.Code != 200 {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	json.Unmarshal(rec.Body.Bytes(), &rep)
	want := []string{"docker.io/library/carry:1", "ghcr.io/org/tool:v2", "registry.k8s.io/pause:3.10"}
	got := append([]string(nil), rep.Images...)
	if diff := cmp.Diff(want, sortedCopy(got)); diff != "" {
		t.Errorf("imported images (-want +got):\n%s", diff)
	}
	pullAll(t, dst, "/v2/library/carry", "1")
	pullAll(t, dst, "/v2/ghcr.io/org/tool", "v2")
	pullAll(t, dst, "/v2/registry.k8s.io/pause", "3.10")
	r := dst.do("HEAD", "/v2/library/carry/manifests/"+d.String())
	if r.StatusCode != 200 || r.Header.Get("X-Wharf-Cache") != "hit" {
		t.Errorf("imported manifest by digest: %d %s", r.StatusCode, r.Header.Get("X-Wharf-Cache"))
	}

	// A corrupted archive is rejected and records nothing.
	bad := bytes.Clone(one.Body.Bytes())
	flipInBlob(t, bad)
	fresh := newHarness(t, defaultOptions())
	adminCode(t, fresh, "POST", "/api/v1/import", bytes.NewReader(bad), 400, adminapi.CodeInvalid)
	var stats adminapi.Stats
	adminJSON(t, fresh, "GET", "/api/v1/stats", nil, 200, &stats)
	if stats.Cache.Bytes != 0 || stats.Cache.Manifests != 0 || stats.Cache.Blobs != 0 {
		t.Errorf("cache after a rejected import: %+v", stats.Cache)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// flipInBlob changes one byte in the content of the archive's largest
// entry (a layer), keeping the tar structure intact.
func flipInBlob(t *testing.T, tarball []byte) {
	t.Helper()
	best, bestSize := -1, int64(0)
	for off := 0; off+512 <= len(tarball); {
		hdr := tarball[off : off+512]
		if bytes.Equal(hdr, make([]byte, 512)) {
			break
		}
		size, err := strconv.ParseInt(strings.TrimRight(strings.TrimSpace(string(bytes.Trim(hdr[124:136], "\x00 "))), "\x00"), 8, 64)
		if err != nil {
			t.Fatalf("tar header at %d: %v", off, err)
		}
		if strings.HasPrefix(string(hdr[:100]), "blobs/") && size > bestSize {
			best, bestSize = off+512, size
		}
		off += 512 + int((size+511)/512*512)
	}
	if best < 0 {
		t.Fatal("no blob entry in the archive")
	}
	tarball[best+int(bestSize)/2] ^= 0xff
}
