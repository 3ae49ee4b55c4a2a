package auth

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	aliceTok := issueFor(t, f.a, Principal{Kind: User, Name: "alice"})
	ciTok := issueFor(t, f.a, Principal{Kind: StaticToken, Name: "ci"})
	anonTok := issueFor(t, f.a, Principal{})

	// A token signed with another key, and one for another service.
	other := newFixture(t)
	foreignTok := issueFor(t, other.a, Principal{Kind: User, Name: "alice"})
	svc := newFixture(t, func(c *Config) { c.KeyFile = f.keyFile; c.Service = "elsewhere" })
	otherServiceTok := issueFor(t, svc.a, Principal{Kind: User, Name: "alice"})

	// aliceTok with its last signature character changed.
	last := aliceTok[len(aliceTok)-1]
	flipped := aliceTok[:len(aliceTok)-1] + map[bool]string{true: "B", false: "A"}[last == 'A']

	tests := []struct {
		name    string
		headers []string // Authorization lines; nil for none
		want    Principal
		wantErr error
	}{
		{name: "no header", want: Principal{}},
		{name: "basic user", headers: []string{basic("alice", alicePass)}, want: Principal{Kind: User, Name: "alice"}},
		{name: "basic scheme case-insensitive", headers: []string{"bAsIc " + strings.TrimPrefix(basic("bob", bobPass), "Basic ")}, want: Principal{Kind: User, Name: "bob"}},
		{name: "basic wrong password", headers: []string{basic("alice", bobPass)}, wantErr: ErrInvalidCredentials},
		{name: "basic unknown user", headers: []string{basic("carol", alicePass)}, wantErr: ErrInvalidCredentials},
		{name: "basic empty password", headers: []string{basic("alice", "")}, wantErr: ErrInvalidCredentials},
		{name: "basic static token any user", headers: []string{basic("whoever", ciSecret)}, want: Principal{Kind: StaticToken, Name: "ci"}},
		{name: "basic static token empty user", headers: []string{basic("", otherSecret)}, want: Principal{Kind: StaticToken, Name: "other"}},
		{name: "basic password with colon", headers: []string{basic("alice", alicePass+":x")}, wantErr: ErrInvalidCredentials},
		{name: "bearer static token", headers: []string{"Bearer " + ciSecret}, want: Principal{Kind: StaticToken, Name: "ci"}},
		{name: "bearer issued user token", headers: []string{"Bearer " + aliceTok}, want: Principal{Kind: User, Name: "alice"}},
		{name: "bearer issued static token", headers: []string{"bearer " + ciTok}, want: Principal{Kind: StaticToken, Name: "ci"}},
		{name: "bearer issued anonymous token", headers: []string{"Bearer " + anonTok}, want: Principal{}},
		{name: "bearer unknown token", headers: []string{"Bearer not-a-token-at-all"}, wantErr: ErrInvalidCredentials},
		{name: "bearer bad signature", headers: []string{"Bearer " + flipped}, wantErr: ErrInvalidCredentials},
		{name: "bearer other key", headers: []string{"Bearer " + foreignTok}, wantErr: ErrInvalidCredentials},
		{name: "bearer other service", headers: []string{"Bearer " + otherServiceTok}, wantErr: ErrInvalidCredentials},
		{name: "bearer oversized token", headers: []string{"Bearer " + strings.Repeat("a", maxTokenBytes+1)}, wantErr: ErrInvalidCredentials},
		{name: "unknown scheme", headers: []string{"Digest username=alice"}, wantErr: ErrMalformed},
		{name: "scheme only", headers: []string{"Basic"}, wantErr: ErrMalformed},
		{name: "bearer without token", headers: []string{"Bearer   "}, wantErr: ErrMalformed},
		{name: "empty header", headers: []string{""}, wantErr: ErrMalformed},
		{name: "bad base64", headers: []string{"Basic !!!notbase64"}, wantErr: ErrMalformed},
		{name: "no colon", headers: []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("alice"))}, wantErr: ErrMalformed},
		{name: "control char in header", headers: []string{"Bearer abc\x01def"}, wantErr: ErrMalformed},
		{name: "control char in user", headers: []string{basic("ali\nce", alicePass)}, wantErr: ErrMalformed},
		{name: "oversized header", headers: []string{"Basic " + strings.Repeat("A", maxHeaderBytes)}, wantErr: ErrMalformed},
		{name: "two headers", headers: []string{basic("alice", alicePass), basic("bob", bobPass)}, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request("")
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := f.a.Authenticate(r)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Authenticate error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				noSecrets(t, "error", err.Error(), aliceTok, ciTok)
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans lines: %q", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("principal (-want +got):\n%s", diff)
			}
		})
	}
	noSecrets(t, "log", f.logs.String(), aliceTok, ciTok)
}

