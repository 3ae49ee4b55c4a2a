//go:build e2e

package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// conformanceBinary is the suite built by scripts/e2e-conformance-build.sh,
// or $CONFORMANCE_BIN.
func conformanceBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CONFORMANCE_BIN")
	if p == "" {
		p = filepath.Join("..", "..", ".bin", "oci-conformance")
	}
	p, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if !isExecutable(p) {
		msg := p + " is missing: run scripts/e2e-conformance-build.sh (make e2e does)"
		if ci() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestConformance runs the OCI distribution-spec conformance suite, pinned,
// read-only (pull), through wharf over each routing shape a client can use
// without ?ns=: the default upstream (library/<name>), the path prefix
// (ghcr.io/<org>/<name>), and a virtual host (Host: localhost:PORT, mapped
// to ghcr.io in wharf's configuration). The digests under test are read
// from the upstream itself (DISCOVER_REF_BASE), so every repository is
// still cold in wharf's cache when the suite starts.
func TestConformance(t *testing.T) {
	bin := conformanceBinary(t)
	tools := need(t, "crane", "jq")
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "e2e-conformance-ro.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// The script calls crane and jq by name.
	path := filepath.Dir(tools[0]) + string(os.PathListSeparator) + filepath.Dir(tools[1]) +
		string(os.PathListSeparator) + os.Getenv("PATH")

	cases := []struct {
		name      string
		up        *upstream
		repo      string // on the upstream
		registry  string // OCI_REGISTRY
		repo1     string // OCI_REPO1: the repository as the route names it
		referrers bool
	}{
		{"default", suite.hub, "library/conf-default", suite.wharf.addr, "library/conf-default", false},
		{"path-prefix", suite.ghcr, "e2e/conf-prefix", suite.wharf.addr, "ghcr.io/e2e/conf-prefix", true},
		{"virtual-host", suite.ghcr, "e2e/conf-vhost", suite.wharf.vhost, "e2e/conf-vhost", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// "latest" is a multi-arch index, "amd64" its linux/amd64 image.
			idx := buildIndex(t, "conf-"+tc.name, 2)
			f := seedIndex(t, tc.up, tc.repo, "latest", idx)
			h, err := v1.NewHash(f.Image.String())
			if err != nil {
				t.Fatal(err)
			}
			img, err := idx.Image(h)
			if err != nil {
				t.Fatal(err)
			}
			tc.up.reg.PushImage(t, tc.repo, "amd64", img)
			env := baseEnv(
				"PATH="+path,
				"CONFORMANCE_BIN="+bin,
				"OCI_REGISTRY="+tc.registry,
				"OCI_REPO1="+tc.repo1,
				"RO_TAGS=latest amd64",
				"DISCOVER_REF_BASE="+tc.up.reg.Host()+"/"+tc.repo,
				"DOCKER_CONFIG="+t.TempDir(),
				"OCI_RESULTS_DIR="+t.TempDir(),
			)
			if tc.referrers {
				// An artifact whose subject is the index: the referrers API
				// must list it (through wharf, from upstream).
				seedReferrer(t, tc.up, tc.repo, f)
				env = append(env, "OCI_API_REFERRER=true", "OCI_RO_DATA_REFERRERS="+f.Digest.String())
			}
			upMark, logMark := tc.up.mark(), suite.wharf.mark(t)
			out, err := command(t.Context(), env, script)
			t.Logf("conformance output:\n%s", out)
			var ce *commandError
			if errors.As(err, &ce) {
				t.Errorf("conformance run failed: %v\nstderr:\n%s", ce.err, ce.stderr)
			} else if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "\nverdict: Pass\n") {
				t.Errorf("conformance verdict is not Pass")
			}

			// The cache was cold: wharf fetched every blob once, no more.
			got := tc.up.since(upMark).where(byWharf)
			for _, d := range f.Blobs {
				expectCount(t, "blob GET "+short(d), got, 1, onRegistry, get, blob(d))
			}
			logged := filterLog(suite.wharf.requestsSince(t, logMark), func(e logEntry) bool { return e.Upstream != "" })
			if len(logged) == 0 {
				t.Fatal("wharf logged no routed request")
			}
			for _, e := range logged {
				if e.Upstream != tc.up.name || e.Repo != tc.repo {
					t.Errorf("request routed to %s %s, want %s %s: %s", e.Upstream, e.Repo, tc.up.name, tc.repo, e)
				}
			}
		})
	}
}
