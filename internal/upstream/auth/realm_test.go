package auth

import (
	"errors"
	"testing"
)

func TestCheckRealm(t *testing.T) {
	tests := []struct {
		name   string
		realm  string
		origin string
		allow  []string
		ok     bool
	}{
		{"docker hub", "https://auth.docker.io/token", "https://registry-1.docker.io", nil, true},
		{"same host", "https://ghcr.io/token", "https://ghcr.io", nil, true},
		{"trailing slash", "https://public.ecr.aws/token/", "https://public.ecr.aws", nil, true},
		{"http realm for http registry", "http://auth.example.com/token", "http://registry.example.com", nil, true},
		{"http realm for https registry", "http://auth.example.com/token", "https://registry.example.com", nil, false},
		{"http realm for https registry, allowed", "http://auth.example.com/token", "https://registry.example.com", []string{"auth.example.com"}, true},
		{"ftp realm", "ftp://auth.example.com/token", "https://registry.example.com", nil, false},
		{"relative realm", "/token", "https://registry.example.com", nil, false},
		{"user info", "https://u:p@auth.example.com/token", "https://registry.example.com", nil, false},
		{"garbage", "https://[::1", "https://registry.example.com", nil, false},
		{"metadata endpoint", "http://169.254.169.254/latest/meta-data", "http://registry.example.com", nil, false},
		{"loopback v4", "https://127.0.0.1/token", "https://registry.example.com", nil, false},
		{"loopback v6", "https://[::1]:8443/token", "https://registry.example.com", nil, false},
		{"v4-mapped loopback", "https://[::ffff:127.0.0.1]/token", "https://registry.example.com", nil, false},
		{"private 10/8", "https://10.1.2.3/token", "https://registry.example.com", nil, false},
		{"private 192.168", "https://192.168.1.1/token", "https://registry.example.com", nil, false},
		{"unique local v6", "https://[fd00:ec2::254]/token", "https://registry.example.com", nil, false},
		{"cgnat", "https://100.64.0.1/token", "https://registry.example.com", nil, false},
		{"unspecified", "https://0.0.0.0/token", "https://registry.example.com", nil, false},
		{"localhost", "https://localhost:5001/token", "https://registry.example.com", nil, false},
		{"sub.localhost", "https://auth.localhost/token", "https://registry.example.com", nil, false},
		{"decimal ip", "http://2130706433/token", "http://registry.example.com", nil, false},
		{"hex ip", "http://0x7f.1/token", "http://registry.example.com", nil, false},
		{"public ip literal", "https://8.8.8.8/token", "https://registry.example.com", nil, false},
		{"another domain", "https://auth.evil.test/token", "https://registry.example.com", nil, false},
		{"look-alike domain", "https://auth.example.com.evil.test/token", "https://registry.example.com", nil, false},
		{"public suffix sibling", "https://attacker.github.io/token", "https://victim.github.io", nil, false},
		{"gitlab", "https://gitlab.com/jwt/auth", "https://registry.gitlab.com", nil, true},
		{"artifact registry", "https://us-docker.pkg.dev/v2/token", "https://us-docker.pkg.dev", nil, true},
		{"nvcr.io without its realm listed", "https://authn.nvidia.com/token", "https://nvcr.io", nil, false},
		{"nvcr.io with its realm listed", "https://authn.nvidia.com/token", "https://nvcr.io", []string{"authn.nvidia.com"}, true},
		{"private realm for private registry", "http://127.0.0.1:5001/token", "http://127.0.0.1:5000", nil, true},
		{"private realm for localhost registry", "http://10.0.0.5/token", "http://localhost:5000", nil, true},
		{"public realm for a private registry", "http://auth.example.com/token", "http://10.0.0.5:5000", nil, false},
		{"private realm for public registry, host allowed", "https://10.0.0.5/token", "https://registry.example.com", []string{"10.0.0.5"}, true},
		{"private realm, host:port allowed", "https://10.0.0.5:8443/token", "https://registry.example.com", []string{"10.0.0.5:8443"}, true},
		{"private realm, other port allowed", "https://10.0.0.5:8443/token", "https://registry.example.com", []string{"10.0.0.5:9443"}, false},
		{"private realm, URL allowed", "https://10.0.0.5/token", "https://registry.example.com", []string{"https://10.0.0.5"}, true},
		{"private realm, URL with other scheme", "https://10.0.0.5/token", "https://registry.example.com", []string{"http://10.0.0.5"}, false},
		{"hostname that starts with 0x", "https://0xdeadbeef.example.com/token", "https://registry.example.com", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := CheckRealm(tt.realm, tt.origin, tt.allow)
			if tt.ok {
				if err != nil {
					t.Fatalf("CheckRealm(%q, %q) = %v, want accepted", tt.realm, tt.origin, err)
				}
				if u == nil || u.Host == "" {
					t.Fatalf("CheckRealm(%q) returned %v", tt.realm, u)
				}
				return
			}
			if !errors.Is(err, ErrRealmNotAllowed) {
				t.Fatalf("CheckRealm(%q, %q) = %v, want ErrRealmNotAllowed", tt.realm, tt.origin, err)
			}
		})
	}
}

func TestIsInternalHost(t *testing.T) {
	tests := map[string]bool{
		"":                       true,
		"localhost":              true,
		"LOCALHOST.":             true,
		"127.0.0.1":              true,
		"127.1.2.3":              true,
		"::1":                    true,
		"[::1]":                  true,
		"fe80::1%eth0":           true,
		"169.254.169.254":        true,
		"172.16.0.1":             true,
		"100.127.255.255":        true,
		"2130706433":             true,
		"0177.0.0.1":             true,
		"0x7f000001":             true,
		"registry-1.docker.io":   false,
		"auth.docker.io":         false,
		"100.128.0.1":            false,
		"8.8.8.8":                false,
		"2001:4860:4860::8888":   false,
		"1.example":              false,
		"example.123":            false,
		"registry.localhost.com": false,
	}
	for host, want := range tests {
		if got := IsInternalHost(host); got != want {
			t.Errorf("IsInternalHost(%q) = %v, want %v", host, got, want)
		}
	}
}