func TestPrincipalString(t *testing.T) {
	tests := []struct {
		p    Principal
		want string
		anon bool
	}{
		{Principal{}, "anonymous", true},
		{Principal{Kind: User, Name: "alice"}, "user:alice", false},
		{Principal{Kind: StaticToken, Name: "ci"}, "token:ci", false},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
		if got := tt.p.IsAnonymous(); got != tt.anon {
			t.Errorf("%v.IsAnonymous() = %v, want %v", tt.p, got, tt.anon)
		}
	}
}

func TestEnabled(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want bool
	}{
		{"nothing", Config{}, false},
		{"tokens", Config{Tokens: map[string]string{"ci": ciSecret}}, true},
	}
	for _, tt := range tests {
		a, err := New(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Enabled(); got != tt.want {
			t.Errorf("%s: Enabled() = %v, want %v", tt.name, got, tt.want)
		}
	}
	if f := newFixture(t, func(c *Config) { c.Tokens = nil }); !f.a.Enabled() {
		t.Error("Enabled() = false with an htpasswd file")
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative TTL", Config{TokenTTL: -time.Minute}},
		{"sub-second TTL", Config{TokenTTL: time.Millisecond}},
		{"negative failure limit", Config{FailureLimit: -1}},
		{"empty token secret", Config{Tokens: map[string]string{"ci": ""}}},
		{"missing htpasswd", Config{HtpasswdFile: "/nonexistent/htpasswd"}},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil {
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.TokenTTL = 10 * time.Minute })
	tok := issueFor(t, f.a, Principal{Kind: User, Name: "alice"})
	authz := "Bearer " + tok

	f.clock.Advance(10*time.Minute - time.Second)
	if p, err := f.a.Authenticate(request(authz)); err != nil || p.Name != "alice" {
		t.Fatalf("just before expiry: %v, %v", p, err)
	}
	f.clock.Advance(time.Second)
	_, err := f.a.Authenticate(request(authz))
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: error %v, want ErrExpired", err)
	}
	noSecrets(t, "error", err.Error(), tok)
}

// TestRevocation: a token stops working the moment the credential it was
// issued for is removed or changed, not at its expiry.
func TestRevocation(t *testing.T) {
	t.Run("user removed", func(t *testing.T) {
		f := newFixture(t)
		aliceTok := issueFor(t, f.a, Principal{Kind: User, Name: "alice"})
		bobTok := issueFor(t, f.a, Principal{Kind: User, Name: "bob"})
		writeFile(t, f.htpasswd, "bob:"+string(f.a.users.current(f.clock.Now()).users["bob"])+"\n")
		f.clock.Advance(2 * time.Second)
		if _, err := f.a.Authenticate(request("Bearer " + aliceTok)); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("removed user's token: error %v, want ErrInvalidCredentials", err)
		}
		if p, err := f.a.Authenticate(request("Bearer " + bobTok)); err != nil || p.Name != "bob" {
			t.Errorf("remaining user's token: %v, %v", p, err)
		}
	})
	t.Run("password changed", func(t *testing.T) {
		f := newFixture(t)
		tok := issueFor(t, f.a, Principal{Kind: User, Name: "alice"})
		writeFile(t, f.htpasswd, "alice:"+hashOf(t, "new-password")+"\n")
		f.clock.Advance(2 * time.Second)
		if _, err := f.a.Authenticate(request("Bearer " + tok)); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("token after password change: error %v, want ErrInvalidCredentials", err)
		}
	})
	t.Run("static token removed or rotated", func(t *testing.T) {
		f := newFixture(t)
		ciTok := issueFor(t, f.a, Principal{Kind: StaticToken, Name: "ci"})
		otherTok := issueFor(t, f.a, Principal{Kind: StaticToken, Name: "other"})
		// A restart with the same key file: "ci" rotated, "other" removed.
		g := newFixture(t, func(c *Config) {
			c.KeyFile = f.keyFile
			c.Tokens = map[string]string{"ci": "a-brand-new-ci-secret-0000"}
		})
		for _, tok := range []string{ciTok, otherTok} {
			if _, err := g.a.Authenticate(request("Bearer " + tok)); !errors.Is(err, ErrInvalidCredentials) {
				t.Errorf("token of a changed static token: error %v, want ErrInvalidCredentials", err)
			}
		}
	})
}

