//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// clients bundles every client of the suite for the scenarios that run all
// of them against the same images.
type clients struct {
	docker *dockerd
	ctrd   *containerd
	ctrdH  string // hosts dir: _default → wharf
	pm     *containersTool
	crane  *crane
}

func allClients(t *testing.T) *clients {
	t.Helper()
	return &clients{
		docker: needDockerd(t),
		ctrd:   needContainerd(t),
		ctrdH:  defaultHostsDir(t),
		pm:     newContainersTool(t, mirrorConf()),
		crane:  newCrane(t),
	}
}

// trio is one image per upstream: what TestUpstreamGone and TestTagMoved
// pull with every client. dockerd mirrors only Docker Hub, so it pulls hub;
// skopeo and crane read ghcr; containerd and crane read k8s too.
type trio struct{ hub, ghcr, k8s fixture }

// pullAll pulls the trio with every client and checks every client got the
// upstream's digests. round names the local copies skopeo and crane write.
func (c *clients) pullAll(t *testing.T, x trio, round string) {
	t.Helper()
	hubShort := x.hub.Repo[len("library/"):] + ":" + x.hub.Tag
	c.docker.docker(t, "pull", hubShort)
	c.docker.expectImage(t, hubShort, x.hub.Repo[len("library/"):], x.hub)

	for _, p := range []struct {
		base string
		f    fixture
	}{{"docker.io", x.hub}, {"ghcr.io", x.ghcr}, {"registry.k8s.io", x.k8s}} {
		c.ctrd.pull(t, c.ctrdH, p.f.ref(p.base))
		c.ctrd.expectImage(t, p.f.ref(p.base), p.f)
	}

	c.pm.pull(t, x.hub.ref("docker.io"))
	c.pm.expectImage(t, x.hub.ref("docker.io"), "docker.io/"+x.hub.Repo, x.hub)
	c.pm.pull(t, x.ghcr.ref("ghcr.io"))
	c.pm.expectImage(t, x.ghcr.ref("ghcr.io"), "ghcr.io/"+x.ghcr.Repo, x.ghcr)
	c.pm.expectRaw(t, x.ghcr.ref("ghcr.io"), x.ghcr)
	expectLayout(t, c.pm.copy(t, x.ghcr.ref("ghcr.io"), "ghcr-"+round), x.ghcr)

	for _, p := range []struct {
		u *upstream
		f fixture
	}{{suite.hub, x.hub}, {suite.ghcr, x.ghcr}, {suite.k8s, x.k8s}} {
		ref := p.f.ref(mirrorBase(p.u))
		if got := c.crane.digest(t, ref); got != p.f.Digest {
			t.Errorf("crane digest %s = %s, want %s", ref, got, p.f.Digest)
		}
		expectTarball(t, c.crane.pull(t, ref, p.u.name+"-"+round))
	}
}

// removeAll wipes every client's local images.
func (c *clients) removeAll(t *testing.T) {
	t.Helper()
	c.docker.removeAll(t)
	c.ctrd.removeAll(t)
	c.pm.removeAll(t)
}

