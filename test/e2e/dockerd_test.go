//go:build e2e

package e2e

import (
	"testing"
)

// TestDockerdRegistryMirror: dockerd with registry-mirrors pointing at wharf
// pulls Docker Hub images by short name, library/ name and namespaced name
// (client-compat §1). Docker Hub itself is unreachable from here, so a
// successful pull proves wharf served it; the docker.io upstream's log shows
// wharf fetched every blob once and nothing bypassed it. A second pull after
// `docker rmi` is served from wharf's cache without a blob or manifest GET
// upstream.
func TestDockerdRegistryMirror(t *testing.T) {
	d := needDockerd(t)
	hub := suite.hub

	multi := seedIndex(t, hub, "library/dockerd-multi", "1.0", buildIndex(t, "dockerd-multi", 2))
	schema2 := seedImage(t, hub, "library/dockerd-schema2", "v2", buildImage(t, "dockerd-schema2", dockerImage, amd64, 3))
	many := seedImage(t, hub, "e2eorg/dockerd-many", "latest", buildImage(t, "dockerd-many", ociImage, amd64, 24))

	pulls := []struct {
		ref  string // what the user types
		name string // the name dockerd records in RepoDigests
		f    fixture
	}{
		{"dockerd-multi:1.0", "dockerd-multi", multi},                  // short name: library/ added by dockerd
		{"library/dockerd-schema2:v2", "dockerd-schema2", schema2},     // explicit library/
		{"docker.io/e2eorg/dockerd-many", "e2eorg/dockerd-many", many}, // namespaced, default tag
	}

	upMark, logMark := hub.mark(), suite.wharf.mark(t)
	for _, p := range pulls {
		d.docker(t, "pull", p.ref)
	}
	for _, p := range pulls {
		d.expectImage(t, p.ref, p.name, p.f)
	}
	first := hub.since(upMark)
	expectNoBypass(t, hub, first)
	for _, p := range pulls {
		expectFetchedOnce(t, hub, first, p.f)
		// One GET of the tag on the miss, one GET of each manifest by digest
		// at most (the index and its amd64 image), never of other platforms.
		expectCount(t, p.f.Repo+": manifest GETs by tag", first, 1, onRegistry, get, inRepo(p.f.Repo), byTag)
	}
	// dockerd's requests reached wharf as /v2/library/... without a registry
	// in the path: the default route.
	entries := suite.wharf.requestsSince(t, logMark)
	for _, p := range pulls {
		if got := filterLog(entries, forRepo("docker.io", p.f.Repo)); len(got) == 0 {
			t.Errorf("wharf logged no request for docker.io %s", p.f.Repo)
		}
	}
	for _, e := range entries {
		if e.Status >= 400 {
			t.Errorf("wharf answered dockerd with an error: %s", e)
		}
	}

	// Second pull of the same images after removing them: everything comes
	// from wharf's cache.
	d.removeAll(t)
	upMark = hub.mark()
	for _, p := range pulls {
		d.docker(t, "pull", p.ref)
		d.expectImage(t, p.ref, p.name, p.f)
	}
	second := hub.since(upMark)
	expectCount(t, "second pull: blob requests", second, 0, apiRequest, anyBlob)
	expectCount(t, "second pull: manifest GETs", second, 0, apiRequest, get)
	expectNoBypass(t, hub, second)
}
