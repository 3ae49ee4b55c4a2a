package upstream_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/upstream"
	"github.com/wharf-mirror/wharf/internal/upstream/auth"
)

// bearerSetup is a registry requiring tokens from a token server.
type bearerSetup struct {
	reg    *fakeRegistry
	tokens *tokenServer
	regSrv *httptest.Server
	tokSrv *httptest.Server
}

func newBearerSetup(t *testing.T, challenge func(realm string) []string) *bearerSetup {
	t.Helper()
	s := &bearerSetup{reg: newFakeRegistry(), tokens: newTokenServer("tok")}
	s.tokSrv = serve(t, s.tokens)
	s.reg.tokens = s.tokens
	s.reg.challenge = challenge(s.tokSrv.URL + "/token")
	s.regSrv = serve(t, s.reg)
	s.reg.putManifest("library/nginx", "latest", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	return s
}

func dockerHubChallenge(realm string) []string {
	return []string{`Bearer realm="` + realm + `",service="registry.test",scope="repository:library/nginx:pull"`}
}

func TestBearerChallengeShapes(t *testing.T) {
	tests := []struct {
		name        string
		challenge   func(realm string) []string
		wantService string // "" = parameter absent
		realmPath   string
	}{
		{"docker hub", dockerHubChallenge, "registry.test", "/token"},
		{"ghcr without scope", func(r string) []string { return []string{`Bearer realm="` + r + `",service="registry.test"`} }, "registry.test", "/token"},
		{"gcr unquoted service", func(r string) []string { return []string{`Bearer realm="` + r + `",service=registry.test`} }, "registry.test", "/token"},
		{"nvcr without service", func(r string) []string { return []string{`Bearer realm="` + r + `",scope=""`} }, "", "/token"},
		{"realm with trailing slash", func(r string) []string { return []string{`Bearer realm="` + r + `/",service="s"`} }, "s", "/token/"},
		{"quay basic and bearer", func(r string) []string {
			return []string{`Basic realm="quay", Bearer realm="` + r + `",service="quay"`}
		}, "quay", "/token"},
		{"two header lines", func(r string) []string {
			return []string{`Basic realm="quay"`, `Bearer realm="` + r + `",service="quay"`}
		}, "quay", "/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newBearerSetup(t, tt.challenge)
			c := newClient(t, upstream.Config{URL: s.regSrv.URL})
			desc, body, err := c.GetManifest(t.Context(), "library/nginx", "latest")
			if err != nil {
				t.Fatalf("GetManifest: %v", err)
			}
			if string(body) != testManifest || desc.MediaType != ociManifestType {
				t.Errorf("got %+v %q", desc, body)
			}
			treqs := s.tokens.requests()
			if len(treqs) != 1 {
				t.Fatalf("%d token requests, want 1", len(treqs))
			}
			tr := treqs[0]
			if tr.Path != tt.realmPath {
				t.Errorf("token path %q, want %q", tr.Path, tt.realmPath)
			}
			q, _ := url.ParseQuery(tr.RawQuery)
			want := url.Values{"scope": {"repository:library/nginx:pull"}}
			if tt.wantService != "" {
				want.Set("service", tt.wantService)
			}
			if diff := cmp.Diff(want, q); diff != "" {
				t.Errorf("token query (-want +got):\n%s", diff)
			}
			if h := tr.Header.Get("Authorization"); h != "" {
				t.Errorf("anonymous token request carried Authorization %q", h)
			}
			regReqs := s.reg.requests()
			if got := regReqs[len(regReqs)-1].Header.Get("Authorization"); got != "Bearer tok-1" {
				t.Errorf("registry got Authorization %q, want Bearer tok-1", got)
			}
		})
	}
}

func TestCredentialsGoToTheRealm(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	c := newClient(t, upstream.Config{URL: s.regSrv.URL, Username: "alice", Password: "pw"})
	if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw"))
	if got := s.tokens.requests()[0].Header.Get("Authorization"); got != want {
		t.Errorf("token request Authorization %q, want %q", got, want)
	}
	for _, r := range s.reg.requests() {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Basic") {
			t.Errorf("registry received Basic credentials although it asked for Bearer")
		}
	}
}