// TestUpstreamGone: once every client has pulled an image through wharf,
// the upstreams go away (listeners and connections closed), every client's
// local images are wiped, and every client pulls again: all of it comes
// from wharf's cache. The tags are older than the TTL by then, so wharf
// tries upstream, fails, and serves the last known mapping
// (stale-if-error, client-compat §5.3).
func TestUpstreamGone(t *testing.T) {
	c := allClients(t)
	x := trio{
		hub:  seedIndex(t, suite.hub, "library/gone-multi", "1", buildIndex(t, "gone-multi", 2)),
		ghcr: seedImage(t, suite.ghcr, "e2e/gone-schema2", "1", buildImage(t, "gone-schema2", dockerImage, amd64, 3)),
		k8s:  seedImage(t, suite.k8s, "e2e/gone-k8s", "1", buildImage(t, "gone-k8s", ociImage, amd64, 2)),
	}
	c.pullAll(t, x, "warm")

	ups := []*upstream{suite.hub, suite.ghcr, suite.k8s}
	marks := map[*upstream]upMark{}
	for _, u := range ups {
		t.Cleanup(u.reg.Up) // also when the test fails half-way
		u.reg.Down()
		marks[u] = u.mark()
		expectUnreachable(t, u)
	}
	// Let every cached tag outlive the TTL: the next tag requests must go
	// upstream, fail, and be answered stale.
	time.Sleep(tagTTL + 500*time.Millisecond)

	c.removeAll(t)
	logMark := suite.wharf.mark(t)
	c.pullAll(t, x, "gone")

	for _, u := range ups {
		if got := u.since(marks[u]); len(got) > 0 {
			t.Errorf("%s was down but logged requests:\n%s", u.name, got)
		}
	}
	entries := suite.wharf.requestsSince(t, logMark)
	stale := 0
	for _, e := range entries {
		switch {
		case e.Status >= 400:
			t.Errorf("wharf failed a request while upstreams were down: %s", e)
		case e.Cache == "stale":
			stale++
		case e.Cache != "hit" && e.Path != "/v2/":
			t.Errorf("wharf answered %q (want hit or stale) while upstreams were down: %s", e.Cache, e)
		}
	}
	if stale == 0 {
		t.Errorf("no tag was served stale while upstreams were down; wharf logged:\n%v", entries)
	}

	for _, u := range ups {
		u.reg.Up()
		if err := reachable(t.Context(), u); err != nil {
			t.Errorf("%s did not come back: %v", u.name, err)
		}
	}
}

// reachable reports whether an upstream answers HTTP at all (a 401 from a
// registry with a token service counts).
func reachable(ctx context.Context, u *upstream) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.reg.URL()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := suite.wharf.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// expectUnreachable checks that an upstream refuses connections.
func expectUnreachable(t *testing.T, u *upstream) {
	t.Helper()
	if err := reachable(t.Context(), u); err == nil {
		t.Fatalf("%s still answers after Down", u.name)
	}
}

// TestTagMoved: a tag moves upstream after every client pulled it; once
// the TTL has passed, every client gets the new digest, and wharf asked
// upstream with HEAD (free on Docker Hub's rate limit), never GET, for the
// tag, then fetched only the new manifest by digest (client-compat §4.3).
func TestTagMoved(t *testing.T) {
	c := allClients(t)
	old := trio{
		hub:  seedImage(t, suite.hub, "library/moving", "stable", buildImage(t, "moving-hub-a", dockerImage, amd64, 2)),
		ghcr: seedImage(t, suite.ghcr, "e2e/moving", "stable", buildImage(t, "moving-ghcr-a", ociImage, amd64, 2)),
		k8s:  seedImage(t, suite.k8s, "e2e/moving", "stable", buildImage(t, "moving-k8s-a", ociImage, amd64, 1)),
	}
	c.pullAll(t, old, "old")

	marks := map[*upstream]upMark{suite.hub: suite.hub.mark(), suite.ghcr: suite.ghcr.mark(), suite.k8s: suite.k8s.mark()}
	moved := trio{
		hub:  seedIndex(t, suite.hub, "library/moving", "stable", buildIndex(t, "moving-hub-b", 2)),
		ghcr: seedImage(t, suite.ghcr, "e2e/moving", "stable", buildImage(t, "moving-ghcr-b", dockerImage, amd64, 2)),
		k8s:  seedImage(t, suite.k8s, "e2e/moving", "stable", buildImage(t, "moving-k8s-b", ociImage, amd64, 2)),
	}
	// Bounded wait: past the TTL every tag request revalidates.
	time.Sleep(tagTTL + 500*time.Millisecond)
	logMark := suite.wharf.mark(t)
	c.pullAll(t, moved, "moved")

	for _, p := range []struct {
		u        *upstream
		old, new fixture
	}{{suite.hub, old.hub, moved.hub}, {suite.ghcr, old.ghcr, moved.ghcr}, {suite.k8s, old.k8s, moved.k8s}} {
		got := p.u.since(marks[p.u])
		expectNoBypass(t, p.u, got)
		expectAtLeast(t, p.u.name+": tag revalidation HEADs", got, 1, onRegistry, byWharf, head, byTag, inRepo(p.new.Repo))
		expectCount(t, p.u.name+": manifest GETs by tag", got, 0, get, byTag)
		expectCount(t, p.u.name+": GET of the new manifest", got, 1, onRegistry, get, manifestRef(p.new.Digest.String()))
		expectCount(t, p.u.name+": GET of the old manifest", got, 0, get, manifestRef(p.old.Digest.String()))
		expectFetchedOnce(t, p.u, got, p.new)
	}
	// The first request after the move found the new digest upstream.
	entries := filterLog(suite.wharf.requestsSince(t, logMark), func(e logEntry) bool { return e.Ref == "stable" })
	if len(filterLog(entries, func(e logEntry) bool { return e.Cache == "miss" })) == 0 {
		t.Errorf("no tag request was answered from a fresh upstream lookup; wharf logged:\n%v", entries)
	}
}

