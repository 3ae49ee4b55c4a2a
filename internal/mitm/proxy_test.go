package mitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ioTimeout bounds every network read and write of a test, so a broken
// proxy fails the test instead of hanging it.
const ioTimeout = 10 * time.Second

// seen is what the mirror handler observed of one request.
type seen struct {
	Host, URLHost, Scheme, RequestURI string
	TLS                               bool
	SNI                               string
	RemoteIP                          string
	ProxyAuth                         string
}

// recorder is the fake mirror handler: it records each request and answers
// with the host and path it saw.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (h *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := seen{
		Host: r.Host, URLHost: r.URL.Host, Scheme: r.URL.Scheme, RequestURI: r.RequestURI,
		TLS: r.TLS != nil, ProxyAuth: r.Header.Get("Proxy-Authorization"),
	}
	if r.TLS != nil {
		s.SNI = r.TLS.ServerName
	}
	s.RemoteIP, _, _ = net.SplitHostPort(r.RemoteAddr)
	h.mu.Lock()
	h.reqs = append(h.reqs, s)
	h.mu.Unlock()
	fmt.Fprintf(w, "mirror %s%s", r.Host, r.URL.Path)
}

func (h *recorder) requests() []seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]seen(nil), h.reqs...)
}

// interceptAll says yes to every host, so the tests show that the proxy
// itself keeps IP literals and localhost out of interception.
func interceptAll(string) bool { return true }

// interceptRegistries is the usual allowlist of registry hosts.
func interceptRegistries(host string) bool {
	return host == "quay.io" || host == "ghcr.io" || host == "registry.example"
}

type harness struct {
	ca    *CA
	p     *Proxy
	srv   *httptest.Server
	mirro *recorder
}

// newHarness serves a Proxy on a loopback httptest server. configure may
// change the proxy before it starts.
func newHarness(t *testing.T, configure func(*Proxy)) *harness {
	t.Helper()
	h := &harness{ca: testCA(t), mirro: &recorder{}}
	h.p = &Proxy{CA: h.ca, Intercept: interceptRegistries, Handler: h.mirro}
	if configure != nil {
		configure(h.p)
	}
	h.srv = httptest.NewServer(h.p)
	t.Cleanup(h.srv.Close)
	// Runs before srv.Close: the proxy ends its hijacked connections,
	// which the httptest server does not track.
	t.Cleanup(func() {
		if err := h.p.Close(); err != nil {
			t.Errorf("Proxy.Close: %v", err)
		}
	})
	return h
}

// client returns an HTTP client that uses the proxy and trusts roots.
func (h *harness) client(t *testing.T, roots *x509.CertPool) *http.Client {
	t.Helper()
	proxyURL, err := url.Parse(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: ioTimeout}
}