func TestBasicChallenge(t *testing.T) {
	reg := newFakeRegistry()
	reg.challenge = []string{`Basic realm="registry"`}
	reg.basic = "alice:pw"
	reg.putManifest("team/app", "v1", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	srv := serve(t, reg)

	c := newClient(t, upstream.Config{URL: srv.URL, Username: "alice", Password: "pw"})
	for range 3 {
		if _, err := c.HeadManifest(t.Context(), "team/app", "v1"); err != nil {
			t.Fatal(err)
		}
	}
	// One 401, then Basic sent proactively.
	if got := countAnonymous(reg.requests()); got != 1 {
		t.Errorf("%d unauthenticated requests, want 1", got)
	}

	t.Run("wrong password", func(t *testing.T) {
		c := newClient(t, upstream.Config{URL: srv.URL, Username: "alice", Password: "wrong"})
		_, err := c.HeadManifest(t.Context(), "team/app", "v1")
		var re *upstream.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized || !upstream.IsTransient(err) {
			t.Fatalf("err = %v, want a transient 401", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		before := reg.count()
		c := newClient(t, upstream.Config{URL: srv.URL})
		_, err := c.HeadManifest(t.Context(), "team/app", "v1")
		var re *upstream.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized {
			t.Fatalf("err = %v, want 401", err)
		}
		if n := reg.count() - before; n != 1 {
			t.Errorf("%d requests, want 1 (nothing to retry with)", n)
		}
	})
}

func TestTokenReusedAcrossRequests(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	c := newClient(t, upstream.Config{URL: s.regSrv.URL})
	const n = 10
	for range n {
		if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.tokens.count(); got != 1 {
		t.Errorf("%d token fetches for %d requests, want 1", got, n)
	}
	if got := countAnonymous(s.reg.requests()); got != 1 {
		t.Errorf("%d challenged requests, want 1: later requests must send the token proactively", got)
	}
}

func TestConcurrentFirstRequestsFetchOneToken(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	c := newClient(t, upstream.Config{URL: s.regSrv.URL})
	const n = 16
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.HeadManifest(t.Context(), "library/nginx", "latest")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := s.tokens.count(); got != 1 {
		t.Errorf("%d token fetches for %d concurrent requests, want 1", got, n)
	}
}

func TestRejectedTokenIsRefreshedOnce(t *testing.T) {
	t.Run("first token revoked", func(t *testing.T) {
		s := newBearerSetup(t, dockerHubChallenge)
		s.reg.reject = func(tok string) bool { return tok == "tok-1" }
		c := newClient(t, upstream.Config{URL: s.regSrv.URL})
		if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
		if got := s.tokens.count(); got != 2 {
			t.Errorf("%d token fetches, want 2", got)
		}
		// tok-2 stays in use.
		if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
		if got := s.tokens.count(); got != 2 {
			t.Errorf("%d token fetches after reuse, want 2", got)
		}
	})
	t.Run("proactive token revoked", func(t *testing.T) {
		s := newBearerSetup(t, dockerHubChallenge)
		revoked := map[string]bool{}
		var mu sync.Mutex
		s.reg.reject = func(tok string) bool { mu.Lock(); defer mu.Unlock(); return revoked[tok] }
		c := newClient(t, upstream.Config{URL: s.regSrv.URL})
		if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		revoked["tok-1"] = true
		mu.Unlock()
		before := s.reg.count()
		if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
		if got := s.tokens.count(); got != 2 {
			t.Errorf("%d token fetches, want 2", got)
		}
		if got := s.reg.count() - before; got != 2 {
			t.Errorf("%d registry requests, want 2 (rejected token, fresh token)", got)
		}
	})
	t.Run("every token rejected", func(t *testing.T) {
		s := newBearerSetup(t, dockerHubChallenge)
		s.reg.reject = func(string) bool { return true }
		c := newClient(t, upstream.Config{URL: s.regSrv.URL})
		_, err := c.HeadManifest(t.Context(), "library/nginx", "latest")
		var re *upstream.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized {
			t.Fatalf("err = %v, want 401 ResponseError", err)
		}
		if !upstream.IsTransient(err) {
			t.Errorf("a 401 from upstream must allow serving stale content")
		}
		if got, want := s.tokens.count(), 2; got != want {
			t.Errorf("%d token fetches, want %d", got, want)
		}
		if got, want := s.reg.count(), 3; got != want {
			t.Errorf("%d registry requests, want %d", got, want)
		}
	})
}

func TestAccessTokenWithoutExpiry(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	s.tokens.body = func(tok string) string { return `{"access_token":"` + tok + `"}` }
	clock := newFakeClock()
	c := newClient(t, upstream.Config{URL: s.regSrv.URL, Now: clock.Now})
	head := func() {
		t.Helper()
		if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
	}
	head()
	clock.Advance(45 * time.Second)
	head()
	if got := s.tokens.count(); got != 1 {
		t.Fatalf("%d token fetches within the default 60 s, want 1", got)
	}
	clock.Advance(20 * time.Second)
	head()
	if got := s.tokens.count(); got != 2 {
		t.Fatalf("%d token fetches after 65 s, want 2", got)
	}
	// The expired token was replaced without a 401 round trip.
	if got := countAnonymous(s.reg.requests()); got != 1 {
		t.Errorf("%d challenged requests, want 1", got)
	}
}

func TestPingRemembersChallenge(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	c := newClient(t, upstream.Config{URL: s.regSrv.URL})
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if s.tokens.count() != 0 {
		t.Errorf("Ping fetched a token")
	}
	if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	reqs := s.reg.requests()
	if len(reqs) != 2 || reqs[1].Header.Get("Authorization") == "" {
		t.Errorf("after Ping the first request should carry a token: %d requests", len(reqs))
	}
}

func TestRealmGuard(t *testing.T) {
	tokens := newTokenServer("tok")
	tokSrv := serve(t, tokens) // a loopback realm
	reg := newFakeRegistry()
	reg.tokens = tokens
	reg.challenge = []string{`Bearer realm="` + tokSrv.URL + `/token",service="registry.test"`}
	reg.putManifest("library/nginx", "latest", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	regSrv := serve(t, reg)
	// The registry has a public name; its challenge names a loopback realm.
	tr := namedHosts(t, map[string]*httptest.Server{"registry.test": regSrv})

	c := newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr})
	_, err := c.HeadManifest(t.Context(), "library/nginx", "latest")
	if !errors.Is(err, auth.ErrRealmNotAllowed) {
		t.Fatalf("err = %v, want ErrRealmNotAllowed", err)
	}
	if upstream.IsTransient(err) {
		t.Errorf("a refused realm is a configuration problem, not a transient failure")
	}
	if tokens.count() != 0 {
		t.Fatalf("refused realm was contacted")
	}

	c = newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr,
		TokenRealms: []string{strings.TrimPrefix(tokSrv.URL, "http://")}})
	if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
		t.Fatalf("allow-listed realm: %v", err)
	}
}

