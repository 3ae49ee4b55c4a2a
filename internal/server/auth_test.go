package server_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

const ciToken = "ci-token-0123456789abcdef"

// authHarness is the standard harness with client authentication on:
// users alice and bob (htpasswd, bcrypt), the static token "ci", ghcr.io
// holding wharf's private credentials and open to alice and ci only,
// docker.io and registry.k8s.io open to anonymous clients.
func authHarness(t *testing.T, configure func(*config.Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	var lines []string
	for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u[0]+":"+string(hash))
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := defaultOptions()
	o.ghcr.Username, o.ghcr.Password = "bot", "ghcr-secret"
	o.configure = func(c *config.Config) {
		c.Auth.HtpasswdFile = htpasswd
		c.Auth.Tokens = []config.StaticToken{{Name: "ci", Token: ciToken}}
		c.Limits.AuthFailures = 1000
		g := c.Upstreams["ghcr.io"]
		g.Username, g.Password = "bot", "ghcr-secret"
		g.Access.Users = []string{"alice", "ci"}
		if configure != nil {
			configure(c)
		}
	}
	return newHarness(t, o)
}

func basic(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

// token runs the token endpoint the way docker does (GET with Basic) and
// returns the token.
func (h *harness) token(t *testing.T, authorization string) string {
	t.Helper()
	var hdr []string
	if authorization != "" {
		hdr = []string{"Authorization", authorization}
	}
	r := h.do("GET", "/token?service=wharf&scope=repository:ghcr.io/org/private:pull", hdr...)
	expectStatus(t, r, http.StatusOK)
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal(r.body, &tok); err != nil || tok.Token == "" || tok.AccessToken != tok.Token || tok.ExpiresIn <= 0 {
		t.Fatalf("token answer %s: %v", r.body, err)
	}
	return tok.Token
}

func TestClientAuth(t *testing.T) {
	h := authHarness(t, nil)
	private := registrytest.RandomImage(t, 601, 7000)
	pd := h.ghcr.PushImage(t, "org/private", "v1", private)
	h.hub.PushImage(t, "library/public", "1", registrytest.RandomImage(t, 602, 5000))
	ld, layer := layerOf(t, private, 0)
	host := strings.TrimPrefix(h.srv.URL, "http://")

	// /v2/ without credentials challenges, naming wharf's own token
	// endpoint on the host the client used.
	r := h.do("GET", "/v2/")
	expectError(t, r, http.StatusUnauthorized, "UNAUTHORIZED")
	if got, want := r.Header.Get("WWW-Authenticate"), `Bearer realm="http://`+host+`/token",service="wharf"`; got != want {
		t.Errorf("challenge %q, want %q", got, want)
	}

	// Anonymous: a token without credentials opens /v2/ and the public
	// upstreams, and not ghcr.io (its credentials make it private).
	anon := "Bearer " + h.token(t, "")
	expectStatus(t, h.do("GET", "/v2/", "Authorization", anon), http.StatusOK)
	for _, hdr := range [][]string{nil, {"Authorization", anon}} {
		expectStatus(t, h.do("GET", "/v2/docker.io/library/public/manifests/1", hdr...), http.StatusOK)
		r := h.do("GET", "/v2/ghcr.io/org/private/manifests/v1", hdr...)
		expectError(t, r, http.StatusUnauthorized, "UNAUTHORIZED")
		if want := `scope="repository:ghcr.io/org/private:pull"`; !strings.Contains(r.Header.Get("WWW-Authenticate"), want) {
			t.Errorf("challenge %q lacks %s", r.Header.Get("WWW-Authenticate"), want)
		}
	}
	if n := h.ghcr.Count(func(r registrytest.Request) bool { return strings.Contains(r.Path, "/org/private/") }); n != 0 {
		t.Fatalf("an anonymous request reached the private upstream %d times", n)
	}

	// alice through the token flow; ci with its static token as Bearer
	// and as a password.
	alice := "Bearer " + h.token(t, basic("alice", "alice-pw"))
	for _, authz := range []string{alice, "Bearer " + ciToken, basic("anything", ciToken), basic("alice", "alice-pw")} {
		r := h.do("GET", "/v2/ghcr.io/org/private/manifests/v1", "Authorization", authz)
		expectStatus(t, r, http.StatusOK)
		if sha(r.body) != pd {
			t.Fatalf("private manifest digest %s, want %s", sha(r.body), pd)
		}
		r = h.do("GET", "/v2/ghcr.io/org/private/blobs/"+ld.String(), "Authorization", authz)
		expectStatus(t, r, http.StatusOK)
		if string(r.body) != string(layer) {
			t.Fatal("private layer differs")
		}
	}

	// bob is a valid user, but not on ghcr.io's list.
	bob := "Bearer " + h.token(t, basic("bob", "bob-pw"))
	expectStatus(t, h.do("GET", "/v2/", "Authorization", bob), http.StatusOK)
	expectStatus(t, h.do("GET", "/v2/docker.io/library/public/manifests/1", "Authorization", bob), http.StatusOK)
	expectError(t, h.do("GET", "/v2/ghcr.io/org/private/manifests/v1", "Authorization", bob), http.StatusForbidden, "DENIED")

	// The private layer is cached now. Asked by digest through every
	// other route, it reaches only clients the routed upstream admits:
	// through docker.io the repository does not have it (and Docker Hub
	// does not confirm it), through ghcr.io's other names the policy is
	// ghcr.io's.
	for _, c := range []struct {
		path   string
		hdr    []string
		status int
		code   string
	}{
		{"/v2/docker.io/library/public/blobs/" + ld.String(), nil, 404, "BLOB_UNKNOWN"},
		{"/v2/library/public/blobs/" + ld.String(), []string{"Authorization", bob}, 404, "BLOB_UNKNOWN"},
		{"/v2/org/private/blobs/" + ld.String() + "?ns=ghcr.io", nil, 401, "UNAUTHORIZED"},
		{"/ghcr.io/v2/org/private/blobs/" + ld.String(), nil, 401, "UNAUTHORIZED"},
		{"/v2/org/private/blobs/" + ld.String(), []string{"Host", "ghcr.mirror.test"}, 401, "UNAUTHORIZED"},
		{"/v2/ghcr.io/org/other/blobs/" + ld.String(), nil, 401, "UNAUTHORIZED"},
		{"/v2/ghcr.io/org/other/blobs/" + ld.String(), []string{"Authorization", bob}, 403, "DENIED"},
		{"/v2/org/private/blobs/" + ld.String() + "?ns=ghcr.io", []string{"Authorization", bob}, 403, "DENIED"},
	} {
		r := h.do("GET", c.path, c.hdr...)
		expectError(t, r, c.status, c.code)
	}

	// Bad credentials are refused, never downgraded to anonymous, even
	// on a public upstream.
	for _, bad := range []string{
		"Bearer", "Bearer ", "Bearer not-a-token", "Bearer " + strings.Repeat("x", 20000),
		"Basic", "Basic !!!", basic("alice", "wrong"), basic("nobody", "x"), basic("", ""),
		"Digest username=alice", "bearer" + alice[6:] + "x", alice + "x",
	} {
		r := h.do("GET", "/v2/docker.io/library/public/manifests/1", "Authorization", bad)
		expectError(t, r, http.StatusUnauthorized, "UNAUTHORIZED")
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer realm=") {
			t.Errorf("Authorization %.30q: no challenge", bad)
		}
	}
	// docker login with a wrong password: the token endpoint says 401.
	for _, bad := range []string{basic("alice", "wrong"), basic("nobody", "x"), "Basic !!!"} {
		r := h.do("GET", "/token?service=wharf", "Authorization", bad)
		if r.StatusCode != http.StatusUnauthorized && r.StatusCode != http.StatusBadRequest {
			t.Errorf("token with %q: %d, want 401 or 400", bad, r.StatusCode)
		}
	}
}

