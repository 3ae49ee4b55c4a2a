package upstream_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// exchange is what an Observer was told about one HTTP exchange.
type exchange struct {
	Upstream, Kind string
	Status         int
	Failed         bool
}

// observer records exchanges.
type observer struct {
	mu  sync.Mutex
	got []exchange
	neg bool // an elapsed time was negative
}

func (o *observer) UpstreamRequest(up, kind string, status int, elapsed time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, exchange{up, kind, status, err != nil})
	o.neg = o.neg || elapsed < 0
}

func (o *observer) take() []exchange {
	o.mu.Lock()
	defer o.mu.Unlock()
	got := o.got
	o.got = nil
	return got
}

// TestObserverSeesEveryExchange: every hop is reported with the kind of the
// request it belongs to: the 401 that starts authentication, the token
// request, a redirect and its target, the ping; a request that gets no
// response is reported with status 0 and its error.
func TestObserverSeesEveryExchange(t *testing.T) {
	s := newBearerSetup(t, dockerHubChallenge)
	layer := []byte("layer bytes")
	d := s.reg.putBlob(layer)
	cdn := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(layer) }))
	s.reg.redirect = func(r *http.Request) string {
		if r.Method == http.MethodGet && r.URL.Path == "/v2/library/nginx/blobs/"+d.String() {
			return cdn.URL + "/layer"
		}
		return ""
	}
	obs := &observer{}
	c := newClient(t, upstream.Config{Name: "docker.io", URL: s.regSrv.URL, Observer: obs})
	ctx := t.Context()

	if _, _, err := c.GetManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	body, _, err := c.GetBlob(ctx, "library/nginx", d)
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	if _, err := c.HeadBlob(ctx, "library/nginx", "sha256:"+sixtyFourZeros); err == nil {
		t.Fatal("HEAD of a missing blob succeeded")
	}
	resp, err := c.Do(ctx, http.MethodGet, "library/nginx", "tags/list", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Do(ctx, http.MethodGet, "library/nginx", "referrers/"+d.String(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	want := []exchange{
		{"docker.io", upstream.KindManifest, 401, false},
		{"docker.io", upstream.KindToken, 200, false},
		{"docker.io", upstream.KindManifest, 200, false},
		{"docker.io", upstream.KindBlob, 307, false},
		{"docker.io", upstream.KindBlob, 200, false},
		{"docker.io", upstream.KindBlob, 404, false},
		{"docker.io", upstream.KindTags, 404, false},
		{"docker.io", upstream.KindReferrers, 404, false},
		{"docker.io", upstream.KindPing, 401, false},
	}
	if diff := cmp.Diff(want, obs.take()); diff != "" {
		t.Errorf("exchanges (-want +got):\n%s", diff)
	}

	// Nothing listens any more: no response, an error.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c = newClient(t, upstream.Config{Name: "ghcr.io", URL: dead.URL, Observer: obs})
	if err := c.Ping(ctx); !errors.Is(err, upstream.ErrUnreachable) {
		t.Fatalf("Ping of a closed port: %v", err)
	}
	if diff := cmp.Diff([]exchange{{"ghcr.io", upstream.KindPing, 0, true}}, obs.take()); diff != "" {
		t.Errorf("exchanges (-want +got):\n%s", diff)
	}
	if obs.neg {
		t.Error("negative elapsed time")
	}
}

const sixtyFourZeros = "0000000000000000000000000000000000000000000000000000000000000000"