func TestTokenServerFailure(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	s.tokens.status = http.StatusServiceUnavailable
	c := newClient(t, upstream.Config{URL: s.regSrv.URL, Retries: 1})
	_, err := c.HeadManifest(t.Context(), "library/nginx", "latest")
	var te *auth.TokenError
	if !errors.As(err, &te) || te.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want a TokenError 503", err)
	}
	if !upstream.IsTransient(err) {
		t.Errorf("a failing token service must allow serving stale content")
	}
	if got := s.tokens.count(); got != 2 {
		t.Errorf("%d token requests, want 2 (one retry)", got)
	}
}

// A challenge that cannot be answered (its realm is refused) is not
// remembered: once the registry challenges sensibly again, requests work
// without a restart.
func TestRefusedChallengeIsNotRemembered(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	var broken atomic.Bool
	broken.Store(true)
	s.reg.hook = func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if !broken.Load() {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ftp://127.0.0.1/token",service="registry.test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
	c := newClient(t, upstream.Config{URL: s.regSrv.URL})
	for range 2 {
		if _, _, err := c.GetManifest(t.Context(), "library/nginx", "latest"); !errors.Is(err, auth.ErrRealmNotAllowed) {
			t.Fatalf("GetManifest with a refused realm: %v, want ErrRealmNotAllowed", err)
		}
	}
	broken.Store(false)
	if _, _, err := c.GetManifest(t.Context(), "library/nginx", "latest"); err != nil {
		t.Fatalf("GetManifest after the registry was fixed: %v", err)
	}
}
