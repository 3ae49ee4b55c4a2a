package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/registrytest"
	"github.com/wharf-mirror/wharf/internal/server"
)

// The HTTPS_PROXY mode: a client that trusts wharf's CA and uses wharf as
// its proxy pulls from https://ghcr.io and https://registry.k8s.io through
// the cache; any other CONNECT target is refused.
func TestProxyMode(t *testing.T) {
	o := defaultOptions()
	o.configure = func(c *config.Config) {
		c.Proxy.Listen = "127.0.0.1:0"
		c.Proxy.Tunnel = nil
	}
	h := newHarness(t, o)
	img := registrytest.RandomImage(t, 401, 12000)
	d := h.ghcr.PushImage(t, "org/proxied", "v1", img)
	h.k8s.PushImage(t, "pause", "3.10", registrytest.RandomImage(t, 402, 3000))

	proxy := httptest.NewServer(h.inst.ProxyHandler())
	defer proxy.Close()

	// The CA is served on the registry listener and is the one on disk.
	r := h.do("GET", "/ca.crt")
	expectStatus(t, r, http.StatusOK)
	ca, err := server.LoadCA(h.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.body) != string(ca.CertPEM()) {
		t.Fatal("GET /ca.crt is not the CA in the data directory")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(r.body) {
		t.Fatal("GET /ca.crt is not PEM")
	}
	proxyURL, _ := url.Parse(proxy.URL)
	client := &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	defer client.CloseIdleConnections()
	get := func(u string) (*http.Response, []byte, error) {
		resp, err := client.Get(u)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}

	resp, body, err := get("https://ghcr.io/v2/org/proxied/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d.String() || sha(body) != d {
		t.Fatalf("manifest through the proxy: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	ld, want := layerOf(t, img, 0)
	resp, body, err = get("https://ghcr.io/v2/org/proxied/blobs/" + ld.String())
	if err != nil || resp.StatusCode != 200 || string(body) != string(want) {
		t.Fatalf("layer through the proxy: %v %v", err, resp)
	}
	// registry.k8s.io and its alias k8s.gcr.io are intercepted too.
	for _, host := range []string{"registry.k8s.io", "k8s.gcr.io"} {
		resp, _, err := get("https://" + host + "/v2/pause/manifests/3.10")
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Wharf-Cache") == "" {
			t.Errorf("%s through the proxy: %v %v", host, err, resp)
		}
	}
	// The second pull is served from the cache.
	resp, _, err = get("https://ghcr.io/v2/org/proxied/blobs/" + ld.String())
	if err != nil || resp.Header.Get("X-Wharf-Cache") != "hit" {
		t.Errorf("second layer GET: %v %v", err, resp)
	}

	// Not a configured registry, an IP literal, localhost: refused.
	for _, u := range []string{"https://example.com/", "https://127.0.0.1/", "https://localhost/", "https://quay.io.evil.test/"} {
		_, _, err := get(u)
		if err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("GET %s through the proxy: %v, want a refused CONNECT (403)", u, err)
		}
	}
}
