package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// fakeDNS answers A queries for the names it knows from a UDP socket on
// loopback, with an empty answer for other types and NXDOMAIN for other
// names. Its resolver sends every query there, whatever the system's
// configuration says.
func fakeDNS(t *testing.T, names map[string]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for { // ends when the socket is closed
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, err := dnsAnswer(buf[:n], names); err == nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	server := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", server)
		},
	}
}

func dnsAnswer(query []byte, names map[string]netip.Addr) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	addr, known := names[strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA && addr.Is4() {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
		if err := b.AResource(rr, dnsmessage.AResource{A: addr.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// requireNoEnvProxy skips tests that need the default transport to connect
// to made-up names itself rather than through a proxy from the
// environment.
func requireNoEnvProxy(t *testing.T) {
	t.Helper()
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		if os.Getenv(k) != "" {
			t.Skipf("%s is set: the default transport would send requests for test names to it", k)
		}
	}
}

func port(t *testing.T, s *httptest.Server) string {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

var loopback = netip.MustParseAddr("127.0.0.1")

// dialSetup is a registry, a storage host it redirects blobs to and a
// token realm, each on its own loopback port, reached under made-up names
// through the default transport and a fake DNS server.
type dialSetup struct {
	reg, cdn                *fakeRegistry
	tokens                  *tokenServer
	regPort, cdnPort, tPort string
	resolver                *net.Resolver
}

func newDialSetup(t *testing.T) *dialSetup {
	t.Helper()
	requireNoEnvProxy(t)
	s := &dialSetup{reg: newFakeRegistry(), cdn: newFakeRegistry(), tokens: newTokenServer("tok")}
	regSrv, cdnSrv, tokSrv := serve(t, s.reg), serve(t, s.cdn), serve(t, s.tokens)
	s.regPort, s.cdnPort, s.tPort = port(t, regSrv), port(t, cdnSrv), port(t, tokSrv)
	s.resolver = fakeDNS(t, map[string]netip.Addr{
		"registry.example":      loopback,
		"cdn.example":           loopback,
		"auth.registry.example": loopback,
	})
	return s
}

// redirectTo makes the registry redirect blob requests to base.
func (s *dialSetup) redirectTo(base string) {
	s.reg.redirect = func(r *http.Request) string { return base + r.URL.Path }
}

// requireToken makes the registry challenge for a token from realm.
func (s *dialSetup) requireToken(realm string) {
	s.reg.tokens = s.tokens
	s.reg.challenge = []string{fmt.Sprintf(`Bearer realm=%q,service="registry.example"`, realm)}
}

func TestDialGuard(t *testing.T) {
	type setup struct {
		registry string // host of the registry's URL; its port is added
		// publicRegistry makes the registry's own listener count as a
		// public address, so that the registry is internal neither by
		// name nor by resolution.
		publicRegistry bool
		redirect       string // "cdn" or "literal": redirect blobs there
		realm          bool   // challenge for a token from auth.registry.example
		redirectHosts  []string
		tokenRealms    []string
	}
	tests := []struct {
		name    string
		setup   setup
		wantErr error
	}{
		{
			name:    "public registry, redirect to a name that resolves to loopback",
			setup:   setup{registry: "registry.example", publicRegistry: true, redirect: "cdn"},
			wantErr: upstream.ErrInternalAddress,
		},
		{
			name:  "public registry, redirect host listed by name",
			setup: setup{registry: "registry.example", publicRegistry: true, redirect: "cdn", redirectHosts: []string{"CDN.example"}},
		},
		{
			name:  "public registry, redirect host listed with its port",
			setup: setup{registry: "registry.example", publicRegistry: true, redirect: "cdn", redirectHosts: []string{"cdn.example:{cdn}"}},
		},
		{
			name:  "public registry, redirect host listed as a URL",
			setup: setup{registry: "registry.example", publicRegistry: true, redirect: "cdn", redirectHosts: []string{"http://cdn.example:{cdn}"}},
		},
		{
			name:    "public registry, redirect host listed with another port",
			setup:   setup{registry: "registry.example", publicRegistry: true, redirect: "cdn", redirectHosts: []string{"cdn.example:1"}},
			wantErr: upstream.ErrInternalAddress,
		},
		{
			name:    "public registry, redirect to a loopback literal is refused by name",
			setup:   setup{registry: "registry.example", publicRegistry: true, redirect: "literal"},
			wantErr: upstream.ErrRedirect,
		},
		{
			name:  "registry resolving to loopback may redirect to loopback",
			setup: setup{registry: "registry.example", redirect: "cdn"},
		},
		{
			name:  "registry named localhost may redirect to a loopback literal",
			setup: setup{registry: "localhost", publicRegistry: true, redirect: "literal"},
		},
		{
			name:    "public registry, token realm resolving to loopback",
			setup:   setup{registry: "registry.example", publicRegistry: true, realm: true},
			wantErr: upstream.ErrInternalAddress,
		},
		{
			name:  "public registry, token realm listed",
			setup: setup{registry: "registry.example", publicRegistry: true, realm: true, tokenRealms: []string{"auth.registry.example"}},
		},
		{
			name:  "registry resolving to loopback may use a realm on loopback",
			setup: setup{registry: "registry.example", realm: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newDialSetup(t)
			blob := []byte("stored bytes")
			d := s.cdn.putBlob(blob)
			s.reg.putBlob(blob)
			expand := func(list []string) []string {
				out := make([]string, len(list))
				for i, h := range list {
					out[i] = strings.ReplaceAll(h, "{cdn}", s.cdnPort)
				}
				return out
			}
			switch tt.setup.redirect {
			case "cdn":
				s.redirectTo("http://cdn.example:" + s.cdnPort)
			case "literal":
				s.redirectTo("http://127.0.0.1:" + s.cdnPort)
			}
			if tt.setup.realm {
				s.requireToken("http://auth.registry.example:" + s.tPort + "/token")
			}
			c := newClient(t, upstream.Config{
				URL:           "http://" + tt.setup.registry + ":" + s.regPort,
				Resolver:      s.resolver,
				Retries:       2,
				RedirectHosts: expand(tt.setup.redirectHosts),
				TokenRealms:   tt.setup.tokenRealms,
			})
			if tt.setup.publicRegistry {
				regPort := s.regPort
				upstream.SetInternalAddr(c, func(ap netip.AddrPort) bool {
					if fmt.Sprint(ap.Port()) == regPort {
						return false
					}
					return ap.Addr().IsLoopback() || ap.Addr().IsPrivate()
				})
			}

			rc, _, err := c.GetBlob(t.Context(), "app", d)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("GetBlob: %v", err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || string(got) != string(blob) {
					t.Fatalf("GetBlob = %q, %v", got, err)
				}
				return
			}
			if err == nil {
				rc.Close()
				t.Fatalf("GetBlob succeeded, want %v", tt.wantErr)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if errors.Is(err, upstream.ErrUnreachable) {
				t.Errorf("a refused address is reported as ErrUnreachable: %v", err)
			}
			if n := s.cdn.count() + s.tokens.count(); n != 0 {
				t.Errorf("the refused host received %d requests", n)
			}
			if n := s.reg.count(); n != 1 {
				t.Errorf("registry saw %d requests, want 1 (a refusal is not retried)", n)
			}
			if tt.wantErr == upstream.ErrInternalAddress {
				host := "cdn.example"
				if tt.setup.realm {
					host = "auth.registry.example"
				}
				for _, want := range []string{host, "127.0.0.1"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %s", err, want)
					}
				}
			}
		})
	}
}

// TestDialGuardRegistryNeverRestricted: the registry's own host is
// reached whatever its address, even when every loopback address counts
// as internal.
func TestDialGuardRegistryNeverRestricted(t *testing.T) {
	s := newDialSetup(t)
	d := s.reg.putBlob([]byte("x"))
	c := newClient(t, upstream.Config{URL: "http://registry.example:" + s.regPort, Resolver: s.resolver})
	upstream.SetInternalAddr(c, func(netip.AddrPort) bool { return true })
	if _, err := c.HeadBlob(t.Context(), "app", d); err != nil {
		t.Fatalf("HeadBlob: %v", err)
	}
}

func TestHugeResponseHeaders(t *testing.T) {
	huge := strings.Repeat("a", 1<<20)
	reg := newFakeRegistry()
	reg.hook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n == 1 {
			w.Header().Set("X-Padding", huge)
		}
		return false
	}
	reg.putManifest("app", "v1", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	srv := serve(t, reg)
	c := newClient(t, upstream.Config{URL: srv.URL})

	_, _, err := c.GetManifest(t.Context(), "app", "v1")
	if !errors.Is(err, upstream.ErrUnreachable) {
		t.Fatalf("1 MiB of response headers: err = %v, want ErrUnreachable", err)
	}
	if n := c.InFlight(); n != 0 {
		t.Errorf("InFlight = %d after the failure, want 0", n)
	}
	// The client is still usable.
	if _, _, err := c.GetManifest(t.Context(), "app", "v1"); err != nil {
		t.Fatalf("GetManifest after the failure: %v", err)
	}
}
