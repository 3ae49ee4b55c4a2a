//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// TestHTTPSProxy: dockerd with HTTPS_PROXY pointing at wharf's CONNECT
// listener, and no registry-mirrors, pulls quay.io, ghcr.io and
// registry.k8s.io images by their real names. wharf terminates TLS for those
// hosts with leaf certificates from its own CA, which dockerd trusts through
// /etc/docker/certs.d/<host>/, and serves the requests from its cache by Host
// header. None of these registries is reachable from here, so a pull that
// works came through wharf; the upstreams' logs show that wharf fetched every
// blob once, that nothing reached them directly, and that a second pull
// after `docker rmi` sends no blob or manifest GET upstream. CONNECT targets
// that are not registries wharf serves are refused with 403, so the proxy is
// never an open one.
//
// quay.io is mapped onto the ghcr.io upstream's registry (the suite has no
// quay.io upstream of its own): its images are seeded there, and wharf's log
// shows that it routed their requests to quay.io by the Host header.
func TestHTTPSProxy(t *testing.T) {
	need(t, "dockerd", "docker")
	if os.Geteuid() != 0 {
		needDaemon(t, fmt.Errorf("dockerd and /etc/docker/certs.d: %w", errNotRoot))
	}
	// Under the suite's directory rather than t.TempDir: dockerd's socket
	// paths stay short, and the logs are kept with the suite's on failure.
	dir, err := os.MkdirTemp(suite.dir, "proxy-")
	if err != nil {
		t.Fatal(err)
	}
	w := startProxyWharf(t, filepath.Join(dir, "wharf"))
	ca := w.caPEM(t)

	quay := seedImage(t, suite.ghcr, "e2eproxy/quay-img", "v1", buildImage(t, "proxy-quay", ociImage, amd64, 2))
	ghcr := seedIndex(t, suite.ghcr, "e2eproxy/ghcr-multi", "1.0", buildIndex(t, "proxy-ghcr", 2))
	k8s := seedImage(t, suite.k8s, "e2eproxy/k8s-img", "v3", buildImage(t, "proxy-k8s", dockerImage, amd64, 3))
	hub := seedImage(t, suite.hub, "e2eproxy/hub-img", "v2", buildImage(t, "proxy-hub", dockerImage, amd64, 2))
	pulls := []struct {
		host string    // the registry the user names, and the CONNECT target
		up   *upstream // the suite's registry that holds its content
		// auth: the registry asks for a token. This wharf has not talked to
		// it before, so its first request for the upstream goes out without
		// one, is answered 401 and repeated with a token.
		auth bool
		f    fixture
		name string // the name dockerd records in RepoDigests
	}{
		{"quay.io", suite.ghcr, true, quay, "quay.io/" + quay.Repo},
		{"ghcr.io", suite.ghcr, true, ghcr, "ghcr.io/" + ghcr.Repo},
		{"registry.k8s.io", suite.k8s, false, k8s, "registry.k8s.io/" + k8s.Repo},
		// Docker Hub: dockerd dials registry-1.docker.io, an alias of
		// docker.io, and ignores certs.d for it; it trusts wharf's CA
		// through SSL_CERT_FILE below, as it would through the system
		// trust store.
		{"docker.io", suite.hub, true, hub, hub.Repo},
	}
	for _, p := range pulls[:3] {
		trustForDockerd(t, p.host, ca)
	}
	caFile := filepath.Join(dir, "wharf-ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	proxyURL := "http://" + w.proxy
	d, err := startDockerdWith(t.Context(), t, suite.tools, filepath.Join(dir, "dockerd"), dockerdOptions{
		// No NO_PROXY: every registry request goes to wharf's proxy.
		env: []string{"HTTPS_PROXY=" + proxyURL, "HTTP_PROXY=" + proxyURL, "SSL_CERT_FILE=" + caFile},
	})
	if err != nil {
		t.Fatalf("dockerd with HTTPS_PROXY: %v", err)
	}

	ups := []*upstream{suite.ghcr, suite.k8s, suite.hub}
	marks := make(map[*upstream]upMark, len(ups))
	for _, u := range ups {
		marks[u] = u.mark()
	}
	logMark := w.mark(t)
	for _, p := range pulls {
		d.docker(t, "pull", p.f.ref(p.host))
	}
	for _, p := range pulls {
		d.expectImage(t, p.f.ref(p.host), p.name, p.f)
	}
	for _, u := range ups {
		expectNoBypass(t, u, u.since(marks[u]))
	}
	for _, p := range pulls {
		all := p.up.since(marks[p.up])
		expectFetchedOnce(t, p.up, all, p.f)
		// One GET of the tag, never of other platforms' manifests.
		tagGET := []func(registrytest.Request) bool{onRegistry, get, inRepo(p.f.Repo), byTag}
		if p.auth {
			expectCount(t, p.host+" "+p.f.Repo+": manifest GETs by tag without a token", all, 1, append(tagGET, not(withToken))...)
			tagGET = append(tagGET, withToken)
		}
		expectCount(t, p.host+" "+p.f.Repo+": manifest GETs by tag", all, 1, tagGET...)
	}
	// Every request reached wharf through the proxy (dockerd has no other
	// way to it) and was routed by its Host header: quay.io's to the
	// quay.io upstream although the same registry backs ghcr.io.
	entries := w.requestsSince(t, logMark)
	for _, p := range pulls {
		if got := filterLog(entries, forRepo(p.host, p.f.Repo)); len(got) == 0 {
			t.Errorf("wharf logged no request for %s %s", p.host, p.f.Repo)
		}
	}
	for _, e := range entries {
		if e.Status >= 400 {
			t.Errorf("wharf answered dockerd with an error: %s", e)
		}
	}

	// Second pull after removing the images: everything comes from wharf's
	// cache (its tag TTL is an hour, so there is no revalidation either).
	d.removeAll(t)
	for _, u := range ups {
		marks[u] = u.mark()
	}
	for _, p := range pulls {
		d.docker(t, "pull", p.f.ref(p.host))
		d.expectImage(t, p.f.ref(p.host), p.name, p.f)
	}
	for _, u := range ups {
		second := u.since(marks[u])
		expectCount(t, u.name+" second pull: blob requests", second, 0, apiRequest, anyBlob)
		expectCount(t, u.name+" second pull: manifest GETs", second, 0, apiRequest, get)
		expectNoBypass(t, u, second)
	}

	t.Run("CONNECT", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			t.Fatal("wharf's CA is not PEM")
		}
		for _, tc := range []struct {
			target string
			want   int
		}{
			{"example.com:443", http.StatusForbidden},         // not a registry wharf serves
			{"127.0.0.1:443", http.StatusForbidden},           // IP literals are never intercepted
			{"localhost:443", http.StatusForbidden},           // nor is localhost
			{"quay.io:8443", http.StatusForbidden},            // a registry, but not its HTTPS port
			{"quay.io.example.com:443", http.StatusForbidden}, // a registry's name as a prefix
			{"quay.io:443", http.StatusOK},                    // intercepted
			{"k8s.gcr.io:443", http.StatusOK},                 // an alias of registry.k8s.io
		} {
			t.Run(tc.target, func(t *testing.T) {
				status, conn := proxyConnect(t, w.proxy, tc.target)
				if status != tc.want {
					t.Fatalf("CONNECT %s: %d, want %d", tc.target, status, tc.want)
				}
				if status == http.StatusOK {
					host, _, _ := net.SplitHostPort(tc.target)
					expectRegistryTLS(t, conn, host, pool)
				}
			})
		}
	})
}

