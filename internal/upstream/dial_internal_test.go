package upstream

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"testing"
)

func TestDialGuardCheck(t *testing.T) {
	allow := []string{"storage.example", "s3.example:9000", "https://auth.example", "[fd00::5]:80", ""}
	tests := []struct {
		name           string
		internalByName bool
		host, port     string
		address        string
		wantErr        bool
	}{
		{"public address", false, "cdn.example", "443", "203.0.113.9:443", false},
		{"registry itself on loopback", false, "registry.example", "443", "127.0.0.1:443", false},
		{"registry itself, another port", false, "registry.example", "22", "10.0.0.1:22", false},
		{"loopback", false, "cdn.example", "443", "127.0.0.1:443", true},
		{"metadata service", false, "metadata.example", "80", "169.254.169.254:80", true},
		{"private", false, "cdn.example", "443", "10.1.2.3:443", true},
		{"CGNAT", false, "cdn.example", "443", "100.64.0.1:443", true},
		{"unspecified", false, "cdn.example", "443", "0.0.0.0:443", true},
		{"IPv6 loopback", false, "cdn.example", "443", "[::1]:443", true},
		{"IPv6 ULA", false, "cdn.example", "443", "[fd00::1]:443", true},
		{"IPv4-mapped loopback", false, "cdn.example", "443", "[::ffff:127.0.0.1]:443", true},
		{"unreadable address", false, "cdn.example", "443", "somewhere", true},
		{"listed by name, any port", false, "storage.example", "8443", "10.0.0.2:8443", false},
		{"listed with its port", false, "s3.example", "9000", "10.0.0.3:9000", false},
		{"listed with another port", false, "s3.example", "9001", "10.0.0.3:9001", true},
		{"listed as an https URL: default port", false, "auth.example", "443", "10.0.0.4:443", false},
		{"listed as an https URL: other port", false, "auth.example", "80", "10.0.0.4:80", true},
		{"listed IPv6 literal", false, "fd00::5", "80", "[fd00::5]:80", false},
		{"registry internal by name", true, "cdn.example", "443", "127.0.0.1:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newDialGuard(net.Dialer{}, "Registry.Example.", tt.internalByName, allow)
			err := g.check(tt.host, tt.port, tt.address)
			if (err != nil) != tt.wantErr {
				t.Fatalf("check(%s, %s, %s) = %v, want error %v", tt.host, tt.port, tt.address, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInternalAddress) {
				t.Errorf("error %v does not wrap ErrInternalAddress", err)
			}
		})
	}
}

func TestDialGuardProxyIsAllowed(t *testing.T) {
	g := newDialGuard(net.Dialer{}, "registry.example", false, nil)
	if err := g.check("proxy.corp", "3128", "10.0.0.8:3128"); err == nil {
		t.Fatal("an unknown internal host was allowed")
	}
	proxy := g.proxy(func(*http.Request) (*url.URL, error) { return url.Parse("http://Proxy.Corp:3128") })
	req, _ := http.NewRequest(http.MethodGet, "https://registry.example/v2/", nil)
	if _, err := proxy(req); err != nil {
		t.Fatal(err)
	}
	if err := g.check("proxy.corp", "3128", "10.0.0.8:3128"); err != nil {
		t.Fatalf("the connection to the proxy was refused: %v", err)
	}
}

func TestDialGuardLearnsWhereTheRegistryIs(t *testing.T) {
	g := newDialGuard(net.Dialer{}, "registry.example", false, nil)
	if err := g.check("cdn.example", "80", "127.0.0.1:80"); err == nil {
		t.Fatal("loopback allowed before the registry was seen there")
	}
	g.registryInternal.Store(true)
	if err := g.check("cdn.example", "80", "127.0.0.1:80"); err != nil {
		t.Fatalf("loopback refused although the registry is there: %v", err)
	}
}