// dial opens a raw connection to the proxy.
func (h *harness) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connect sends a CONNECT for target on c and reads the reply, body
// included.
func connect(t *testing.T, c net.Conn, target string) (*http.Response, string, *bufio.Reader) {
	t.Helper()
	return roundTrip(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n", http.MethodConnect)
}

// roundTrip writes a raw request to c and reads the response.
func roundTrip(t *testing.T, c net.Conn, raw, method string) (*http.Response, string, *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if !(method == http.MethodConnect && resp.StatusCode == http.StatusOK) {
		body, err = io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
	}
	resp.Body.Close()
	return resp, string(body), br
}

// bufConn reads through br (which may hold bytes already read from the
// connection) and writes to the connection.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c bufConn) Read(b []byte) (int, error) { return c.br.Read(b) }

func TestProxyIntercepts(t *testing.T) {
	h := newHarness(t, nil)
	client := h.client(t, poolOf(h.ca))
	for _, path := range []string{"/v2/", "/v2/coreos/etcd/manifests/latest"} {
		resp, err := client.Get("https://quay.io" + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(body) != "mirror quay.io"+path {
			t.Errorf("GET %s = %d %q", path, resp.StatusCode, body)
		}
		if resp.TLS == nil || resp.TLS.PeerCertificates[0].DNSNames[0] != "quay.io" {
			t.Errorf("GET %s was not served with the quay.io leaf", path)
		}
	}
	want := []seen{
		{Host: "quay.io", URLHost: "quay.io", Scheme: "https", RequestURI: "/v2/", TLS: true, SNI: "quay.io", RemoteIP: "127.0.0.1"},
		{Host: "quay.io", URLHost: "quay.io", Scheme: "https", RequestURI: "/v2/coreos/etcd/manifests/latest", TLS: true, SNI: "quay.io", RemoteIP: "127.0.0.1"},
	}
	if diff := cmp.Diff(want, h.mirro.requests()); diff != "" {
		t.Errorf("mirror saw (-want +got):\n%s", diff)
	}
}

func TestProxyConnectRefused(t *testing.T) {
	tests := []struct {
		name      string
		intercept func(string) bool
		target    string
		want      int
		bodyNames string
	}{
		{"not a registry", interceptRegistries, "example.com:443", http.StatusForbidden, "example.com:443"},
		{"IPv4 literal", interceptAll, "127.0.0.1:443", http.StatusForbidden, "127.0.0.1:443"},
		{"IPv6 literal", interceptAll, "[::1]:443", http.StatusForbidden, "[::1]:443"},
		{"localhost", interceptAll, "localhost:443", http.StatusForbidden, "localhost:443"},
		{"localhost subdomain", interceptAll, "registry.localhost:443", http.StatusForbidden, "registry.localhost:443"},
		{"registry on another port", interceptRegistries, "quay.io:8443", http.StatusForbidden, "quay.io:8443"},
		{"nothing intercepted", nil, "quay.io:443", http.StatusForbidden, "quay.io:443"},
		{"no port", interceptAll, "quay.io", http.StatusBadRequest, "quay.io"},
		{"port out of range", interceptAll, "quay.io:70000", http.StatusBadRequest, "quay.io:70000"},
		{"port zero", interceptAll, "quay.io:0", http.StatusBadRequest, "quay.io:0"},
		// net/http refuses this one itself, with its own body.
		{"IPv6 without brackets", interceptAll, "::1:443", http.StatusBadRequest, ""},
		{"inet_aton shorthand", interceptAll, "127.1:443", http.StatusBadRequest, "127.1:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(p *Proxy) { p.Intercept = tt.intercept })
			resp, body, _ := connect(t, h.dial(t), tt.target)
			if resp.StatusCode != tt.want {
				t.Errorf("CONNECT %s = %d %q, want %d", tt.target, resp.StatusCode, body, tt.want)
			}
			if !strings.Contains(body, tt.bodyNames) || strings.Count(strings.TrimSpace(body), "\n") != 0 {
				t.Errorf("body %q: want one line naming %s", body, tt.bodyNames)
			}
			if got := h.mirro.requests(); len(got) != 0 {
				t.Errorf("mirror saw %v", got)
			}
		})
	}
}

// TestProxyConnectPathForm sends a CONNECT whose target is a path, which
// RFC 9110 §9.3.6 does not allow.
func TestProxyConnectPathForm(t *testing.T) {
	h := newHarness(t, func(p *Proxy) { p.Intercept = interceptAll })
	resp, body, _ := roundTrip(t, h.dial(t), "CONNECT /v2/ HTTP/1.1\r\nHost: quay.io:443\r\n\r\n", http.MethodConnect)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("CONNECT /v2/ = %d %q, want 400", resp.StatusCode, body)
	}
}

func TestProxyForward(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		want     int
		wantBody string
		seen     []seen
	}{
		{
			name: "origin-form",
			raw:  "GET /v2/ HTTP/1.1\r\nHost: quay.io\r\n\r\n",
			want: http.StatusBadRequest, wantBody: "this is wharf's proxy port; use it as HTTPS_PROXY",
		},
		{
			name: "registry over plain http",
			raw:  "GET http://registry.example/v2/?n=1 HTTP/1.1\r\nHost: registry.example\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n\r\n",
			want: http.StatusOK, wantBody: "mirror registry.example/v2/",
			seen: []seen{{Host: "registry.example", URLHost: "registry.example", Scheme: "http", RequestURI: "/v2/?n=1", RemoteIP: "127.0.0.1"}},
		},
		{
			name: "registry with explicit port 80",
			raw:  "GET http://REGISTRY.example:80/v2/ HTTP/1.1\r\nHost: registry.example\r\n\r\n",
			want: http.StatusOK, wantBody: "mirror registry.example/v2/",
			seen: []seen{{Host: "registry.example", URLHost: "registry.example", Scheme: "http", RequestURI: "/v2/", RemoteIP: "127.0.0.1"}},
		},
		{
			name: "registry on another port",
			raw:  "GET http://registry.example:5000/v2/ HTTP/1.1\r\nHost: registry.example:5000\r\n\r\n",
			want: http.StatusForbidden, wantBody: "registry.example:5000",
		},
		{
			name: "not a registry",
			raw:  "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
			want: http.StatusForbidden, wantBody: "example.com",
		},
		{
			name: "IP literal",
			raw:  "GET http://127.0.0.1/v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
			want: http.StatusForbidden, wantBody: "127.0.0.1",
		},
		{
			name: "https in absolute form",
			raw:  "GET https://quay.io/v2/ HTTP/1.1\r\nHost: quay.io\r\n\r\n",
			want: http.StatusBadRequest, wantBody: "CONNECT",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			resp, body, _ := roundTrip(t, h.dial(t), tt.raw, http.MethodGet)
			if resp.StatusCode != tt.want || !strings.Contains(body, tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.want, tt.wantBody)
			}
			if diff := cmp.Diff(tt.seen, h.mirro.requests()); diff != "" {
				t.Errorf("mirror saw (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProxyHostMismatch sends requests whose Host differs from the CONNECT
// host through an intercepted connection.
func TestProxyHostMismatch(t *testing.T) {
	tests := []struct {
		host string
		want int
	}{
		{"quay.io", http.StatusOK},
		{"QUAY.IO", http.StatusOK},
		{"quay.io.", http.StatusOK},
		{"quay.io:443", http.StatusOK},
		{"ghcr.io", http.StatusMisdirectedRequest},
		{"quay.io:8443", http.StatusMisdirectedRequest},
		{"127.0.0.1", http.StatusMisdirectedRequest},
	}
	h := newHarness(t, nil)
	client := h.client(t, poolOf(h.ca))
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "https://quay.io/v2/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host // the connection still goes to quay.io:443
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("Host %s: %d, want %d", tt.host, resp.StatusCode, tt.want)
			}
		})
	}
	for _, s := range h.mirro.requests() {
		if s.Host != "quay.io" {
			t.Errorf("mirror saw Host %q", s.Host)
		}
	}
}

