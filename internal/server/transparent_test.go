package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/mitm"
	"github.com/wharf-mirror/wharf/internal/registrytest"
	"github.com/wharf-mirror/wharf/internal/server"
)

// The transparent listener, as a DNS override of ghcr.io and
// registry.k8s.io to wharf would use it: the client dials wharf for those
// names, sends them as SNI and Host, and is served from the cache. The
// certificate comes from a configured file when one covers the name, else
// from wharf's CA; other names and handshakes without SNI fail.
func TestTransparentTLS(t *testing.T) {
	dir := t.TempDir()
	// A certificate for ghcr.io from an unrelated CA, as an operator's
	// own PKI would issue it.
	otherCA, err := mitm.LoadOrCreateCA(filepath.Join(dir, "other-ca"))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writeLeaf(t, otherCA, "ghcr.io", dir)

	o := defaultOptions()
	o.configure = func(c *config.Config) {
		c.Transparent.Listen = "127.0.0.1:0"
		c.Transparent.Certificates = []config.CertificatePair{{CertFile: certFile, KeyFile: keyFile}}
	}
	h := newHarness(t, o)
	img := registrytest.RandomImage(t, 501, 9000)
	d := h.ghcr.PushImage(t, "org/transparent", "v1", img)
	pause := h.k8s.PushImage(t, "pause", "3.10", registrytest.RandomImage(t, 502, 3000))

	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.inst.ServeListeners(ctx, server.Listeners{API: api, Transparent: tl}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	wharfCA, err := server.LoadCA(h.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(cas ...*mitm.CA) *x509.CertPool {
		p := x509.NewCertPool()
		for _, ca := range cas {
			p.AddCert(ca.Certificate())
		}
		return p
	}
	// client resolves every name to the transparent listener.
	client := func(roots *x509.CertPool) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, tl.Addr().String())
			},
			TLSClientConfig: &tls.Config{RootCAs: roots},
		}}
	}
	get := func(c *http.Client, url string) (*http.Response, []byte, error) {
		t.Helper()
		defer c.CloseIdleConnections()
		resp, err := c.Get(url)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}

	// ghcr.io: the configured file's certificate, trusted through the
	// operator's CA only.
	resp, body, err := get(client(pool(otherCA)), "https://ghcr.io/v2/org/transparent/manifests/v1")
	if err != nil {
		t.Fatalf("ghcr.io with its configured certificate: %v", err)
	}
	if resp.StatusCode != 200 || sha(body) != d {
		t.Fatalf("ghcr.io manifest: %d %s", resp.StatusCode, sha(body))
	}
	if _, _, err := get(client(pool(wharfCA)), "https://ghcr.io/v2/"); err == nil {
		t.Error("ghcr.io was served with a certificate from wharf's CA, want the configured file's")
	}
	ld, want := layerOf(t, img, 0)
	_, body, err = get(client(pool(otherCA)), "https://ghcr.io/v2/org/transparent/blobs/"+ld.String())
	if err != nil || string(body) != string(want) {
		t.Fatalf("ghcr.io layer: %v", err)
	}

	// registry.k8s.io and its alias: minted by wharf's CA, Host-routed.
	for _, host := range []string{"registry.k8s.io", "k8s.gcr.io"} {
		resp, body, err := get(client(pool(wharfCA)), "https://"+host+"/v2/pause/manifests/3.10")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if resp.StatusCode != 200 || sha(body) != pause || resp.Header.Get("X-Wharf-Cache") == "" {
			t.Errorf("%s manifest: %d %s", host, resp.StatusCode, sha(body))
		}
		if resp.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("%s: HSTS on the transparent listener would pin a registry name to wharf", host)
		}
	}

	// A name wharf does not serve, and a handshake without SNI, fail
	// before any HTTP.
	for _, name := range []string{"example.com", "ghcr.io.evil.test", ""} {
		conn, err := tls.Dial("tcp", tl.Addr().String(), &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Errorf("handshake with SNI %q succeeded, want it refused", name)
			continue
		}
		// The server aborts the handshake with an alert (crypto/tls
		// exposes it to the client only as "remote error").
		if !strings.Contains(err.Error(), "remote error") {
			t.Errorf("handshake with SNI %q: %v, want the server's alert", name, err)
		}
	}
}
