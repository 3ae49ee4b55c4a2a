//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// TestTransparentTLS: wharf's transparent TLS listener
// (--transparent-listen, transparent.listen) answers for registry host
// names, so a DNS override of quay.io and registry.k8s.io to wharf lets a
// client that trusts wharf's CA pull those registries' images by their real
// names through the cache, with no mirror configuration at all.
//
// The override is real but private: ctr runs in a mount namespace of its
// own in which a hosts file of the test's is /etc/hosts (hostsOverride), so
// it dials <wharf's address>:443 with SNI quay.io, and the hosts.toml of
// each registry names only server = "https://<registry>" and wharf's CA.
// wharf picks a leaf certificate minted by its CA by SNI and routes by the
// Host header. Neither registry is reachable from here, so a pull that
// works came through wharf; the upstreams' logs show that wharf fetched
// every blob once and that a second pull, after the images and their
// content were removed, sent no manifest or blob request upstream.
//
// Without the CA in hosts.toml the same pull fails certificate
// verification: containerd does not trust wharf by default. A handshake
// for a name wharf does not serve, or without SNI, fails before wharf
// presents any certificate.
func TestTransparentTLS(t *testing.T) {
	c := needContainerd(t)
	// Under the suite's directory rather than t.TempDir: the logs are kept
	// with the suite's on failure.
	dir, err := os.MkdirTemp(suite.dir, "transparent-")
	if err != nil {
		t.Fatal(err)
	}
	// quay.io has a fake upstream of its own here, with a token service as
	// the real one has, so its request log holds this test's requests only.
	quay := &upstream{name: "quay.io", reg: registrytest.New(t, registrytest.Options{Auth: true})}
	ip := transparentIP(t)
	w := startTransparentWharf(t, filepath.Join(dir, "wharf"), net.JoinHostPort(ip, "443"),
		[]*upstream{suite.hub, suite.ghcr, suite.k8s, quay})
	ca := w.caPEM(t)
	caFile := filepath.Join(dir, "wharf-ca.crt")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}

	// The DNS override: both registries resolve to wharf's transparent
	// listener, for ctr only.
	override := newHostsOverride(t, filepath.Join(dir, "hosts"),
		fmt.Sprintf("127.0.0.1\tlocalhost\n%s\tquay.io registry.k8s.io\n", ip))
	trusted := filepath.Join(dir, "certs.d")
	untrusted := filepath.Join(dir, "certs.d-no-ca")
	for _, host := range []string{"quay.io", "registry.k8s.io"} {
		writeHosts(t, trusted, host, registryHostsTOML(host, caFile))
		writeHosts(t, untrusted, host, registryHostsTOML(host, ""))
	}

	quayF := seedIndex(t, quay, "e2e/transparent-multi", "v1", buildIndex(t, "transparent-quay", 2))
	k8sF := seedImage(t, suite.k8s, "e2e/transparent-pause", "3.10", buildImage(t, "transparent-k8s", dockerImage, amd64, 3))
	pulls := []struct {
		host string    // the registry the user names, resolved to wharf
		up   *upstream // the fake registry wharf maps that name onto
		// auth: the registry asks for a token; wharf's first request for it
		// goes out without one and is repeated with one.
		auth bool
		f    fixture
	}{
		{"quay.io", quay, true, quayF},
		{"registry.k8s.io", suite.k8s, false, k8sF},
	}
	ns := newCtrNS(t, c, "e2e-transparent", override)
	marks := map[*upstream]upMark{}
	markAll := func() logMark {
		for _, p := range pulls {
			marks[p.up] = p.up.mark()
		}
		return w.mark(t)
	}

	// Without wharf's CA, containerd verifies against the system roots only:
	// the handshake fails on ctr's side and nothing reaches wharf's API or
	// the upstreams.
	logMark := markAll()
	for _, p := range pulls {
		ref := p.f.ref(p.host)
		out, err := ns.pull(t.Context(), untrusted, ref)
		var ce *commandError
		if !errors.As(err, &ce) {
			t.Fatalf("ctr pull %s without wharf's CA in hosts.toml: %v, want a certificate verification failure; output:\n%s", ref, err, out)
		}
		// ctr's message is all that tells a verification failure from any
		// other failure to connect.
		if !strings.Contains(ce.stderr, "x509") || !strings.Contains(ce.stderr, "unknown authority") {
			t.Errorf("ctr pull %s without wharf's CA failed, but not because of an unknown authority:\n%v", ref, err)
		}
	}
	if imgs := ns.images(t); len(imgs) != 0 {
		t.Errorf("ctr images ls after failed pulls: %v", imgs)
	}
	for _, p := range pulls {
		expectCount(t, p.host+" untrusted pull: upstream requests", p.up.since(marks[p.up]), 0, apiRequest, inRepo(p.f.Repo))
	}
	if got := w.requestsSince(t, logMark); len(got) != 0 {
		t.Errorf("wharf logged requests although no handshake succeeded:\n%v", got)
	}

	// With it: the images come through wharf, each blob fetched upstream
	// once, the tag once.
	logMark = markAll()
	for _, p := range pulls {
		ns.mustPull(t, trusted, p.f.ref(p.host))
	}
	for _, p := range pulls {
		ns.expectImage(t, p.f.ref(p.host), p.f)
	}
	for _, p := range pulls {
		all := p.up.since(marks[p.up])
		expectNoBypass(t, p.up, all)
		expectFetchedOnce(t, p.up, all, p.f)
		tagGET := []func(registrytest.Request) bool{onRegistry, get, inRepo(p.f.Repo), byTag}
		if p.auth {
			tagGET = append(tagGET, withToken)
		}
		expectCount(t, p.host+" "+p.f.Repo+": manifest GETs by tag", all, 1, tagGET...)
	}
	// wharf routed every request by its Host header: the paths name no
	// registry and carry no ns, and the listener is the only way ctr had
	// to wharf.
	entries := w.requestsSince(t, logMark)
	for _, p := range pulls {
		logged := filterLog(entries, forRepo(p.host, p.f.Repo))
		if len(logged) == 0 {
			t.Errorf("wharf logged no request routed to %s %s", p.host, p.f.Repo)
		}
		for _, e := range logged {
			if !strings.HasPrefix(e.Path, "/v2/"+p.f.Repo+"/") || logQuery(t, e).Has("ns") {
				t.Errorf("%s: a request not routed by Host alone: %s", p.host, e)
			}
		}
	}
	for _, e := range entries {
		if e.Status >= 400 {
			t.Errorf("wharf answered ctr with an error: %s", e)
		}
	}

	// A second pull after removing the images and their content: served
	// from wharf's cache (its tag TTL is an hour: no revalidation either).
	ns.removeAll(t)
	logMark = markAll()
	for _, p := range pulls {
		ns.mustPull(t, trusted, p.f.ref(p.host))
		ns.expectImage(t, p.f.ref(p.host), p.f)
	}
	for _, p := range pulls {
		second := p.up.since(marks[p.up])
		expectCount(t, p.host+" second pull: manifest and blob requests", second, 0, apiRequest)
	}
	entries = w.requestsSince(t, logMark)
	for _, p := range pulls {
		logged := filterLog(entries, forRepo(p.host, p.f.Repo))
		if len(logged) == 0 {
			t.Errorf("second pull: wharf logged no request routed to %s %s", p.host, p.f.Repo)
		}
		for _, e := range logged {
			if e.Cache != "" && e.Cache != "hit" {
				t.Errorf("second pull: %s not served from the cache: %s", p.host, e)
			}
		}
		// ctr did fetch every blob again: from wharf.
		for _, d := range p.f.Blobs {
			if got := filterLog(logged, pathHas("/blobs/"+d.String())); len(got) == 0 {
				t.Errorf("second pull: ctr did not fetch %s %s blob %s from wharf", p.host, p.f.Repo, short(d))
			}
		}
	}

	t.Run("SNI", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			t.Fatal("wharf's CA is not PEM")
		}
		for _, tc := range []struct {
			name  string
			sni   string
			serve bool
		}{
			{"upstream", "quay.io", true},
			{"upstream with redirects", "registry.k8s.io", true},
			{"alias", "k8s.gcr.io", true},        // of registry.k8s.io, by default
			{"other host", "example.com", false}, // not a registry wharf serves
			{"registry name as a prefix", "quay.io.example.com", false},
			{"no SNI", "", false}, // as a client connecting by IP address sends
		} {
			t.Run(tc.name, func(t *testing.T) {
				conn := dialTransparent(t, w.tls)
				if tc.serve {
					// Verified against wharf's CA for the name; the registry
					// API answers behind it.
					expectRegistryTLS(t, conn, tc.sni, pool)
					return
				}
				// Verification is off so that only the server can end the
				// handshake, and every certificate it presents is seen.
				var presented int
				client := tls.Client(conn, &tls.Config{
					ServerName:         tc.sni,
					InsecureSkipVerify: true,
					VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
						presented += len(raw)
						return nil
					},
				})
				if err := client.HandshakeContext(t.Context()); err == nil {
					t.Fatalf("TLS handshake with SNI %q succeeded; wharf must refuse names it does not serve", tc.sni)
				}
				if presented != 0 {
					t.Errorf("wharf presented %d certificates before refusing the handshake", presented)
				}
			})
		}
	})
}

