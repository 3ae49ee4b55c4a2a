//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/wharf-mirror/wharf/internal/adminapi"
)

// adminClient speaks the admin API of the suite's wharf (no token: the
// suite's admin listener is on loopback).
func adminClient() *adminapi.Client {
	return &adminapi.Client{BaseURL: "http://" + suite.wharf.adminAddr, HTTP: suite.wharf.client}
}

// pullThrough fetches f's manifest by tag and every blob by digest through
// wharf's path-prefix route, as a client would, and checks each answer.
func pullThrough(t *testing.T, u *upstream, f fixture) {
	t.Helper()
	base := "/v2/" + u.name + "/" + f.Repo
	status, _, body := suite.wharf.get(t, "", base+"/manifests/"+f.Tag,
		"Accept", ocispec.MediaTypeImageManifest, "Accept", ocispec.MediaTypeImageIndex)
	if status != http.StatusOK || string(body) != string(f.Raw) {
		t.Fatalf("GET %s/manifests/%s through wharf: %d, manifest equal to upstream's: %v", base, f.Tag, status, string(body) == string(f.Raw))
	}
	for _, d := range f.Blobs {
		if status, _, _ := suite.wharf.get(t, "", base+"/blobs/"+d.String()); status != http.StatusOK {
			t.Fatalf("GET %s/blobs/%s through wharf: %d", base, d, status)
		}
	}
}

