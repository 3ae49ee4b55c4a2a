package registrytest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChallenge(t *testing.T) {
	reg := New(t, Options{Auth: true})
	realm := reg.TokenURL()
	if !strings.HasPrefix(realm, "http://localhost:") {
		t.Errorf("realm %q is not on localhost", realm)
	}
	tests := []struct {
		method, path string
		want         string
	}{
		{http.MethodGet, "/v2/", `Bearer realm="` + realm + `",service="registry.test"`},
		{http.MethodGet, "/v2/library/alpine/manifests/latest", `Bearer realm="` + realm + `",service="registry.test",scope="repository:library/alpine:pull"`},
		{http.MethodHead, "/v2/a/b/c/blobs/sha256:" + strings.Repeat("0", 64), `Bearer realm="` + realm + `",service="registry.test",scope="repository:a/b/c:pull"`},
		{http.MethodGet, "/v2/x/tags/list", `Bearer realm="` + realm + `",service="registry.test",scope="repository:x:pull"`},
		{http.MethodPost, "/v2/x/blobs/uploads/", `Bearer realm="` + realm + `",service="registry.test",scope="repository:x:pull,push"`},
	}
	c := plainClient(t)
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body := do(t, c, tc.method, reg.URL()+tc.path)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %s, want 401", resp.Status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.want {
				t.Errorf("WWW-Authenticate\n got %s\nwant %s", got, tc.want)
			}
			if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version %q", got)
			}
			if tc.method != http.MethodHead && !strings.Contains(string(body), `"UNAUTHORIZED"`) {
				t.Errorf("body %s", body)
			}
		})
	}
}