// registryHostsTOML is a hosts.toml that names the registry itself and
// nothing else, as a node that relies on a DNS override has (client-compat
// §2.2), trusting caFile for it when caFile is not "".
func registryHostsTOML(host, caFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "https://"+host, "https://"+host)
	if caFile != "" {
		fmt.Fprintf(&b, "  ca = %q\n", caFile)
	}
	return b.String()
}

// transparentIP returns a loopback address 127.77.X.Y whose port 443 was
// free a moment ago. Linux routes all of 127.0.0.0/8 to the loopback
// interface; the address is random so that two runs of the suite on one
// machine do not collide on :443.
func transparentIP(t *testing.T) string {
	t.Helper()
	var last error
	for range 32 {
		ip := fmt.Sprintf("127.77.%d.%d", 1+rand.IntN(254), 1+rand.IntN(254))
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "443"))
		if err != nil {
			last = err
			continue
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		return ip
	}
	t.Fatalf("no free port 443 on 127.77.0.0/16 after 32 tries: %v", last)
	return ""
}

// transparentWharf is a wharf process of its own with the transparent TLS
// listener on.
type transparentWharf struct {
	*wharf
	bin     string
	tls     string // the transparent listener, 127.77.X.Y:443
	dataDir string
}

// startTransparentWharf starts `wharf serve --transparent-listen tlsAddr`
// with ups mapped onto their fake registries. The process is stopped when
// the test ends.
func startTransparentWharf(t *testing.T, dir, tlsAddr string, ups []*upstream) *transparentWharf {
	t.Helper()
	// The tag TTL is long so that the second pull is answered from the cache
	// without a revalidation; the log is JSON for requestsSince.
	w, bin, dataDir := startOwnWharf(t, dir, ownWharf{
		name: "transparent",
		config: `# wharf with the transparent TLS listener, for TestTransparentTLS.
log_format: json
log_level: info
tag_ttl: 1h
`,
		args:    []string{"--transparent-listen", tlsAddr},
		ups:     ups,
		waitFor: tlsAddr,
	})
	return &transparentWharf{wharf: w, bin: bin, tls: tlsAddr, dataDir: dataDir}
}