// withToken: carries a bearer token (the answer to a registry's challenge).
func withToken(r registrytest.Request) bool {
	return strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// proxyWharf is a wharf process of its own with the HTTPS_PROXY mode on.
type proxyWharf struct {
	*wharf
	proxy   string // the CONNECT listener, 127.0.0.1:PORT
	dataDir string
}

// startProxyWharf starts `wharf serve` with proxy.listen set, the suite's
// upstreams mapped as in startWharf, and quay.io mapped onto the ghcr.io
// upstream's registry. The process is stopped when the test ends.
func startProxyWharf(t *testing.T, dir string) *proxyWharf {
	t.Helper()
	proxy, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// The tag TTL is long so that the second pull is answered from the cache
	// without a revalidation; the log is JSON for requestsSince.
	w, _, dataDir := startOwnWharf(t, dir, ownWharf{
		name: "proxy",
		config: fmt.Sprintf(`# wharf with the HTTPS_PROXY mode, for TestHTTPSProxy.
log_format: json
log_level: info
tag_ttl: 1h
proxy:
  listen: %q
`, proxy),
		ups:     []*upstream{suite.hub, suite.ghcr, suite.k8s},
		alsoUp:  []string{"quay.io=" + suite.ghcr.reg.URL()},
		waitFor: proxy,
	})
	return &proxyWharf{wharf: w, proxy: proxy, dataDir: dataDir}
}

// caPEM returns wharf's CA certificate as served at GET /ca.crt on the
// registry listener, after checking that it is the one in the data
// directory.
func (w *proxyWharf) caPEM(t *testing.T) []byte {
	t.Helper()
	status, _, body := w.get(t, "", "/ca.crt")
	if status != http.StatusOK {
		t.Fatalf("GET /ca.crt: %d %q", status, clip(string(body), 200))
	}
	onDisk, err := os.ReadFile(filepath.Join(w.dataDir, "ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, onDisk) {
		t.Fatalf("GET /ca.crt is not <data_dir>/ca/ca.crt:\n%s\nfile:\n%s", body, onDisk)
	}
	return body
}

// dockerCertsDir is where dockerd looks for a registry's CA certificates:
// every *.crt in <dockerCertsDir>/<host>/ is trusted for that host. It is
// fixed for a dockerd running as root; no flag moves it.
const dockerCertsDir = "/etc/docker/certs.d"

// trustForDockerd makes dockerd trust caPEM for host. The file has a name of
// its own (the test's process id), so no certificate that was there is
// replaced; it and every directory created for it are removed when the test
// ends, and nothing that existed before is touched.
func trustForDockerd(t *testing.T, host string, caPEM []byte) {
	t.Helper()
	hostDir := filepath.Join(dockerCertsDir, host)
	for _, d := range []string{filepath.Dir(dockerCertsDir), dockerCertsDir, hostDir} {
		switch err := os.Mkdir(d, 0o755); {
		case err == nil:
			// Cleanups run last-registered first: the file, then the
			// deepest directory. Remove fails on a directory that someone
			// else put something into meanwhile, which is then left alone.
			t.Cleanup(func() {
				if err := os.Remove(d); err != nil {
					t.Logf("leaving %s: %v", d, err)
				}
			})
		case errors.Is(err, os.ErrExist):
		default:
			t.Fatal(err)
		}
	}
	name := filepath.Join(hostDir, fmt.Sprintf("wharf-e2e-%d.crt", os.Getpid()))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(name); err != nil {
			t.Errorf("removing %s: %v", name, err)
		}
	})
	_, err = f.Write(caPEM)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// proxyConnect sends `CONNECT target HTTP/1.1` by hand on a new connection
// to the proxy and returns the answer's status and the connection, which is
// closed when the test ends. After a 200 the connection is the tunnel.
func proxyConnect(t *testing.T, proxy, target string) (int, net.Conn) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(t.Context(), "tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: reading the answer: %v", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return resp.StatusCode, conn
	}
	// The server says nothing more until the client's TLS hello, so the
	// reader holds nothing that the tunnel's reader would miss.
	if n := br.Buffered(); n != 0 {
		t.Fatalf("CONNECT %s: %d bytes after the 200 before the client spoke", target, n)
	}
	return resp.StatusCode, conn
}

// expectRegistryTLS runs a TLS handshake for host on an established tunnel,
// verifying the leaf against pool (wharf's CA), and checks that the registry
// API answers GET /v2/ with 200 behind it.
func expectRegistryTLS(t *testing.T, conn net.Conn, host string, pool *x509.CertPool) {
	t.Helper()
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err := tc.HandshakeContext(t.Context()); err != nil {
		t.Fatalf("TLS for %s through the proxy: %v", host, err)
	}
	if _, err := fmt.Fprintf(tc, "GET /v2/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("GET https://%s/v2/ through the proxy: %v", host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET https://%s/v2/ through the proxy: %s, want 200", host, resp.Status)
	}
}