func TestTokenServer(t *testing.T) {
	reg := New(t, Options{Auth: true, Username: "alice", Password: "pw"})
	c := plainClient(t)
	tokenURL := func(service string) string {
		return reg.TokenURL() + "?" + url.Values{"service": {service}, "scope": {"repository:a:pull"}}.Encode()
	}
	tests := []struct {
		name       string
		service    string
		user, pass string
		want       int
	}{
		{"anonymous", RegistryService, "", "", http.StatusUnauthorized},
		{"wrong password", RegistryService, "alice", "nope", http.StatusUnauthorized},
		{"right password", RegistryService, "alice", "pw", http.StatusOK},
		{"storage is anonymous", StorageService, "", "", http.StatusOK},
		{"unknown service", "elsewhere", "alice", "pw", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, tokenURL(tc.service), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %s, want %d", resp.Status, tc.want)
			}
			if tc.want != http.StatusOK {
				return
			}
			var tok struct {
				Token       string `json:"token"`
				AccessToken string `json:"access_token"`
				ExpiresIn   int    `json:"expires_in"`
				IssuedAt    string `json:"issued_at"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
				t.Fatal(err)
			}
			if tok.Token == "" || tok.Token != tok.AccessToken || tok.ExpiresIn != 300 || tok.IssuedAt == "" {
				t.Errorf("token response %+v", tok)
			}
		})
	}
	if n := reg.Count(TokenRequests()); n != len(tests) {
		t.Errorf("logged %d token requests, want %d", n, len(tests))
	}
}

// TestTokensBoundToService: the registry.k8s.io → Artifact Registry case;
// each host accepts only its own service's tokens (client-compat §6.1).
func TestTokensBoundToService(t *testing.T) {
	reg := New(t, Options{Auth: true, Redirect: RedirectAll, StorageAuth: true})
	img := RandomImage(t, 1, 10)
	reg.PushImage(t, "pause", "3.9", img)
	c := plainClient(t)
	registryTok := fetchToken(t, c, reg, RegistryService, "repository:pause:pull", "", "")
	storageTok := fetchToken(t, c, reg, StorageService, "repository:pause:pull", "", "")
	path := "/v2/pause/manifests/3.9"

	tests := []struct {
		name       string
		base       string
		token      string
		wantStatus int
		wantError  string // error= in the challenge
	}{
		{"registry token at registry", reg.URL(), registryTok, http.StatusTemporaryRedirect, ""},
		{"storage token at registry", reg.URL(), storageTok, http.StatusUnauthorized, "invalid_token"},
		{"no token at storage", reg.StorageURL(), "", http.StatusUnauthorized, ""},
		{"registry token at storage", reg.StorageURL(), registryTok, http.StatusUnauthorized, "invalid_token"},
		{"storage token at storage", reg.StorageURL(), storageTok, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.token != "" {
				hdr = []string{"Authorization", "Bearer " + tc.token}
			}
			resp, _ := do(t, c, http.MethodGet, tc.base+path, hdr...)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %s, want %d", resp.Status, tc.wantStatus)
			}
			ch := resp.Header.Get("WWW-Authenticate")
			if tc.wantStatus == http.StatusUnauthorized {
				service := RegistryService
				if tc.base == reg.StorageURL() {
					service = StorageService
				}
				if !strings.Contains(ch, `service="`+service+`"`) || !strings.Contains(ch, `scope="repository:pause:pull"`) {
					t.Errorf("challenge %q", ch)
				}
			}
			if tc.wantError != "" && !strings.Contains(ch, `error="`+tc.wantError+`"`) {
				t.Errorf("challenge %q lacks error=%q", ch, tc.wantError)
			}
		})
	}
}

func TestTokenScopeAndRevocation(t *testing.T) {
	reg := New(t, Options{Auth: true})
	reg.PushBlob(t, "a", []byte("x"))
	c := plainClient(t)
	tok := fetchToken(t, c, reg, RegistryService, "repository:a:pull", "", "")
	auth := []string{"Authorization", "Bearer " + tok}

	if resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/", auth...); resp.StatusCode != http.StatusOK {
		t.Errorf("/v2/ with a token: %s", resp.Status)
	}
	if resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/a/tags/list", auth...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("tags of a repository without manifests: %s, want 404", resp.Status)
	}
	resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/b/tags/list", auth...)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(ch, `error="insufficient_scope"`) {
		t.Errorf("other repository: %s, %q", resp.Status, ch)
	}
	resp, _ = do(t, c, http.MethodPost, reg.URL()+"/v2/a/blobs/uploads/", auth...)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(ch, `scope="repository:a:pull,push"`) {
		t.Errorf("push with a pull token: %s, %q", resp.Status, ch)
	}

	reg.RevokeTokens()
	resp, _ = do(t, c, http.MethodGet, reg.URL()+"/v2/", auth...)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(ch, `error="invalid_token"`) {
		t.Errorf("revoked token: %s, %q", resp.Status, ch)
	}
}

func TestParseScopes(t *testing.T) {
	got := parseScopes([]string{
		"repository:library/alpine:pull",
		"repository:a:pull,push repository:b:pull",
		"registry:catalog:*",
		"repository:a:pull",
		"repository:localhost:5000/x:pull",
		"repository::pull",
		"garbage",
	})
	want := map[string][]string{
		"library/alpine":   {"pull"},
		"a":                {"pull", "push"},
		"b":                {"pull"},
		"localhost:5000/x": {"pull"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseScopes (-want +got):\n%s", diff)
	}
}

// TestStorageChallengeBehindAnonymousRegistry walks registry.k8s.io's flow
// by hand: the registry needs no token and redirects; the storage host
// challenges; an anonymous storage token opens it.
func TestStorageChallengeBehindAnonymousRegistry(t *testing.T) {
	reg := New(t, Options{Redirect: RedirectAll, StorageAuth: true})
	d := reg.PushImage(t, "pause", "3.9", RandomImage(t, 1, 10))
	c := plainClient(t)
	resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/pause/manifests/3.9")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || strings.Contains(loc, signatureParam+"=") {
		t.Fatalf("registry: %s, Location %q", resp.Status, loc)
	}
	resp, _ = do(t, c, http.MethodGet, loc)
	want := `Bearer realm="` + reg.TokenURL() + `",service="storage.test",scope="repository:pause:pull"`
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || got != want {
		t.Fatalf("storage: %s, challenge %q, want %q", resp.Status, got, want)
	}
	tok := fetchToken(t, c, reg, StorageService, "repository:pause:pull", "", "")
	resp, body := do(t, c, http.MethodGet, loc, "Authorization", "Bearer "+tok)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != d.String() || len(body) == 0 {
		t.Errorf("storage with token: %s, digest %q", resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
}
