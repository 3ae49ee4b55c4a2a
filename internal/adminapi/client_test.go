package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/adminapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// seen is one request as the fake server received it.
type seen struct {
	Method, Path, Query, Auth, ContentType string
	Body                                   string
}

// fake answers every request with status and body, and records it.
type fake struct {
	status  int
	body    string
	header  http.Header
	request seen
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.request = seen{
		Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
		Body: string(b),
	}
	for k, v := range f.header {
		w.Header()[k] = v
	}
	w.WriteHeader(f.status)
	io.WriteString(w, f.body)
}

func newClient(t *testing.T, f *fake) *adminapi.Client {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return &adminapi.Client{BaseURL: srv.URL, Token: "s3cret", HTTP: srv.Client()}
}

var when = time.Date(2026, 11, 23, 17, 0, 0, 0, time.UTC)

// TestClientEndpoints: each method sends its endpoint's method, path,
// query and body with the bearer token and decodes the answer.
func TestClientEndpoints(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		call   func(c *adminapi.Client) (any, error)
		answer string
		want   seen
		result any
	}{
		{
			name:   "stats",
			call:   func(c *adminapi.Client) (any, error) { return c.Stats(ctx) },
			answer: `{"version":"1.0","started":"2026-11-23T17:00:00Z","cache":{"bytes":10,"max_bytes":100,"manifests":1,"blobs":2},"traffic":{"hits":3,"hit_ratio":0.75}}`,
			want:   seen{Method: "GET", Path: "/api/v1/stats"},
			result: adminapi.Stats{Version: "1.0", Started: when, Cache: adminapi.Cache{Bytes: 10, MaxBytes: 100, Manifests: 1, Blobs: 2}, Traffic: adminapi.Traffic{Hits: 3, HitRatio: 0.75}},
		},
		{
			name:   "upstreams",
			call:   func(c *adminapi.Client) (any, error) { return c.Upstreams(ctx, false) },
			answer: `[{"name":"docker.io","url":"https://registry-1.docker.io","health":"ok","rate_limit":{"limit":100,"remaining":98,"seen":"2026-11-23T17:00:00Z"}}]`,
			want:   seen{Method: "GET", Path: "/api/v1/upstreams"},
			result: []adminapi.Upstream{{Name: "docker.io", URL: "https://registry-1.docker.io", Health: "ok", RateLimit: &adminapi.RateLimit{Limit: 100, Remaining: 98, Seen: when}}},
		},
		{
			name:   "upstreams probe",
			call:   func(c *adminapi.Client) (any, error) { return c.Upstreams(ctx, true) },
			answer: `[]`,
			want:   seen{Method: "GET", Path: "/api/v1/upstreams", Query: "probe=1"},
			result: []adminapi.Upstream{},
		},
		{
			name: "repositories",
			call: func(c *adminapi.Client) (any, error) {
				return c.Repositories(ctx, "ngin x", "docker.io", "abc", 50)
			},
			answer: `{"repositories":[{"upstream":"docker.io","name":"library/nginx","tags":2,"bytes":5}],"next":"def"}`,
			want:   seen{Method: "GET", Path: "/api/v1/repositories", Query: "cursor=abc&limit=50&q=ngin+x&upstream=docker.io"},
			result: adminapi.RepositoryPage{Repositories: []adminapi.Repository{{Upstream: "docker.io", Name: "library/nginx", Tags: 2, Bytes: 5}}, Next: "def"},
		},
		{
			name:   "repositories first page",
			call:   func(c *adminapi.Client) (any, error) { return c.Repositories(ctx, "", "", "", 0) },
			answer: `{"repositories":[]}`,
			want:   seen{Method: "GET", Path: "/api/v1/repositories"},
			result: adminapi.RepositoryPage{Repositories: []adminapi.Repository{}},
		},
		{
			name:   "tags",
			call:   func(c *adminapi.Client) (any, error) { return c.Tags(ctx, "ghcr.io", "o/r") },
			answer: `[{"upstream":"ghcr.io","repo":"o/r","name":"v1","digest":"sha256:aa","bytes":7,"checked_at":"2026-11-23T17:00:00Z","reference":"ghcr.io/o/r:v1"}]`,
			want:   seen{Method: "GET", Path: "/api/v1/tags", Query: "repo=o%2Fr&upstream=ghcr.io"},
			result: []adminapi.Tag{{Upstream: "ghcr.io", Repo: "o/r", Name: "v1", Digest: "sha256:aa", Bytes: 7, CheckedAt: when, Reference: "ghcr.io/o/r:v1"}},
		},
		{
			name:   "blobs",
			call:   func(c *adminapi.Client) (any, error) { return c.Blobs(ctx, "c", 1000) },
			answer: `{"blobs":[{"digest":"sha256:bb","bytes":3}]}`,
			want:   seen{Method: "GET", Path: "/api/v1/blobs", Query: "cursor=c&limit=1000"},
			result: adminapi.BlobPage{Blobs: []adminapi.Blob{{Digest: "sha256:bb", Bytes: 3}}},
		},
		{
			name:   "delete repository",
			call:   func(c *adminapi.Client) (any, error) { return c.DeleteRepository(ctx, "docker.io", "library/nginx") },
			answer: `{"manifests":2,"blobs":3,"bytes":100,"tags":1,"kept":[{"digest":"sha256:cc","reason":"tagged","by":["docker.io/library/nginx:1"]}]}`,
			want:   seen{Method: "DELETE", Path: "/api/v1/repositories", Query: "repo=library%2Fnginx&upstream=docker.io"},
			result: adminapi.Deletion{Manifests: 2, Blobs: 3, Bytes: 100, Tags: 1, Kept: []adminapi.Kept{{Digest: "sha256:cc", Reason: adminapi.KeptTagged, By: []string{"docker.io/library/nginx:1"}}}},
		},
		{
			name:   "delete tag",
			call:   func(c *adminapi.Client) (any, error) { return c.DeleteTag(ctx, "docker.io", "library/nginx", "latest") },
			answer: `{"tags":1}`,
			want:   seen{Method: "DELETE", Path: "/api/v1/tags", Query: "repo=library%2Fnginx&tag=latest&upstream=docker.io"},
			result: adminapi.Deletion{Tags: 1},
		},
		{
			name:   "delete content",
			call:   func(c *adminapi.Client) (any, error) { return c.DeleteContent(ctx, "sha256:dd") },
			answer: `{"blobs":1,"bytes":9}`,
			want:   seen{Method: "DELETE", Path: "/api/v1/content/sha256:dd"},
			result: adminapi.Deletion{Blobs: 1, Bytes: 9},
		},
		{
			name:   "gc",
			call:   func(c *adminapi.Client) (any, error) { return c.GC(ctx) },
			answer: `{"manifests":1,"blobs":2,"bytes":3,"size_before":10,"size_after":7,"started":"2026-11-23T17:00:00Z","duration":"1s"}`,
			want:   seen{Method: "POST", Path: "/api/v1/gc"},
			result: adminapi.GCReport{Manifests: 1, Blobs: 2, Bytes: 3, SizeBefore: 10, SizeAfter: 7, Started: when, Duration: "1s"},
		},
		{
			name: "prefetch",
			call: func(c *adminapi.Client) (any, error) {
				return c.Prefetch(ctx, adminapi.PrefetchRequest{Refs: []string{"nginx"}, Platforms: []string{"linux/amd64"}, Concurrency: 2})
			},
			answer: `{"id":"j1","state":"queued","created":"2026-11-23T17:00:00Z","items":[{"ref":"nginx","state":"queued","bytes":0,"total_bytes":0,"cached":0}]}`,
			want: seen{Method: "POST", Path: "/api/v1/prefetch", ContentType: "application/json",
				Body: `{"refs":["nginx"],"platforms":["linux/amd64"],"concurrency":2}`},
			result: adminapi.PrefetchJob{ID: "j1", State: adminapi.StateQueued, Created: when, Items: []adminapi.PrefetchItem{{Ref: "nginx", State: adminapi.StateQueued}}},
		},
		{
			name:   "prefetch jobs",
			call:   func(c *adminapi.Client) (any, error) { return c.PrefetchJobs(ctx) },
			answer: `[{"id":"j2","state":"done","created":"2026-11-23T17:00:00Z","items":[]}]`,
			want:   seen{Method: "GET", Path: "/api/v1/prefetch"},
			result: []adminapi.PrefetchJob{{ID: "j2", State: adminapi.StateDone, Created: when, Items: []adminapi.PrefetchItem{}}},
		},
		{
			name:   "prefetch job",
			call:   func(c *adminapi.Client) (any, error) { return c.PrefetchJob(ctx, "j/1") },
			answer: `{"id":"j/1","state":"running","created":"2026-11-23T17:00:00Z","items":[],"bytes":5,"total_bytes":10}`,
			want:   seen{Method: "GET", Path: "/api/v1/prefetch/j%2F1"},
			result: adminapi.PrefetchJob{ID: "j/1", State: adminapi.StateRunning, Created: when, Items: []adminapi.PrefetchItem{}, Bytes: 5, TotalBytes: 10},
		},
		{
			name:   "cancel prefetch",
			call:   func(c *adminapi.Client) (any, error) { return c.CancelPrefetch(ctx, "j1") },
			answer: `{"id":"j1","state":"canceled","created":"2026-11-23T17:00:00Z","items":[]}`,
			want:   seen{Method: "DELETE", Path: "/api/v1/prefetch/j1"},
			result: adminapi.PrefetchJob{ID: "j1", State: adminapi.StateCanceled, Created: when, Items: []adminapi.PrefetchItem{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{status: 200, body: tt.answer}
			got, err := tt.call(newClient(t, f))
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Auth = "Bearer s3cret"
			if diff := cmp.Diff(tt.want, f.request); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.result, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientErrors: error answers become *APIError matching the sentinel
// of their code, with or without the admin API's error body.
func TestClientErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		want     *adminapi.APIError
		sentinel error
	}{
		{"not found", 404, `{"errors":[{"code":"NOT_FOUND","message":"repository docker.io/library/x is not cached"}]}`,
			&adminapi.APIError{Status: 404, Code: "NOT_FOUND", Message: "repository docker.io/library/x is not cached"}, adminapi.ErrNotFound},
		{"unauthorized", 401, `{"errors":[{"code":"UNAUTHORIZED","message":"bearer token required"}]}`,
			&adminapi.APIError{Status: 401, Code: "UNAUTHORIZED", Message: "bearer token required"}, adminapi.ErrUnauthorized},
		{"invalid", 400, `{"errors":[{"code":"INVALID","message":"limit: not a number"},{"code":"INVALID","message":"second"}]}`,
			&adminapi.APIError{Status: 400, Code: "INVALID", Message: "limit: not a number"}, adminapi.ErrInvalid},
		{"in use", 409, `{"errors":[{"code":"IN_USE","message":"being fetched"}]}`,
			&adminapi.APIError{Status: 409, Code: "IN_USE", Message: "being fetched"}, adminapi.ErrInUse},
		{"proxy page", 502, "<html>Bad Gateway</html>\nmore",
			&adminapi.APIError{Status: 502, Code: "INTERNAL", Message: "<html>Bad Gateway</html>"}, adminapi.ErrInternal},
		{"empty 503", 503, "",
			&adminapi.APIError{Status: 503, Code: "UNAVAILABLE", Message: "Service Unavailable"}, adminapi.ErrUnavailable},
		{"plain 404", 404, "404 page not found\n",
			&adminapi.APIError{Status: 404, Code: "NOT_FOUND", Message: "404 page not found"}, adminapi.ErrNotFound},
		{"forbidden", 403, "",
			&adminapi.APIError{Status: 403, Code: "UNAUTHORIZED", Message: "Forbidden"}, adminapi.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, &fake{status: tt.status, body: tt.body})
			_, err := c.Tags(context.Background(), "docker.io", "library/x")
			var ae *adminapi.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is no *APIError", err, err)
			}
			if diff := cmp.Diff(tt.want, ae); diff != "" {
				t.Errorf("APIError (-want +got):\n%s", diff)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.sentinel)
			}
			if errors.Is(err, adminapi.ErrUnavailable) && tt.sentinel != adminapi.ErrUnavailable {
				t.Errorf("%v matches ErrUnavailable", err)
			}
			if got, want := err.Error(), tt.want.Code+": "+tt.want.Message; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

// TestClientTransportError: an unreachable server is a wrapped transport
// error, not an *APIError.
func TestClientTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := &adminapi.Client{BaseURL: url}
	err := c.Healthz(context.Background())
	var ae *adminapi.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("Healthz of a closed port = %v, want a transport error", err)
	}
	if !strings.Contains(err.Error(), "/healthz") {
		t.Errorf("error %q does not name the request", err)
	}
}

