package tlsserve

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRedirectHandler(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Next", "1")
		w.WriteHeader(http.StatusTeapot)
	})
	tests := []struct {
		name         string
		port         string
		next         http.Handler
		method       string
		target       string // request-target
		host         string // Host header; "-" for none
		wantCode     int
		wantLocation string
	}{
		{"default port omitted", "443", nil, "GET", "/v2/", "wharf.example", 308, "https://wharf.example/v2/"},
		{"empty port means 443", "", nil, "GET", "/v2/", "wharf.example", 308, "https://wharf.example/v2/"},
		{"other port kept", "8443", nil, "GET", "/v2/", "wharf.example", 308, "https://wharf.example:8443/v2/"},
		{"plain port in host replaced", "8443", nil, "GET", "/", "wharf.example:8080", 308, "https://wharf.example:8443/"},
		{"plain port dropped for 443", "443", nil, "GET", "/", "wharf.example:80", 308, "https://wharf.example/"},
		{"query kept", "443", nil, "GET", "/v2/library/alpine/tags/list?n=10&last=a", "wharf.example", 308,
			"https://wharf.example/v2/library/alpine/tags/list?n=10&last=a"},
		{"escaped path kept", "443", nil, "GET", "/v2/a%2Fb/manifests/x", "wharf.example", 308, "https://wharf.example/v2/a%2Fb/manifests/x"},
		{"POST is redirected with 308 too", "443", nil, "POST", "/v2/x/blobs/uploads/", "wharf.example", 308, "https://wharf.example/v2/x/blobs/uploads/"},
		{"IPv4 host", "8443", nil, "GET", "/", "127.0.0.1:8080", 308, "https://127.0.0.1:8443/"},
		{"IPv6 host with port", "8443", nil, "GET", "/", "[::1]:8080", 308, "https://[::1]:8443/"},
		{"IPv6 host without port", "443", nil, "GET", "/", "[::1]", 308, "https://[::1]/"},
		{"no Host", "443", nil, "GET", "/", "-", 400, ""},
		{"ACME path to next on GET", "443", next, "GET", "/.well-known/acme-challenge/tok", "wharf.example", http.StatusTeapot, ""},
		{"ACME path to next on HEAD", "443", next, "HEAD", "/.well-known/acme-challenge/tok", "wharf.example", http.StatusTeapot, ""},
		{"ACME path POST is redirected", "443", next, "POST", "/.well-known/acme-challenge/tok", "wharf.example", 308,
			"https://wharf.example/.well-known/acme-challenge/tok"},
		{"ACME path without next is redirected", "443", nil, "GET", "/.well-known/acme-challenge/tok", "wharf.example", 308,
			"https://wharf.example/.well-known/acme-challenge/tok"},
		{"other well-known path is redirected", "443", next, "GET", "/.well-known/other", "wharf.example", 308,
			"https://wharf.example/.well-known/other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, nil)
			r.Host = tt.host
			if tt.host == "-" {
				r.Host = ""
			}
			w := httptest.NewRecorder()
			RedirectHandler(tt.port, tt.next).ServeHTTP(w, r)
			if w.Code != tt.wantCode {
				t.Fatalf("status %d, want %d", w.Code, tt.wantCode)
			}
			if got := w.Header().Get("Location"); got != tt.wantLocation {
				t.Errorf("Location %q, want %q", got, tt.wantLocation)
			}
			if got := w.Header().Get("Strict-Transport-Security"); got != "" {
				t.Errorf("plain HTTP answer carries HSTS %q", got)
			}
		})
	}
}

func TestRedirectHandlerInvalidPort(t *testing.T) {
	for _, port := range []string{"0", "https", "-1", "65536", "443 "} {
		t.Run(port, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("RedirectHandler(%q) did not panic", port)
				}
			}()
			RedirectHandler(port, nil)
		})
	}
}

