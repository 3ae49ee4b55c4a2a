package tlsserve

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/wharf-mirror/wharf/internal/tlsserve/pebbletest"
)

// TestACMEWithPebble obtains a certificate from a real pebble CA during a
// real handshake, refuses a name not configured, and serves the cached
// certificate from a fresh ACME after pebble is gone.
func TestACMEWithPebble(t *testing.T) {
	ca := pebbletest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	issuer, err := ca.IssuerRoots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(t.TempDir(), "data", "acme")
	cfg := ACMEConfig{
		Hosts:        []string{"wharf.test", "mirror.wharf.test"},
		Email:        "ops@wharf.test",
		CacheDir:     cacheDir,
		DirectoryURL: ca.DirectoryURL,
		RootCAs:      ca.APIRoots,
	}
	a, err := NewACME(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, mode %v; want 0700", err, fi.Mode())
	}
	addr := serveTLS(t, a.TLSConfig())

	leaf, proto, err := handshake(t, addr, "wharf.test", issuer, "h2", "http/1.1")
	if err != nil {
		t.Fatalf("handshake for wharf.test: %v\npebble output:\n%s", err, ca.Output())
	}
	if !slices.Equal(leaf.DNSNames, []string{"wharf.test"}) || proto != "h2" {
		t.Fatalf("got certificate for %q over %q, want wharf.test over h2", leaf.DNSNames, proto)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "wharf.test")); err != nil {
		t.Fatalf("certificate not cached: %v", err)
	}

	// A real HTTPS request through the client a registry client would use,
	// with HSTS on the answer.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: issuer},
		DialContext: func(ctx context.Context, network, _ string) (c net.Conn, err error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://wharf.test/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 ||
		resp.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Fatalf("GET: %s over HTTP/%d, HSTS %q", resp.Status, resp.ProtoMajor, resp.Header.Get("Strict-Transport-Security"))
	}

	if _, _, err := handshake(t, addr, "other.test", issuer); err == nil {
		t.Fatal("handshake for a name not in Hosts succeeded")
	}
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.test"}); !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("GetCertificate(other.test) = %v, want ErrHostNotAllowed", err)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "other.test")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a certificate was cached for other.test: %v", err)
	}

	// A restart: pebble is gone, and a fresh ACME over the same cache
	// directory serves the same certificate.
	ca.Stop()
	b, err := NewACME(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr = serveTLS(t, b.TLSConfig())
	again, _, err := handshake(t, addr, "wharf.test", issuer)
	if err != nil {
		t.Fatalf("handshake from the cache with pebble stopped: %v", err)
	}
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("fresh ACME served serial %x, want the cached %x", again.SerialNumber, leaf.SerialNumber)
	}
}

func TestNewACMEInvalid(t *testing.T) {
	dir := t.TempDir()
	valid := ACMEConfig{Hosts: []string{"wharf.example"}, CacheDir: dir}
	tests := []struct {
		name   string
		change func(*ACMEConfig)
		ok     bool
	}{
		{"valid", func(*ACMEConfig) {}, true},
		{"valid with everything", func(c *ACMEConfig) {
			c.Hosts = []string{"wharf.example", "mirror.wharf.example."}
			c.Email = "ops@wharf.example"
			c.DirectoryURL = "https://acme-staging-v02.api.letsencrypt.org/directory"
			c.HTTPChallenge = true
		}, true},
		{"no hosts", func(c *ACMEConfig) { c.Hosts = nil }, false},
		{"empty host", func(c *ACMEConfig) { c.Hosts = []string{""} }, false},
		{"wildcard", func(c *ACMEConfig) { c.Hosts = []string{"*.wharf.example"} }, false},
		{"IPv4", func(c *ACMEConfig) { c.Hosts = []string{"192.0.2.1"} }, false},
		{"IPv6", func(c *ACMEConfig) { c.Hosts = []string{"2001:db8::1"} }, false},
		{"with port", func(c *ACMEConfig) { c.Hosts = []string{"wharf.example:443"} }, false},
		{"URL", func(c *ACMEConfig) { c.Hosts = []string{"https://wharf.example/"} }, false},
		{"single label", func(c *ACMEConfig) { c.Hosts = []string{"wharf"} }, false},
		{"no cache dir", func(c *ACMEConfig) { c.CacheDir = "" }, false},
		{"email with name", func(c *ACMEConfig) { c.Email = "Ops <ops@wharf.example>" }, false},
		{"email without at", func(c *ACMEConfig) { c.Email = "ops" }, false},
		{"plain http directory", func(c *ACMEConfig) { c.DirectoryURL = "http://127.0.0.1:14000/dir" }, false},
		{"directory not a URL", func(c *ACMEConfig) { c.DirectoryURL = "acme.example/dir" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			cfg.Hosts = slices.Clone(valid.Hosts)
			tt.change(&cfg)
			_, err := NewACME(cfg)
			if tt.ok {
				if err != nil {
					t.Fatalf("NewACME: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewACME = %v, want ErrInvalidConfig", err)
			}
		})
	}

	// All problems are reported at once.
	err := func() error {
		_, err := NewACME(ACMEConfig{Hosts: []string{"*.a.example", "b"}, Email: "x"})
		return err
	}()
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("NewACME = %v, want 4 joined problems", err)
	}
}

func TestACMETLSConfig(t *testing.T) {
	a, err := NewACME(ACMEConfig{Hosts: []string{"wharf.example"}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c := a.TLSConfig()
	if !slices.Equal(c.NextProtos, []string{"h2", "http/1.1", acme.ALPNProto}) || c.MinVersion != tls.VersionTLS12 || c.GetCertificate == nil {
		t.Fatalf("TLSConfig: NextProtos %q, MinVersion %x", c.NextProtos, c.MinVersion)
	}
	// Handshakes that cannot be answered fail before any CA is contacted
	// (DirectoryURL is Let's Encrypt here, which tests never reach).
	for _, name := range []string{"", "other.example"} {
		if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: name}); err == nil {
			t.Errorf("GetCertificate(%q) succeeded", name)
		}
	}
}

func TestACMEHTTPHandler(t *testing.T) {
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	const challenge = "/.well-known/acme-challenge/unknown-token"
	tests := []struct {
		name     string
		http01   bool
		fallback http.Handler
		host     string
		path     string
		wantCode int
	}{
		{"challenge for a configured host, unknown token", true, fallback, "wharf.example", challenge, http.StatusNotFound},
		{"challenge for another host", true, fallback, "other.example", challenge, http.StatusForbidden},
		{"other path to fallback", true, fallback, "wharf.example", "/v2/", http.StatusTeapot},
		{"nil fallback answers 404", true, nil, "wharf.example", "/v2/", http.StatusNotFound},
		{"without http-01 challenges go to fallback", false, fallback, "wharf.example", challenge, http.StatusTeapot},
		{"without http-01 other paths go to fallback", false, fallback, "wharf.example", "/", http.StatusTeapot},
		{"without http-01 nil fallback answers 404", false, nil, "wharf.example", challenge, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewACME(ACMEConfig{Hosts: []string{"wharf.example"}, CacheDir: t.TempDir(), HTTPChallenge: tt.http01})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", tt.path, nil)
			r.Host = tt.host
			w := httptest.NewRecorder()
			a.HTTPHandler(tt.fallback).ServeHTTP(w, r)
			if w.Code != tt.wantCode {
				t.Fatalf("status %d, want %d", w.Code, tt.wantCode)
			}
		})
	}
}