// TestManyNodesOneFetch: eight containerd instances (eight nodes) pull the
// same uncached image at the same moment; its 64 MiB layer is fetched from
// upstream exactly once, and every node gets every byte (PRODUCT item 5).
func TestManyNodesOneFetch(t *testing.T) {
	const nodes = 8
	bins := need(t, "containerd", "ctr")
	if os.Geteuid() != 0 {
		needDaemon(t, errNotRoot)
	}
	tools := map[string]string{"containerd": bins[0], "ctr": bins[1]}
	f := seedImage(t, suite.hub, "library/many-nodes", "1",
		buildImage(t, "many-nodes", ociImage, amd64, 2, bigFiles("many-nodes", 64<<20)))
	big := f.Blobs[len(f.Blobs)-1]
	if size := blobSize(t, f, big); size < 64<<20 {
		t.Fatalf("big layer is %d bytes, want at least 64 MiB", size)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ctrds := make([]*containerd, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctrds[i], errs[i] = startContainerd(ctx, t, tools, dir)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("containerd node %d: %v", i, err)
		}
	}

	hosts := defaultHostsDir(t)
	ref := f.ref("docker.io")
	hubMark, logMark := suite.hub.mark(), suite.wharf.mark(t)
	start := make(chan struct{})
	for i, c := range ctrds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = command(t.Context(), baseEnv(), c.ctrBin, "--address", c.sock, "--namespace", ctrNamespace,
				"images", "pull", "--hosts-dir", hosts, ref)
		}()
	}
	close(start) // every node at once
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range ctrds {
		c.expectImage(t, ref, f)
	}

	got := suite.hub.since(hubMark)
	expectNoBypass(t, suite.hub, got)
	expectFetchedOnce(t, suite.hub, got, f)
	expectCount(t, "CDN downloads of the big layer", got, 1, storageOnly, get, blob(big))

	bigGets := filterLog(suite.wharf.requestsSince(t, logMark), func(e logEntry) bool {
		return e.Method == http.MethodGet && e.Ref == big.String()
	})
	if len(bigGets) < nodes {
		t.Errorf("wharf served the big layer %d times, want at least %d (one per node)", len(bigGets), nodes)
	}
	misses := 0
	for _, e := range bigGets {
		if e.Status != http.StatusOK && e.Status != http.StatusPartialContent {
			t.Errorf("big layer request failed: %s", e)
		}
		if e.Cache == "miss" {
			misses++
		}
	}
	if misses != 1 {
		t.Errorf("big layer: %d requests started an upstream fetch, want 1; wharf logged:\n%v", misses, bigGets)
	}
}

// blobSize is the size f's manifest gives blob d.
func blobSize(t *testing.T, f fixture, d digest.Digest) int64 {
	t.Helper()
	var m struct {
		Layers []struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(f.Raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.Digest == d {
			return l.Size
		}
	}
	t.Fatalf("blob %s not in the manifest", d)
	return 0
}
