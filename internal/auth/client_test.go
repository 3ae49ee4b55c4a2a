package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registryServer is a minimal registry in front of a: /token is the token
// endpoint, /v2/ answers 200 to authenticated clients and challenges the
// others, and /v2/<name>/manifests/<ref> serves one manifest to
// authenticated clients.
func registryServer(t *testing.T, a *Authenticator) *httptest.Server {
	t.Helper()
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	sum := sha256.Sum256(manifest)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	mux := http.NewServeMux()
	mux.Handle("/token", a.TokenHandler())
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		repo := ""
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v2/"); ok {
			if i := strings.Index(rest, "/manifests/"); i > 0 {
				repo = rest[:i]
			}
		}
		p, err := a.Authenticate(r)
		var tmf *TooManyFailuresError
		switch {
		case errors.As(err, &tmf):
			w.Header().Set("Retry-After", strconv.Itoa(int(tmf.RetryAfter.Seconds())+1))
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
			return
		case err != nil || p.IsAnonymous():
			a.Challenge(w.Header(), r, repo)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		if repo != "test/app" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(manifest)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestRealClient drives the token flow with go-containerregistry's
// remote/transport packages: ping → 401 challenge → GET /token with Basic
// credentials → Bearer requests.
func TestRealClient(t *testing.T) {
	tests := []struct {
		name   string
		auth   authn.Authenticator
		wantOK bool
	}{
		{"user", &authn.Basic{Username: "alice", Password: alicePass}, true},
		{"static token as password", &authn.Basic{Username: "anything", Password: ciSecret}, true},
		{"wrong password", &authn.Basic{Username: "alice", Password: "wrong-password"}, false},
		{"anonymous with anonymous tokens", authn.Anonymous, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			srv := registryServer(t, f.a)
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/test/app:v1", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Head(ref, remote.WithAuth(tt.auth), remote.WithTransport(tr), remote.WithContext(t.Context()))
			if tt.wantOK {
				if err != nil {
					t.Fatalf("Head: %v", err)
				}
				if desc.Size == 0 || desc.Digest.Algorithm != "sha256" {
					t.Errorf("descriptor %+v", desc)
				}
				return
			}
			if err == nil {
				t.Fatal("Head succeeded, want an authentication error")
			}
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
				t.Errorf("Head error %v, want a 401 transport.Error", err)
			}
			noSecrets(t, "log", f.logs.String(), "wrong-password")
		})
	}
}