// TestUI drives the web UI on wharf's admin listener with a real headless
// Chromium: the overview shows what a pull cached, the repository list
// finds the image, deleting its tag removes it (in the UI, in the admin
// API, and in the cache: its layer comes from upstream again), and a
// prefetch submitted through the form runs to "done". Screenshots of the
// pages go to $WHARF_E2E_ARTIFACTS (default test/e2e/artifacts).
func TestUI(t *testing.T) {
	admin := adminClient()
	if _, err := admin.Stats(t.Context()); err != nil {
		t.Fatalf("the admin API does not answer on %s: %v", suite.wharf.adminAddr, err)
	}
	browse := seedImage(t, suite.ghcr, "e2e/ui-browse", "1", buildImage(t, "ui-browse", ociImage, amd64, 2))
	prefetched := seedImage(t, suite.ghcr, "e2e/ui-prefetch", "1", buildImage(t, "ui-prefetch", ociImage, amd64, 2))
	pullThrough(t, suite.ghcr, browse)

	b := newBrowser(t)
	base := "http://" + suite.wharf.adminAddr + "/"

	// Overview: a non-zero cache size, the upstreams listed.
	b.do("open the overview",
		chromedp.Navigate(base),
		chromedp.WaitVisible(css(`tr[data-testid=upstream-row][data-upstream="ghcr.io"]`)),
	)
	cached := poll[float64](b, "a non-zero cache size on the overview", uiStepTimeout,
		`Number(document.querySelector('[data-testid=cache-size]').dataset.bytes || 0)`)
	sizeText := value(b, "read the cache size", chromedp.Text(css(`[data-testid=cache-size]`)))
	t.Logf("overview: cache %s (%v bytes)", sizeText, cached)
	for _, up := range []*upstream{suite.hub, suite.ghcr, suite.k8s} {
		b.do("see upstream "+up.name, chromedp.WaitVisible(css(`tr[data-testid=upstream-row][data-upstream=`+jsString(up.name)+`]`)))
	}
	b.screenshot("overview")

	// Repositories: search, find the row, open it.
	repoID := suite.ghcr.name + "/" + browse.Repo
	rowSel := `tr[data-testid=repo-row][data-repo=` + jsString(repoID) + `]`
	b.do("search the repositories",
		chromedp.Click(css(`[data-testid=nav-repositories]`)),
		chromedp.WaitVisible(css(`#repo-search`)),
		chromedp.SendKeys(css(`#repo-search`), "ui-browse"),
	)
	// The debounced search settles on exactly the one repository.
	poll[bool](b, "the search to list only "+repoID, uiStepTimeout,
		`[...document.querySelectorAll('tr[data-testid=repo-row]')].map((r) => r.dataset.repo).join(',') === `+jsString(repoID))

	tagSel := `tr[data-testid=tag-row][data-tag=` + jsString(browse.Tag) + `]`
	b.do("open the repository",
		chromedp.Click(css(rowSel+` a[data-testid=repo-link]`)),
		chromedp.WaitVisible(css(tagSel)),
	)
	wantRef := repoID + ":" + browse.Tag
	if got := value(b, "read the tag's reference", chromedp.Text(css(tagSel+` [data-testid=tag-reference]`))); got != wantRef {
		t.Errorf("tag reference %q, want %q", got, wantRef)
	}
	if got := value(b, "read the tag's digest", chromedp.AttributeValue(css(tagSel), "data-digest")); got.Value != browse.Digest.String() {
		t.Errorf("tag digest %q, want %s", got.Value, browse.Digest)
	}
	b.screenshot("repository")

	// Delete the tag, accepting the confirm dialog.
	b.takeDialogs()
	b.do("delete the tag",
		chromedp.Click(css(tagSel+` [data-testid=delete-tag]`)),
		chromedp.WaitVisible(css(`[data-testid=deletion-result]`)),
		chromedp.WaitNotPresent(css(tagSel)),
	)
	if d := b.takeDialogs(); len(d) != 1 || !strings.Contains(d[0], wantRef) {
		t.Errorf("confirm dialogs before the delete: %q, want one naming %s", d, wantRef)
	}
	freed := value(b, "read the deletion result", chromedp.AttributeValue(css(`[data-testid=deletion-result]`), "data-bytes"))
	result := value(b, "read the deletion result", chromedp.Text(css(`[data-testid=deletion-result]`)))
	t.Logf("deletion result (%s bytes): %s", freed.Value, result)
	if freed.Value == "" || freed.Value == "0" {
		t.Errorf("the deletion freed %q bytes, want more than 0: %s", freed.Value, result)
	}
	b.screenshot("repository-after-delete")

	// The admin API agrees: the repository is gone, or at least the tag.
	tags, err := admin.Tags(t.Context(), suite.ghcr.name, browse.Repo)
	switch {
	case errors.Is(err, adminapi.ErrNotFound):
	case err != nil:
		t.Errorf("GET /api/v1/tags after the delete: %v", err)
	case slices.ContainsFunc(tags, func(tg adminapi.Tag) bool { return tg.Name == browse.Tag }):
		t.Errorf("GET /api/v1/tags after the delete still lists %s: %+v", browse.Tag, tags)
	}

	// And the cache: the layer is fetched from upstream again.
	layer := browse.Blobs[len(browse.Blobs)-1]
	mark := suite.ghcr.mark()
	if status, _, _ := suite.wharf.get(t, "", "/v2/"+suite.ghcr.name+"/"+browse.Repo+"/blobs/"+layer.String()); status != http.StatusOK {
		t.Errorf("GET of the deleted layer through wharf: %d", status)
	}
	expectCount(t, "GET of the deleted layer upstream", suite.ghcr.since(mark), 1, onRegistry, byWharf, get, blob(layer))

	// Prefetch another image through the form and wait for "done".
	ref := suite.ghcr.name + "/" + prefetched.Repo + ":" + prefetched.Tag
	mark = suite.ghcr.mark()
	b.do("submit a prefetch",
		chromedp.Click(css(`[data-testid=nav-prefetch]`)),
		chromedp.WaitVisible(css(`#prefetch-refs`)),
		chromedp.SendKeys(css(`#prefetch-refs`), ref),
		chromedp.Click(css(`[data-testid=prefetch-submit]`)),
		chromedp.WaitVisible(css(`[data-testid=prefetch-job]`)),
	)
	state := poll[string](b, "the prefetch job to finish", uiJobTimeout,
		`(() => { const s = document.querySelector('[data-testid=prefetch-job]').dataset.state; return ['done', 'failed', 'canceled'].includes(s) ? s : ''; })()`)
	jobID := value(b, "read the job id", chromedp.AttributeValue(css(`[data-testid=prefetch-job]`), "data-job-id")).Value
	itemSel := `[data-testid=prefetch-item][data-ref=` + jsString(ref) + `]`
	itemState := value(b, "read the item's state", chromedp.AttributeValue(css(itemSel), "data-state")).Value
	if state != adminapi.StateDone || itemState != adminapi.StateDone {
		text, _ := runIn(b, 5*time.Second, chromedp.Text(css(`[data-testid=prefetch-job]`)))
		b.screenshot("prefetch-failed")
		t.Fatalf("prefetch job %s: state %q, item %q, want done; the job panel says:\n%s", jobID, state, itemState, text)
	}
	// The recent-jobs list catches up.
	poll[bool](b, "the job listed as done", uiStepTimeout,
		fmt.Sprintf(`!!document.querySelector('tr[data-testid=job-row][data-job-id=%s][data-state=done]')`, jsString(jobID)))
	b.screenshot("prefetch")

	job, err := admin.PrefetchJob(t.Context(), jobID)
	if err != nil {
		t.Fatalf("GET /api/v1/prefetch/%s: %v", jobID, err)
	}
	if job.State != adminapi.StateDone || len(job.Items) != 1 || job.Items[0].Digest != prefetched.Digest.String() {
		t.Errorf("prefetch job through the API: %+v, want done with one item of digest %s", job, prefetched.Digest)
	}
	reqs := suite.ghcr.since(mark)
	expectNoBypass(t, suite.ghcr, reqs)
	expectFetchedOnce(t, suite.ghcr, reqs, prefetched)
}