func TestBasicVerificationCache(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		if _, err := f.a.Authenticate(request(basic("alice", alicePass))); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.compares.Load(); got != 1 {
		t.Errorf("bcrypt comparisons for 3 good logins = %d, want 1 (cached)", got)
	}

	// Failures are never cached.
	f.compares.Store(0)
	for range 2 {
		if _, err := f.a.Authenticate(request(basic("alice", "wrong"))); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	if got := f.compares.Load(); got != 2 {
		t.Errorf("bcrypt comparisons for 2 bad logins = %d, want 2", got)
	}

	// An unknown user still costs one comparison (against a dummy hash).
	f.compares.Store(0)
	if _, err := f.a.Authenticate(request(basic("mallory", alicePass))); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	if got := f.compares.Load(); got != 1 {
		t.Errorf("bcrypt comparisons for an unknown user = %d, want 1", got)
	}

	// Entries expire after five minutes.
	f.compares.Store(0)
	f.clock.Advance(cacheTTL)
	if _, err := f.a.Authenticate(request(basic("alice", alicePass))); err != nil {
		t.Fatal(err)
	}
	if got := f.compares.Load(); got != 1 {
		t.Errorf("bcrypt comparisons after cache expiry = %d, want 1", got)
	}

	// A reload of the htpasswd file drops the cache: the old password no
	// longer works even though it was cached.
	writeFile(t, f.htpasswd, "alice:"+hashOf(t, "rotated-password")+"\n")
	f.clock.Advance(2 * time.Second)
	if _, err := f.a.Authenticate(request(basic("alice", alicePass))); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("old password after reload: error %v, want ErrInvalidCredentials", err)
	}
	if _, err := f.a.Authenticate(request(basic("alice", "rotated-password"))); err != nil {
		t.Errorf("new password after reload: %v", err)
	}
}

func TestVerifyCacheBounded(t *testing.T) {
	c := newVerifyCache()
	now := time.Unix(1000, 0)
	var first [32]byte
	for i := range maxCacheEntries + 10 {
		var k [32]byte
		k[0], k[1] = byte(i), byte(i>>8)
		if i == 0 {
			first = k
		}
		c.add(k, 1, now)
	}
	if got := c.len(); got != maxCacheEntries {
		t.Errorf("cache holds %d entries, want %d", got, maxCacheEntries)
	}
	if c.hit(first, 1, now) {
		t.Error("oldest entry survived eviction")
	}
}

func TestFailureLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.FailureLimit = 3 })
	for i := range 3 {
		if _, err := f.a.Authenticate(request(basic("alice", "wrong"))); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	f.compares.Store(0)
	f.clock.Advance(20 * time.Second)

	// Blocked: even the right password is refused, without bcrypt work.
	_, err := f.a.Authenticate(request(basic("alice", alicePass)))
	var tmf *TooManyFailuresError
	if !errors.As(err, &tmf) || !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("blocked client: error %v, want *TooManyFailuresError", err)
	}
	if tmf.RetryAfter != 40*time.Second || !strings.Contains(err.Error(), "retry after 40s") {
		t.Errorf("RetryAfter = %v (%q), want 40s", tmf.RetryAfter, err)
	}
	if got := f.compares.Load(); got != 0 {
		t.Errorf("bcrypt comparisons while blocked = %d, want 0", got)
	}
	if !strings.Contains(f.logs.String(), "failure limit") {
		t.Error("reaching the limit was not logged")
	}

	// Other addresses and requests without credentials are not affected.
	r := request(basic("alice", alicePass))
	r.RemoteAddr = "127.0.0.2:5000"
	if _, err := f.a.Authenticate(r); err != nil {
		t.Errorf("other address: %v", err)
	}
	if _, err := f.a.Authenticate(request("")); err != nil {
		t.Errorf("no credentials while blocked: %v", err)
	}

	// The window ends.
	f.clock.Advance(40 * time.Second)
	if p, err := f.a.Authenticate(request(basic("alice", alicePass))); err != nil || p.Name != "alice" {
		t.Errorf("after the window: %v, %v", p, err)
	}
}

func TestFailureLimiterBounded(t *testing.T) {
	l := newFailureLimiter(2, time.Minute, 3)
	now := time.Unix(1000, 0)
	for _, addr := range []string{"a", "a", "b", "c", "d"} {
		l.fail(addr, now)
		now = now.Add(time.Second)
	}
	if got := l.len(); got != 3 {
		t.Errorf("limiter remembers %d addresses, want 3", got)
	}
	// "a" (the oldest window) was dropped, so it is no longer blocked.
	if err := l.check("a", now); err != nil {
		t.Errorf("evicted address still blocked: %v", err)
	}
	l.fail("d", now)
	if err := l.check("d", now); !errors.Is(err, ErrTooManyFailures) {
		t.Errorf("d after 2 failures: %v, want ErrTooManyFailures", err)
	}
}

func TestChallenge(t *testing.T) {
	tests := []struct {
		name  string
		realm string
		tls   bool
		host  string
		repo  string
		want  string
	}{
		{name: "plain", host: "mirror.example:5000", repo: "library/nginx",
			want: `Bearer realm="http://mirror.example:5000/token",service="wharf",scope="repository:library/nginx:pull"`},
		{name: "tls", tls: true, host: "mirror.example", repo: "docker.io/library/nginx",
			want: `Bearer realm="https://mirror.example/token",service="wharf",scope="repository:docker.io/library/nginx:pull"`},
		{name: "ping without name", host: "[::1]:5000",
			want: `Bearer realm="http://[::1]:5000/token",service="wharf"`},
		{name: "configured realm", realm: "https://front.example/auth/token", host: "10.0.0.1:5000", repo: "a/b",
			want: `Bearer realm="https://front.example/auth/token",service="wharf",scope="repository:a/b:pull"`},
		{name: "bad host not echoed", host: "evil.example/x?y", repo: "a",
			want: `Bearer service="wharf",scope="repository:a:pull"`},
		{name: "bad host with configured realm", realm: "https://front.example/token", host: `a"b`,
			want: `Bearer realm="https://front.example/token",service="wharf"`},
		{name: "quote in name escaped", host: "m", repo: `a"b\c`,
			want: `Bearer realm="http://m/token",service="wharf",scope="repository:a\"b\\c:pull"`},
		{name: "unprintable name left out", host: "m", repo: "a\nb",
			want: `Bearer realm="http://m/token",service="wharf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Config{Realm: tt.realm, Tokens: map[string]string{"ci": ciSecret}})
			if err != nil {
				t.Fatal(err)
			}
			r := request("")
			r.Host = tt.host
			r.TLS = nil
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			h := http.Header{}
			a.Challenge(h, r, tt.repo)
			if got := h.Values("WWW-Authenticate"); !cmp.Equal(got, []string{tt.want}) {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.want)
			}
		})
	}

	a, err := New(Config{Service: `my "svc"`})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	a.Challenge(h, request(""), "")
	if got, want := h.Get("WWW-Authenticate"), `Bearer realm="http://mirror.test/token",service="my \"svc\""`; got != want {
		t.Errorf("custom service: %q, want %q", got, want)
	}
}
