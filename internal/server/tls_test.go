package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/mitm"
	"github.com/wharf-mirror/wharf/internal/server"
	"github.com/wharf-mirror/wharf/internal/tlsserve/pebbletest"
)

// serveTLS starts an instance of cfg on loopback with a redirect listener
// and returns the HTTPS and redirect addresses.
func serveTLS(t *testing.T, cfg *config.Config) (httpsAddr, redirectAddr string) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	inst, err := server.New(context.Background(), cfg, server.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redirect, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inst.ServeListeners(ctx, server.Listeners{API: api, Redirect: redirect}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		inst.Close()
	})
	return api.Addr().String(), redirect.Addr().String()
}

// writeLeaf writes a certificate for host from ca, and its key, as PEM
// files in dir.
func writeLeaf(t *testing.T, ca *mitm.CA, host, dir string) (certFile, keyFile string) {
	t.Helper()
	leaf, err := ca.Leaf(host)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, host+".pem"), filepath.Join(dir, host+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func getTLS(t *testing.T, url, serverName string, roots *x509.CertPool) *http.Response {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// The registry listener over HTTPS from certificate files, with HSTS, and
// the plain listener redirecting to it.
func TestTLSFromFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := mitm.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writeLeaf(t, ca, "mirror.test", dir)

	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.RedirectListen = certFile, keyFile, "127.0.0.1:0"
	httpsAddr, redirectAddr := serveTLS(t, cfg)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	resp := getTLS(t, "https://"+httpsAddr+"/v2/", "mirror.test", roots)
	if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") == "" || resp.ProtoMajor != 2 {
		t.Errorf("GET /v2/ over TLS: %d %s HSTS %q", resp.StatusCode, resp.Proto, resp.Header.Get("Strict-Transport-Security"))
	}

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get("http://" + redirectAddr + "/v2/library/nginx/manifests/1?x=y")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(httpsAddr)
	if want := "https://127.0.0.1:" + port + "/v2/library/nginx/manifests/1?x=y"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("redirect: %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

// ACME against a real ACME server (pebble): the first handshake for an
// allowed name obtains a certificate.
func TestTLSFromACME(t *testing.T) {
	pebble := pebbletest.Start(t)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.TLS.ACME.Hosts = []string{"wharf.test"}
	cfg.TLS.ACME.DirectoryURL = pebble.DirectoryURL
	cfg.TLS.ACME.CAFile = pebble.APIRootsFile
	httpsAddr, _ := serveTLS(t, cfg)

	roots, err := pebble.IssuerRoots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resp := getTLS(t, "https://"+httpsAddr+"/v2/", "wharf.test", roots)
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.PeerCertificates[0].DNSNames[0] != "wharf.test" {
		t.Fatalf("GET /v2/ with an ACME certificate: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "acme")); err != nil {
		t.Errorf("ACME cache directory: %v", err)
	}
}