// TestProxySNI checks the handshake of an intercepted connection against
// the SNI the client sends.
func TestProxySNI(t *testing.T) {
	tests := []struct {
		name    string
		sni     string
		wantErr bool
	}{
		{"matching", "quay.io", false},
		{"matching, other case", "Quay.IO", false},
		{"absent", "", false},
		{"other host", "ghcr.io", true},
	}
	h := newHarness(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t)
			resp, _, br := connect(t, c, "quay.io:443")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT = %d", resp.StatusCode)
			}
			// Verify by hand so that an absent SNI can still be checked
			// against quay.io.
			cfg := &tls.Config{
				ServerName:         tt.sni,
				InsecureSkipVerify: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					inter := x509.NewCertPool()
					for _, c := range cs.PeerCertificates[1:] {
						inter.AddCert(c)
					}
					_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
						DNSName: "quay.io", Roots: poolOf(h.ca), Intermediates: inter,
					})
					return err
				},
			}
			tc := tls.Client(bufConn{c, br}, cfg)
			err := tc.Handshake()
			if tt.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp, body, _ := roundTrip(t, tc, "GET /v2/ HTTP/1.1\r\nHost: quay.io\r\n\r\n", http.MethodGet)
			if resp.StatusCode != http.StatusOK || body != "mirror quay.io/v2/" {
				t.Errorf("GET /v2/ = %d %q", resp.StatusCode, body)
			}
		})
	}
}

// calls records the arguments of a callback the proxy runs on its own
// goroutines.
type calls struct {
	mu   sync.Mutex
	args []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.args = append(c.args, s)
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.args...)
}

// startEcho starts a loopback TCP server that echoes every connection.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				io.Copy(c, c)
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestProxyTunnel reaches a TLS server through an allowlisted tunnel: the
// TLS session is the client's with the server, untouched by wharf.
func TestProxyTunnel(t *testing.T) {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend")
	}))
	defer backend.Close()
	backendAddr := backend.Listener.Addr().String()
	var asked calls
	h := newHarness(t, func(p *Proxy) {
		p.Intercept = interceptAll
		p.Tunnel = func(hostport string) bool {
			asked.add(hostport)
			return hostport == backendAddr
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(backend.Certificate())
	client := h.client(t, roots)
	resp, err := client.Get(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "backend" {
		t.Errorf("body = %q", body)
	}
	if !resp.TLS.PeerCertificates[0].Equal(backend.Certificate()) {
		t.Error("tunnelled TLS session does not end at the backend")
	}
	if diff := cmp.Diff([]string{backendAddr}, asked.list()); diff != "" {
		t.Errorf("Tunnel asked about (-want +got):\n%s", diff)
	}
	if got := h.mirro.requests(); len(got) != 0 {
		t.Errorf("mirror saw %v", got)
	}
}

// TestProxyTunnelPipelined sends data right behind the CONNECT request,
// before the reply, as clients may; none of it may be lost.
func TestProxyTunnelPipelined(t *testing.T) {
	echo := startEcho(t)
	h := newHarness(t, func(p *Proxy) {
		p.Tunnel = func(hostport string) bool { return hostport == echo }
	})
	c := h.dial(t)
	resp, _, br := roundTrip(t, c, "CONNECT "+echo+" HTTP/1.1\r\nHost: "+echo+"\r\n\r\nearly bytes|", http.MethodConnect)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT = %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, "late bytes"); err != nil {
		t.Fatal(err)
	}
	want := "early bytes|late bytes"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("echoed %q, want %q", got, want)
	}
}

func TestProxyTunnelDialFails(t *testing.T) {
	errRefused := errors.New("refused by test")
	var dialled calls
	h := newHarness(t, func(p *Proxy) {
		p.Tunnel = func(string) bool { return true }
		p.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled.add(network + " " + addr)
			if _, ok := ctx.Deadline(); !ok {
				t.Error("tunnel dial without deadline")
			}
			return nil, errRefused
		}
	})
	resp, body, _ := connect(t, h.dial(t), "example.com:22")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "example.com:22") {
		t.Errorf("CONNECT = %d %q, want 502 naming the target", resp.StatusCode, body)
	}
	if diff := cmp.Diff([]string{"tcp example.com:22"}, dialled.list()); diff != "" {
		t.Errorf("dialled (-want +got):\n%s", diff)
	}
}