func TestClientBaseURL(t *testing.T) {
	f := &fake{status: 200, body: "ok\n"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	tests := []struct {
		base, wantPath string
		wantErr        bool
	}{
		{srv.URL, "/healthz", false},
		{srv.URL + "/", "/healthz", false},
		{srv.URL + "/wharf/", "/wharf/healthz", false},
		{"127.0.0.1:5080", "", true},
		{"ftp://x", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			f.request = seen{}
			c := &adminapi.Client{BaseURL: tt.base, Token: "t", HTTP: srv.Client()}
			err := c.Healthz(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Healthz = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if f.request.Path != tt.wantPath {
				t.Errorf("path %q, want %q", f.request.Path, tt.wantPath)
			}
			if f.request.Auth != "" {
				t.Errorf("healthz sent credentials %q", f.request.Auth)
			}
		})
	}
}

func TestClientNoToken(t *testing.T) {
	f := &fake{status: 200, body: `{}`}
	c := newClient(t, f)
	c.Token = ""
	if _, err := c.Stats(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.request.Auth != "" {
		t.Errorf("Authorization %q sent without a token", f.request.Auth)
	}
}

func TestClientDecodeError(t *testing.T) {
	c := newClient(t, &fake{status: 200, body: `{"version":`})
	_, err := c.Stats(context.Background())
	var ae *adminapi.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("Stats of a truncated answer = %v", err)
	}
}

func TestExport(t *testing.T) {
	tests := []struct {
		name       string
		refs       []string
		header     http.Header
		wantQuery  string
		wantImages int
	}{
		{"whole cache", nil, http.Header{"Wharf-Export-Images": {"3"}}, "", 3},
		{"refs", []string{"nginx:1", "ghcr.io/o/r"}, http.Header{"Wharf-Export-Images": {"2"}}, "ref=nginx%3A1&ref=ghcr.io%2Fo%2Fr", 2},
		{"no count", nil, nil, "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{status: 200, body: "tar bytes", header: tt.header}
			rc, size, err := newClient(t, f).Export(context.Background(), tt.refs)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil || string(b) != "tar bytes" || size != 9 {
				t.Fatalf("read %q (size %d), %v", b, size, err)
			}
			if got := rc.(*adminapi.ExportBody).Images; got != tt.wantImages {
				t.Errorf("Images = %d, want %d", got, tt.wantImages)
			}
			if f.request.Query != tt.wantQuery || f.request.Path != "/api/v1/export" || f.request.Method != "GET" {
				t.Errorf("request %+v", f.request)
			}
		})
	}
}