func TestHSTS(t *testing.T) {
	tests := []struct {
		name     string
		tls      bool
		inner    string // what the wrapped handler sets, if anything
		wantHSTS string
	}{
		{"TLS request gets HSTS", true, "", "max-age=31536000"},
		{"plain request gets none", false, "", ""},
		{"handler may override", true, "max-age=0", "max-age=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HSTS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.inner != "" {
					w.Header().Set("Strict-Transport-Security", tt.inner)
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			r := httptest.NewRequest("GET", "/v2/", nil)
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			} else {
				r.TLS = nil
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusNoContent {
				t.Errorf("status %d, want 204 from the wrapped handler", w.Code)
			}
			if got := w.Header().Get("Strict-Transport-Security"); got != tt.wantHSTS {
				t.Errorf("Strict-Transport-Security %q, want %q", got, tt.wantHSTS)
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	tests := []struct {
		extra []string
		want  []string
	}{
		{nil, []string{"h2", "http/1.1"}},
		{[]string{"acme-tls/1"}, []string{"h2", "http/1.1", "acme-tls/1"}},
		{[]string{"h2", "", "acme-tls/1", "acme-tls/1"}, []string{"h2", "http/1.1", "acme-tls/1"}},
	}
	for _, tt := range tests {
		c := ServerConfig(nil, tt.extra...)
		if diff := cmp.Diff(tt.want, c.NextProtos); diff != "" {
			t.Errorf("ServerConfig(%q).NextProtos (-want +got):\n%s", tt.extra, diff)
		}
		if c.MinVersion != tls.VersionTLS12 {
			t.Errorf("MinVersion %x, want TLS 1.2", c.MinVersion)
		}
		for _, id := range c.CipherSuites {
			for _, insecure := range tls.InsecureCipherSuites() {
				if id == insecure.ID {
					t.Errorf("insecure suite %s allowed", insecure.Name)
				}
			}
		}
	}
	// Two configs must not share a slice a caller might modify.
	a, b := ServerConfig(nil), ServerConfig(nil)
	a.CipherSuites[0] = 0
	if b.CipherSuites[0] == 0 {
		t.Error("ServerConfig results share CipherSuites")
	}
}

// TestServerConfigRefusesOldTLS checks on a real loopback handshake that
// TLS 1.1 is refused and TLS 1.2 works.
func TestServerConfigRefusesOldTLS(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.leaf(t, 1, ecdsaKey)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }))
	for _, tt := range []struct {
		version uint16
		ok      bool
	}{{tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}} {
		c, err := tls.Dial("tcp", addr, &tls.Config{
			ServerName: "localhost", RootCAs: ca.pool, MinVersion: tt.version, MaxVersion: tt.version,
		})
		if err == nil {
			c.Close()
		}
		if (err == nil) != tt.ok {
			t.Errorf("TLS %s: handshake error %v, want ok=%v", tls.VersionName(tt.version), err, tt.ok)
		}
	}
}

// FuzzRedirectTarget checks that whatever Host and path a request carries,
// a redirect goes to an https URL on that host's name and nowhere else.
func FuzzRedirectTarget(f *testing.F) {
	f.Add("wharf.example", "/v2/", "n=1", "8443")
	f.Add("[::1]:80", "/a%2Fb", "", "443")
	f.Add("evil.example/@good.example", "//x", "", "443")
	f.Add("a:b:c", "/", "", "443")
	f.Fuzz(func(t *testing.T, host, path, query, port string) {
		// Only what a server can hand the handler: a parsed request-target
		// and a port RedirectHandler accepted.
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return
		}
		u, err := url.ParseRequestURI("/" + path + "?" + query)
		if err != nil {
			return
		}
		target, ok := redirectTarget(host, port, u)
		if !ok {
			return
		}
		p, err := url.Parse(target)
		if err != nil {
			t.Fatalf("target %q does not parse: %v", target, err)
		}
		if p.Scheme != "https" || p.User != nil || p.Fragment != "" {
			t.Fatalf("target %q: scheme %q user %v fragment %q", target, p.Scheme, p.User, p.Fragment)
		}
		if p.Hostname() == "" || strings.ContainsAny(target, "\r\n") {
			t.Fatalf("target %q has no host or a line break", target)
		}
	})
}
