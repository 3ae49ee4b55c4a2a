package registrytest

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTransport is a transport of the test's own, closed at the end, so that
// no keep-alive goroutine outlives the test. Like wharf's upstream client it
// never asks for transfer compression (client-compat §6.1).
func newTransport(t *testing.T) *http.Transport {
	t.Helper()
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// plainClient does not follow redirects, so tests see the 307s.
func plainClient(t *testing.T) *http.Client {
	return &http.Client{
		Transport:     newTransport(t),
		Timeout:       time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, c *http.Client, method, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return resp, body
}

// fetchToken runs the token exchange by hand.
func fetchToken(t *testing.T, c *http.Client, reg *Registry, service, scope, user, pass string) string {
	t.Helper()
	q := url.Values{"service": {service}}
	if scope != "" {
		q.Set("scope", scope)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.TokenURL()+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token request: %s", resp.Status)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func sha256Digest(t *testing.T, r io.Reader) (digest.Digest, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return digest.NewDigest(digest.SHA256, h), n
}

func toDigest(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

// TestPullWithRemote pulls an image and an index through every kind of
// upstream with go-containerregistry's remote package, which speaks the
// token flow (including the redirect target's own challenge) and follows
// redirects, and checks digests and where the requests went.
func TestPullWithRemote(t *testing.T) {
	const user, pass = "alice", "s3cret"
	tests := []struct {
		name string
		opts Options
	}{
		{"anonymous", Options{}},
		{"anonymous token", Options{Auth: true}},
		{"credentials", Options{Auth: true, Username: user, Password: pass}},
		{"blob redirect", Options{Redirect: RedirectBlobs}},
		{"docker hub", Options{Auth: true, Username: user, Password: pass, Redirect: RedirectBlobs, RateLimit: true, TokenTTL: time.Minute}},
		{"blob redirect with storage auth", Options{Auth: true, Redirect: RedirectBlobs, StorageAuth: true}},
		{"registry.k8s.io", Options{Redirect: RedirectAll}},
		// An anonymous registry redirecting to a host that challenges
		// (Redirect + StorageAuth without Auth) is not here: remote only
		// answers a redirect target's challenge when the registry itself
		// used Bearer auth. TestStorageChallengeBehindAnonymousRegistry
		// walks that flow by hand.
		{"registry.k8s.io to artifact registry", Options{Auth: true, Redirect: RedirectAll, StorageAuth: true}},
		{"everything", Options{Auth: true, Username: user, Password: pass, Redirect: RedirectAll, StorageAuth: true, RateLimit: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := New(t, tc.opts)
			img := RandomImage(t, 42, 1000, 300<<10)
			imgDigest := reg.PushImage(t, "library/alpine", "3.20", img)
			idx := RandomIndex(t, 7, "linux/amd64", "linux/arm64", "linux/arm/v7")
			idxDigest := reg.PushIndex(t, "library/multi", "latest", idx)

			opts := []remote.Option{remote.WithTransport(newTransport(t)), remote.WithContext(t.Context())}
			if tc.opts.Username != "" {
				opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
			}

			ref, err := name.ParseReference(reg.Host()+"/library/alpine:3.20", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			got, err := remote.Image(ref, opts...)
			if err != nil {
				t.Fatalf("remote.Image: %v", err)
			}
			if d, _ := got.Digest(); toDigest(d) != imgDigest {
				t.Errorf("image digest %s, pushed %s", d, imgDigest)
			}
			layers, err := got.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layers {
				want, _ := l.Digest()
				rc, err := l.Compressed()
				if err != nil {
					t.Fatalf("layer %s: %v", want, err)
				}
				d, _ := sha256Digest(t, rc)
				rc.Close()
				if d != toDigest(want) {
					t.Errorf("layer bytes hash to %s, want %s", d, want)
				}
			}

			iref, err := name.ParseReference(reg.Host()+"/library/multi:latest", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			gotIdx, err := remote.Index(iref, opts...)
			if err != nil {
				t.Fatalf("remote.Index: %v", err)
			}
			if d, _ := gotIdx.Digest(); toDigest(d) != idxDigest {
				t.Errorf("index digest %s, pushed %s", d, idxDigest)
			}
			im, err := gotIdx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			for _, desc := range im.Manifests {
				child, err := gotIdx.Image(desc.Digest)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := child.ConfigFile()
				if err != nil {
					t.Fatalf("child %s config: %v", desc.Digest, err)
				}
				if cfg.Architecture != desc.Platform.Architecture {
					t.Errorf("child %s is %s, index says %s", desc.Digest, cfg.Architecture, desc.Platform.Architecture)
				}
			}

			bigLayer := toDigest(img.(*syntheticImage).layers[1].digest)
			onStorage := func(Request) bool { return true }
			switch tc.opts.Redirect {
			case RedirectNone:
				if n := reg.Count(On(ServerStorage, onStorage)); n != 0 {
					t.Errorf("%d requests reached the storage host without redirects", n)
				}
				if n := reg.Count(BlobGETs(bigLayer)); n != 1 {
					t.Errorf("%d GETs of the layer, want 1", n)
				}
			case RedirectBlobs:
				if n := reg.Count(On(ServerRegistry, BlobGETs(bigLayer))); n != 1 {
					t.Errorf("registry saw %d GETs of the layer, want 1", n)
				}
				if n := reg.Count(On(ServerStorage, BlobGETs(bigLayer))); n < 1 {
					t.Errorf("storage saw %d GETs of the layer, want at least 1", n)
				}
				if n := reg.Count(On(ServerStorage, ManifestGETs())); n != 0 {
					t.Errorf("storage saw %d manifest GETs, want 0", n)
				}
			case RedirectAll:
				if n := reg.Count(On(ServerStorage, ManifestGETs())); n < 1 {
					t.Errorf("storage saw %d manifest GETs, want at least 1", n)
				}
			}
			if n := reg.Count(TokenRequests()); tc.opts.Auth || tc.opts.StorageAuth {
				if n == 0 {
					t.Error("no token requests")
				}
			} else if n != 0 {
				t.Errorf("%d token requests to an anonymous registry", n)
			}
			storageTokens := reg.Count(func(r Request) bool {
				return r.Server == ServerToken && strings.Contains(r.RawQuery, "service="+StorageService)
			})
			if tc.opts.StorageAuth && storageTokens == 0 {
				t.Error("the storage host's challenge was never answered")
			}
			for _, r := range reg.Requests() {
				if r.Server == ServerStorage && !tc.opts.StorageAuth && r.Header.Get("Authorization") != "" {
					t.Errorf("storage host received credentials: %s %s", r.Method, r.Path)
				}
			}
		})
	}
}

// TestPushOverHTTP pushes with a real client, through the token flow with
// push scope, and pulls the result back.
func TestPushOverHTTP(t *testing.T) {
	reg := New(t, Options{Auth: true, Username: "bob", Password: "pw"})
	opts := []remote.Option{
		remote.WithTransport(newTransport(t)),
		remote.WithContext(t.Context()),
		remote.WithAuth(&authn.Basic{Username: "bob", Password: "pw"}),
	}
	ref, err := name.ParseReference(reg.Host()+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := RandomImage(t, 5, 100<<10, 10)
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("remote.Write: %v", err)
	}
	want, _ := img.Digest()
	c := plainClient(t)
	tok := fetchToken(t, c, reg, RegistryService, "repository:team/app:pull", "bob", "pw")
	resp, _ := do(t, c, http.MethodHead, reg.URL()+"/v2/team/app/manifests/v1", "Authorization", "Bearer "+tok)
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != http.StatusOK || got != want.String() {
		t.Fatalf("HEAD after push: %s, digest %q, want %s", resp.Status, got, want)
	}
	l := img.(*syntheticImage).layers[0]
	resp, body := do(t, c, http.MethodGet, reg.URL()+"/v2/team/app/blobs/"+l.digest.String(), "Authorization", "Bearer "+tok)
	if d := digest.FromBytes(body); resp.StatusCode != http.StatusOK || d.String() != l.digest.String() {
		t.Fatalf("GET layer after push: %s, digest %s", resp.Status, d)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"storage auth without redirect", Options{StorageAuth: true}},
		{"negative ttl", Options{TokenTTL: -time.Second}},
		{"password without user", Options{Password: "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() { // Fatalf ends the goroutine it runs on.
				defer close(done)
				New(ft, tc.opts)
			}()
			<-done
			if ft.fatal == "" {
				t.Error("New accepted the options")
			}
		})
	}
}

// fatalRecorder records Fatalf instead of failing the test. Run what calls
// it on a goroutine of its own: Fatalf ends that goroutine.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