// A real client library drives the token flow: go-containerregistry with
// Basic credentials logs in and pulls the private image; bob is denied.
func TestClientAuthTokenFlowWithClientLibrary(t *testing.T) {
	h := authHarness(t, nil)
	pd := h.ghcr.PushImage(t, "org/private", "v1", registrytest.RandomImage(t, 611, 4000))
	host := strings.TrimPrefix(h.srv.URL, "http://")
	ref, err := name.ParseReference(host+"/ghcr.io/org/private:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"}))
	if err != nil {
		t.Fatalf("pull as alice: %v", err)
	}
	if d, err := img.Digest(); err != nil || d.String() != pd.String() {
		t.Fatalf("digest %v %v, want %s", d, err, pd)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer as alice: %v", err)
		}
		rc.Close()
	}
	if _, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "bob", Password: "bob-pw"})); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("pull as bob: %v, want DENIED", err)
	}
	if _, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "nope"})); err == nil {
		t.Error("pull with a wrong password succeeded")
	}
	if _, err := remote.Image(ref); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("anonymous pull: %v, want UNAUTHORIZED", err)
	}
}

// Password guessing: after auth_failures failed attempts from one address
// the client gets 429 with Retry-After, even with the right password.
func TestClientAuthFailureLimit(t *testing.T) {
	h := authHarness(t, func(c *config.Config) { c.Limits.AuthFailures = 3 })
	for i := range 3 {
		r := h.do("GET", "/token?service=wharf", "Authorization", basic("alice", "guess"+string(rune('a'+i))))
		expectStatus(t, r, http.StatusUnauthorized)
	}
	r := h.do("GET", "/token?service=wharf", "Authorization", basic("alice", "alice-pw"))
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %d Retry-After %q, want 429 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	r = h.do("GET", "/v2/docker.io/library/x/manifests/1", "Authorization", basic("alice", "alice-pw"))
	expectError(t, r, http.StatusTooManyRequests, "TOOMANYREQUESTS")
}

// Authentication off (the default): everyone is anonymous, an
// Authorization header is ignored, /v2/ does not challenge, and an
// upstream explicitly shared with everyone serves with wharf's
// credentials.
func TestClientAuthOff(t *testing.T) {
	o := defaultOptions()
	o.ghcr.Username, o.ghcr.Password = "bot", "ghcr-secret"
	o.configure = func(c *config.Config) {
		g := c.Upstreams["ghcr.io"]
		g.Username, g.Password = "bot", "ghcr-secret"
		yes := true
		g.Access.Anonymous = &yes
	}
	h := newHarness(t, o)
	h.ghcr.PushImage(t, "org/shared", "v1", registrytest.RandomImage(t, 621, 3000))
	expectStatus(t, h.do("GET", "/v2/"), http.StatusOK)
	expectStatus(t, h.do("GET", "/v2/ghcr.io/org/shared/manifests/v1", "Authorization", "Basic garbage"), http.StatusOK)
	if r := h.do("GET", "/token"); r.StatusCode != http.StatusNotFound {
		t.Errorf("/token with authentication off: %d, want 404", r.StatusCode)
	}
}
