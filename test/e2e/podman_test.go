//go:build e2e

package e2e

import (
	"fmt"
	"testing"
)

// mirrorConf is a registries.conf that mirrors docker.io and ghcr.io
// through wharf's path-prefix route (client-compat §3.1). The primary
// locations are the real registries, unreachable from here: a pull that
// works came through wharf.
func mirrorConf() string {
	return fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "%[1]s/docker.io"
insecure = true

[[registry]]
prefix = "ghcr.io"
location = "ghcr.io"

[[registry.mirror]]
location = "%[1]s/ghcr.io"
insecure = true
`, suite.wharf.addr)
}

// TestPodmanSkopeoMirror: podman pulls and skopeo copies through wharf's
// path-prefix route, /v2/docker.io/library/... and /v2/ghcr.io/...
func TestPodmanSkopeoMirror(t *testing.T) {
	c := newContainersTool(t, mirrorConf())
	hub := seedIndex(t, suite.hub, "library/pm-multi", "1", buildIndex(t, "pm-multi", 2))
	s2 := seedImage(t, suite.ghcr, "e2e/pm-schema2", "1", buildImage(t, "pm-schema2", dockerImage, amd64, 2))
	many := seedImage(t, suite.ghcr, "e2e/pm-many", "1", buildImage(t, "pm-many", ociImage, amd64, 22))

	hubMark, ghcrMark, logMark := suite.hub.mark(), suite.ghcr.mark(), suite.wharf.mark(t)
	c.pull(t, "docker.io/library/pm-multi:1")
	c.expectImage(t, "docker.io/library/pm-multi:1", "docker.io/library/pm-multi", hub)
	c.pull(t, "ghcr.io/e2e/pm-schema2:1")
	c.expectImage(t, "ghcr.io/e2e/pm-schema2:1", "ghcr.io/e2e/pm-schema2", s2)
	c.expectRaw(t, "ghcr.io/e2e/pm-many:1", many)
	expectLayout(t, c.copy(t, "ghcr.io/e2e/pm-many:1", "pm-many"), many)

	hubReqs, ghcrReqs := suite.hub.since(hubMark), suite.ghcr.since(ghcrMark)
	expectNoBypass(t, suite.hub, hubReqs)
	expectNoBypass(t, suite.ghcr, ghcrReqs)
	expectFetchedOnce(t, suite.hub, hubReqs, hub)
	expectFetchedOnce(t, suite.ghcr, ghcrReqs, s2)
	expectFetchedOnce(t, suite.ghcr, ghcrReqs, many)

	entries := suite.wharf.requestsSince(t, logMark)
	for _, w := range []struct{ up, repo, prefix string }{
		{"docker.io", hub.Repo, "/v2/docker.io/library/pm-multi/"},
		{"ghcr.io", s2.Repo, "/v2/ghcr.io/e2e/pm-schema2/"},
		{"ghcr.io", many.Repo, "/v2/ghcr.io/e2e/pm-many/"},
	} {
		logged := filterLog(entries, forRepo(w.up, w.repo))
		if len(logged) == 0 {
			t.Errorf("wharf logged no request for %s %s", w.up, w.repo)
		}
		for _, e := range logged {
			if !pathHas(w.prefix)(e) {
				t.Errorf("request for %s %s not on the path-prefix route %s: %s", w.up, w.repo, w.prefix, e)
			}
		}
	}
}

// TestPodmanSkopeoDigestOnly: with pull-from-mirror = "digest-only" a tag
// pull goes to the primary location (the local ghcr.io upstream) and never
// to wharf; a pull by digest goes to wharf (client-compat §3.2).
func TestPodmanSkopeoDigestOnly(t *testing.T) {
	conf := fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = "ghcr.io"
location = %q
insecure = true

[[registry.mirror]]
location = "%s/ghcr.io"
insecure = true
pull-from-mirror = "digest-only"
`, suite.ghcr.reg.Host(), suite.wharf.addr)
	c := newContainersTool(t, conf)
	f := seedImage(t, suite.ghcr, "e2e/pm-digest", "1", buildImage(t, "pm-digest", ociImage, amd64, 2))
	byTagRef := "ghcr.io/e2e/pm-digest:1"
	byDigestRef := f.refDigest("ghcr.io")

	// By tag: the upstream directly, wharf not at all.
	upMark, logMark := suite.ghcr.mark(), suite.wharf.mark(t)
	c.pull(t, byTagRef)
	c.expectImage(t, byTagRef, "ghcr.io/e2e/pm-digest", f)
	c.expectRaw(t, byTagRef, f)
	direct := suite.ghcr.since(upMark)
	expectAtLeast(t, "tag pull from the primary location", direct, 1, onRegistry, notByWharf, byTag, inRepo(f.Repo))
	expectCount(t, "requests by wharf during a tag pull", direct, 0, byWharf)
	if got := filterLog(suite.wharf.requestsSince(t, logMark), pathHas(f.Repo)); len(got) > 0 {
		t.Errorf("digest-only mirror was asked during a tag pull:\n%v", got)
	}

	// By digest: wharf, and through it the upstream.
	c.removeAll(t)
	upMark, logMark = suite.ghcr.mark(), suite.wharf.mark(t)
	c.pull(t, byDigestRef)
	c.expectImage(t, byDigestRef, "ghcr.io/e2e/pm-digest", f)
	c.expectRaw(t, byDigestRef, f)
	expectLayout(t, c.copy(t, byDigestRef, "pm-digest"), f)
	viaWharf := suite.ghcr.since(upMark)
	expectNoBypass(t, suite.ghcr, viaWharf)
	expectFetchedOnce(t, suite.ghcr, viaWharf, f)
	expectCount(t, "manifest GET by digest", viaWharf, 1, onRegistry, get, manifestRef(f.Digest.String()))
	logged := filterLog(suite.wharf.requestsSince(t, logMark), forRepo("ghcr.io", f.Repo))
	if len(filterLog(logged, pathHas("/v2/ghcr.io/e2e/pm-digest/manifests/"+f.Digest.String()))) == 0 {
		t.Errorf("wharf did not serve the manifest by digest; it logged:\n%v", logged)
	}
}