// caPEM returns wharf's CA certificate as `wharf ca --data-dir` prints it,
// after checking that it is the one in the data directory.
func (w *transparentWharf) caPEM(t *testing.T) []byte {
	t.Helper()
	out := mustRun(t, baseEnv(), w.bin, "ca", "--data-dir", w.dataDir)
	onDisk, err := os.ReadFile(filepath.Join(w.dataDir, "ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal([]byte(out), onDisk) {
		t.Fatalf("wharf ca is not <data_dir>/ca/ca.crt:\n%s\nfile:\n%s", out, onDisk)
	}
	return onDisk
}

// dialTransparent opens a TCP connection to the transparent listener,
// closed when the test ends, with a deadline on everything done on it.
func dialTransparent(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// logQuery is the query string wharf logged for a request.
func logQuery(t *testing.T, e logEntry) url.Values {
	t.Helper()
	var line struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal([]byte(e.raw), &line); err != nil {
		t.Fatalf("wharf log line: %v: %s", err, e)
	}
	q, err := url.ParseQuery(line.Query)
	if err != nil {
		t.Fatalf("wharf logged query %q: %v", line.Query, err)
	}
	return q
}

// ctrNS drives ctr in a containerd namespace of the test's own, so that its
// images and content stay apart from the other scenarios' and can all be
// removed; pulls resolve names through a hostsOverride. The namespace, and
// everything in it, is removed when the test ends.
type ctrNS struct {
	c        *containerd
	ns       string
	override *hostsOverride
}

func newCtrNS(t *testing.T, c *containerd, ns string, override *hostsOverride) *ctrNS {
	t.Helper()
	n := &ctrNS{c: c, ns: ns, override: override}
	t.Cleanup(func() {
		// t.Context is done by now: the cleanup has a bound of its own.
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		if err := n.remove(ctx); err != nil {
			t.Errorf("removing containerd namespace %s: %v", ns, err)
		}
	})
	return n
}

func (n *ctrNS) argv(args ...string) []string {
	return append([]string{n.c.ctrBin, "--address", n.c.sock, "--namespace", n.ns}, args...)
}

// ctr runs ctr in the namespace, without the hosts override.
func (n *ctrNS) ctr(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, baseEnv(), n.argv(args...)...)
}

// pull pulls ref (and unpacks it) resolving registry hosts from hostsDir
// and names from the override.
func (n *ctrNS) pull(ctx context.Context, hostsDir, ref string) (string, error) {
	return n.override.run(ctx, baseEnv(), n.argv("images", "pull", "--hosts-dir", hostsDir, ref)...)
}

func (n *ctrNS) mustPull(t *testing.T, hostsDir, ref string) {
	t.Helper()
	if _, err := n.pull(t.Context(), hostsDir, ref); err != nil {
		t.Fatal(err)
	}
}

// images returns `ctr images ls`: reference → digest.
func (n *ctrNS) images(t *testing.T) map[string]digest.Digest {
	t.Helper()
	imgs := map[string]digest.Digest{}
	for _, line := range strings.Split(n.ctr(t, "images", "ls"), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 3 {
			imgs[f[0]] = digest.Digest(f[2])
		}
	}
	return imgs
}

// expectImage checks that ref resolved to f.Digest and that the content
// store holds f's manifest, config and layers.
func (n *ctrNS) expectImage(t *testing.T, ref string, f fixture) {
	t.Helper()
	if got := n.images(t)[ref]; got != f.Digest {
		t.Errorf("ctr images ls: %s is %q, want %s", ref, got, f.Digest)
	}
	have := strings.Fields(n.ctr(t, "content", "ls", "-q"))
	for _, d := range append([]digest.Digest{f.Digest, f.Image}, f.Blobs...) {
		if !slices.Contains(have, d.String()) {
			t.Errorf("ctr content ls: %s lacks %s", ref, d)
		}
	}
}

// removeAll deletes every image of the namespace and, synchronously, the
// content and snapshots only they referenced.
func (n *ctrNS) removeAll(t *testing.T) {
	t.Helper()
	if refs := strings.Fields(n.ctr(t, "images", "ls", "-q")); len(refs) > 0 {
		n.ctr(t, append([]string{"images", "rm", "--sync"}, refs...)...)
	}
	if left := strings.Fields(n.ctr(t, "content", "ls", "-q")); len(left) > 0 {
		t.Fatalf("ctr content ls after removing every image: %v", left)
	}
}

// remove deletes the namespace with its images, if it was created.
func (n *ctrNS) remove(ctx context.Context) error {
	out, err := command(ctx, baseEnv(), n.c.ctrBin, "--address", n.c.sock, "namespaces", "ls", "-q")
	if err != nil {
		return err
	}
	if !slices.Contains(strings.Fields(out), n.ns) {
		return nil
	}
	if out, err = command(ctx, baseEnv(), n.argv("images", "ls", "-q")...); err != nil {
		return err
	}
	if refs := strings.Fields(out); len(refs) > 0 {
		if _, err := command(ctx, baseEnv(), n.argv(append([]string{"images", "rm", "--sync"}, refs...)...)...); err != nil {
			return err
		}
	}
	_, err = command(ctx, baseEnv(), n.c.ctrBin, "--address", n.c.sock, "namespaces", "rm", n.ns)
	return err
}