// TestProxyClose checks that Close ends an intercepted and a tunnelled
// connection and that the proxy refuses CONNECT afterwards.
func TestProxyClose(t *testing.T) {
	echo := startEcho(t)
	h := newHarness(t, func(p *Proxy) {
		p.Tunnel = func(hostport string) bool { return hostport == echo }
	})

	ic := h.dial(t)
	if resp, _, _ := connect(t, ic, "quay.io:443"); resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT quay.io = %d", resp.StatusCode)
	}
	intercepted := tls.Client(ic, &tls.Config{ServerName: "quay.io", RootCAs: poolOf(h.ca)})
	if err := intercepted.Handshake(); err != nil {
		t.Fatal(err)
	}

	tc := h.dial(t)
	resp, _, tbr := connect(t, tc, echo)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT echo = %d", resp.StatusCode)
	}
	if _, err := io.WriteString(tc, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tbr, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}

	if err := h.p.Close(); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]io.Reader{"intercepted": intercepted, "tunnelled": tbr} {
		n, err := r.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("%s connection still open after Close: read %d, %v", name, n, err)
		}
	}

	resp, body, _ := connect(t, h.dial(t), "quay.io:443")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("CONNECT after Close = %d %q, want 503", resp.StatusCode, body)
	}
	if err := h.p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestProxyMaxConns(t *testing.T) {
	h := newHarness(t, func(p *Proxy) { p.MaxConns = 1 })
	if resp, _, _ := connect(t, h.dial(t), "quay.io:443"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first CONNECT = %d", resp.StatusCode)
	}
	resp, body, _ := connect(t, h.dial(t), "ghcr.io:443")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second CONNECT = %d %q, want 503", resp.StatusCode, body)
	}
}

// TestProxyHTTP2Connect checks that a CONNECT the proxy listener received
// over HTTP/2 is refused rather than half-served.
func TestProxyHTTP2Connect(t *testing.T) {
	p := &Proxy{CA: testCA(t), Intercept: interceptAll}
	defer p.Close()
	req := httptest.NewRequest(http.MethodConnect, "quay.io:443", nil)
	req.ProtoMajor, req.ProtoMinor, req.Proto = 2, 0, "HTTP/2.0"
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	if rec.Code != http.StatusHTTPVersionNotSupported {
		t.Errorf("HTTP/2 CONNECT = %d, want 505", rec.Code)
	}
}

// TestProxyClosedDuringDial closes the proxy while a tunnel target is being
// dialled: the tunnel must not start, and both connections must be closed.
func TestProxyClosedDuringDial(t *testing.T) {
	echo := startEcho(t)
	closed := make(chan error, 1)
	h := newHarness(t, func(p *Proxy) {
		p.Tunnel = func(string) bool { return true }
		p.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			go func() { closed <- p.Close() }()
			// Close waits for this tunnel, so it cannot finish first;
			// wait (boundedly) until it has started.
			for range 1000 {
				p.mu.Lock()
				done := p.closed
				p.mu.Unlock()
				if done {
					break
				}
				time.Sleep(time.Millisecond)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	})
	c := h.dial(t)
	if _, err := io.WriteString(c, "CONNECT "+echo+" HTTP/1.1\r\nHost: "+echo+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("client got %q, %v; want the connection closed without a reply", b, err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
