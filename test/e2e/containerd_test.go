//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestContainerdDefaultHost: one _default/hosts.toml entry pointing at wharf
// serves docker.io, ghcr.io and registry.k8s.io images through the same
// endpoint; containerd names the registry only in ?ns= (client-compat §2.3),
// so the paths wharf sees carry no registry at all.
func TestContainerdDefaultHost(t *testing.T) {
	c := needContainerd(t)
	hosts := defaultHostsDir(t)

	hub := seedIndex(t, suite.hub, "library/ctr-multi", "1", buildIndex(t, "ctr-multi", 2))
	ghcr := seedImage(t, suite.ghcr, "e2e/ctr-schema2", "1", buildImage(t, "ctr-schema2", dockerImage, amd64, 3))
	k8s := seedImage(t, suite.k8s, "ctr-pause", "3.10", buildImage(t, "ctr-pause", ociImage, amd64, 1))
	pulls := []struct {
		ref string
		up  *upstream
		f   fixture
	}{
		{"docker.io/library/ctr-multi:1", suite.hub, hub},
		{"ghcr.io/e2e/ctr-schema2:1", suite.ghcr, ghcr},
		{"registry.k8s.io/ctr-pause:3.10", suite.k8s, k8s},
	}
	marks := map[*upstream]upMark{}
	for _, p := range pulls {
		marks[p.up] = p.up.mark()
	}
	logMark := suite.wharf.mark(t)
	for _, p := range pulls {
		c.pull(t, hosts, p.ref)
	}
	for _, p := range pulls {
		c.expectImage(t, p.ref, p.f)
	}
	entries := suite.wharf.requestsSince(t, logMark)
	for _, p := range pulls {
		got := p.up.since(marks[p.up])
		expectNoBypass(t, p.up, got)
		expectFetchedOnce(t, p.up, got, p.f)
		expectCount(t, p.up.name+": ns forwarded upstream", got, 0, withNS)
		logged := filterLog(entries, forRepo(p.up.name, p.f.Repo))
		if len(logged) == 0 {
			t.Errorf("wharf logged no request routed to %s %s", p.up.name, p.f.Repo)
		}
		for _, e := range logged {
			if strings.Contains(e.Path, p.up.name) {
				t.Errorf("containerd put the registry in the path, not in ns: %s", e)
			}
		}
	}
}

// TestContainerdOverridePath: a host entry http://wharf/v2/ghcr.io with
// override_path = true (client-compat §2.2) sends /v2/ghcr.io/<repo>/...
// with ?ns=ghcr.io as well; wharf strips the prefix once.
func TestContainerdOverridePath(t *testing.T) {
	c := needContainerd(t)
	hosts := filepath.Join(t.TempDir(), "certs.d")
	writeHosts(t, hosts, "ghcr.io", fmt.Sprintf(`[host."http://%s/v2/ghcr.io"]
  capabilities = ["pull", "resolve"]
  override_path = true
`, suite.wharf.addr))
	f := seedImage(t, suite.ghcr, "e2e/ctr-override", "1", buildImage(t, "ctr-override", ociImage, amd64, 2))
	ref := "ghcr.io/e2e/ctr-override:1"

	upMark, logMark := suite.ghcr.mark(), suite.wharf.mark(t)
	c.pull(t, hosts, ref)
	c.expectImage(t, ref, f)
	got := suite.ghcr.since(upMark)
	expectNoBypass(t, suite.ghcr, got)
	expectFetchedOnce(t, suite.ghcr, got, f)
	logged := filterLog(suite.wharf.requestsSince(t, logMark), forRepo("ghcr.io", f.Repo))
	if len(logged) == 0 {
		t.Fatal("wharf logged no request for ghcr.io e2e/ctr-override")
	}
	for _, e := range logged {
		if !strings.HasPrefix(e.Path, "/v2/ghcr.io/e2e/ctr-override/") {
			t.Errorf("override_path request without the /v2/ghcr.io prefix: %s", e)
		}
	}
}

// TestContainerdPullOnlyHost: a mirror host with capabilities = ["pull"]
// is used only for fetches by digest; tags are resolved at server, which is
// the local ghcr.io upstream here (client-compat §2.2: the documented setup
// for a public mirror).
func TestContainerdPullOnlyHost(t *testing.T) {
	c := needContainerd(t)
	hosts := filepath.Join(t.TempDir(), "certs.d")
	writeHosts(t, hosts, "ghcr.io", fmt.Sprintf(`server = "http://%s"

[host."http://%s"]
  capabilities = ["pull"]
`, suite.ghcr.reg.Host(), suite.wharf.addr))
	f := seedIndex(t, suite.ghcr, "e2e/ctr-pullonly", "1", buildIndex(t, "ctr-pullonly", 2))
	ref := "ghcr.io/e2e/ctr-pullonly:1"

	upMark, logMark := suite.ghcr.mark(), suite.wharf.mark(t)
	c.pull(t, hosts, ref)
	c.expectImage(t, ref, f)
	got := suite.ghcr.since(upMark)
	// containerd itself asked the upstream for the tag, and for nothing
	// else: every manifest by digest and every blob came through wharf.
	expectAtLeast(t, "tag resolution by containerd at server", got, 1, onRegistry, notByWharf, byTag, inRepo(f.Repo))
	expectCount(t, "containerd requests at server other than tag resolution", got, 0, apiRequest, notByWharf, not(byTag))
	expectFetchedOnce(t, suite.ghcr, got, f)
	expectCount(t, "manifest requests by tag from wharf", got, 0, byWharf, byTag)

	logged := filterLog(suite.wharf.requestsSince(t, logMark), forRepo("ghcr.io", f.Repo))
	if len(logged) == 0 {
		t.Fatal("wharf logged no request for ghcr.io e2e/ctr-pullonly")
	}
	for _, e := range logged {
		if strings.Contains(e.Path, "/manifests/") && !strings.Contains(e.Ref, ":") {
			t.Errorf("a pull-only host was asked to resolve a tag: %s", e)
		}
	}
}