// TestExportTruncated: a body shorter than its Content-Length fails the
// read instead of ending cleanly.
func TestExportTruncated(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "short")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()
	c := &adminapi.Client{BaseURL: srv.URL, HTTP: srv.Client()}
	rc, size, err := c.Export(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if size != 100 {
		t.Errorf("size %d", size)
	}
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("a truncated export read cleanly")
	}
}

func TestImport(t *testing.T) {
	tests := []struct {
		name     string
		body     io.Reader
		size     int64
		wantBody string
	}{
		{"known size", strings.NewReader("archive"), 7, "archive"},
		{"unknown size", io.MultiReader(strings.NewReader("arch"), strings.NewReader("ive")), -1, "archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{status: 200, body: `{"images":["docker.io/library/nginx:1"],"manifests":1,"blobs":2,"bytes":7,"skipped":1}`}
			rep, err := newClient(t, f).Import(context.Background(), tt.body, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			want := adminapi.ImportReport{Images: []string{"docker.io/library/nginx:1"}, Manifests: 1, Blobs: 2, Bytes: 7, Skipped: 1}
			if diff := cmp.Diff(want, rep); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
			wantReq := seen{Method: "POST", Path: "/api/v1/import", Auth: "Bearer s3cret", ContentType: "application/x-tar", Body: tt.wantBody}
			if diff := cmp.Diff(wantReq, f.request); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestImportRejected(t *testing.T) {
	body, _ := json.Marshal(adminapi.ErrorBody{Errors: []adminapi.ErrorItem{{Code: "INVALID", Message: "blob sha256:aa: digest mismatch"}}})
	c := newClient(t, &fake{status: 400, body: string(body)})
	_, err := c.Import(context.Background(), bytes.NewReader([]byte("x")), 1)
	if !errors.Is(err, adminapi.ErrInvalid) || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("Import = %v, want ErrInvalid with the server's message", err)
	}
}

func TestContextCanceled(t *testing.T) {
	c := newClient(t, &fake{status: 200, body: `{}`})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Stats(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stats with a canceled context = %v", err)
	}
}
