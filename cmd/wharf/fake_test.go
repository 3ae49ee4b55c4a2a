package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
)

// fakeAdmin is a hand-written admin API with canned content, for running
// the subcommands in-process. It records every /api/v1/ request.
type fakeAdmin struct {
	t     *testing.T
	token string

	mu        sync.Mutex
	requests  []string // "METHOD /path?query"
	repos     []adminapi.Repository
	tags      map[string][]adminapi.Tag // "upstream/repo" → tags
	blobs     []adminapi.Blob
	stats     adminapi.Stats
	upstreams []adminapi.Upstream
	gc        adminapi.GCReport
	// deletions answers a delete by "upstream/repo[:tag]" or digest;
	// missing keys answer 404.
	deletions map[string]adminapi.Deletion

	// prefetch: the request received, the job, and how it progresses:
	// each poll advances every item one state (queued → running → done,
	// or failed for refs containing "fail"); with stuck the job stays
	// running until canceled.
	prefetchReq adminapi.PrefetchRequest
	job         adminapi.PrefetchJob
	stuck       bool
	polled      chan struct{} // receives after each poll, when not nil
	canceled    bool

	export       []byte
	exportImages int
	exportAbort  bool // send half the archive, then abort the connection
	// exportStall, when not nil, receives once half the archive is sent;
	// the answer then waits for the client to go away.
	exportStall chan struct{}

	imported   []byte
	importFail string // reject an import with this message
}

func newFakeAdmin(t *testing.T) (*fakeAdmin, string) {
	f := &fakeAdmin{t: t, tags: map[string][]adminapi.Tag{}, deletions: map[string]adminapi.Deletion{}}
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeAdmin) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(adminapi.ErrorBody{Errors: []adminapi.ErrorItem{{Code: code, Message: msg}}})
}

func writeOK(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAdmin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	api := http.NewServeMux()
	mux.Handle("/api/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
			writeErr(w, 401, adminapi.CodeUnauthorized, "bearer token required")
			return
		}
		api.ServeHTTP(w, r)
	}))
	api.HandleFunc("GET /api/v1/stats", func(w http.ResponseWriter, r *http.Request) { writeOK(w, f.stats) })
	api.HandleFunc("GET /api/v1/upstreams", func(w http.ResponseWriter, r *http.Request) { writeOK(w, f.upstreams) })
	api.HandleFunc("GET /api/v1/repositories", func(w http.ResponseWriter, r *http.Request) {
		// Pages of the given limit; the cursor is the index to start at.
		q := strings.ToLower(r.FormValue("q"))
		var match []adminapi.Repository
		for _, repo := range f.repos {
			if strings.Contains(strings.ToLower(repo.Upstream+"/"+repo.Name), q) &&
				(r.FormValue("upstream") == "" || r.FormValue("upstream") == repo.Upstream) {
				match = append(match, repo)
			}
		}
		start, _ := strconv.Atoi(r.FormValue("cursor"))
		limit, _ := strconv.Atoi(r.FormValue("limit"))
		if limit <= 0 {
			limit = 100
		}
		page := adminapi.RepositoryPage{Repositories: []adminapi.Repository{}}
		end := min(start+limit, len(match))
		if start < end {
			page.Repositories = match[start:end]
		}
		if end < len(match) {
			page.Next = strconv.Itoa(end)
		}
		writeOK(w, page)
	})
	api.HandleFunc("GET /api/v1/tags", func(w http.ResponseWriter, r *http.Request) {
		tags, ok := f.tags[r.FormValue("upstream")+"/"+r.FormValue("repo")]
		if !ok {
			writeErr(w, 404, adminapi.CodeNotFound, "repository not cached")
			return
		}
		writeOK(w, tags)
	})
	api.HandleFunc("GET /api/v1/blobs", func(w http.ResponseWriter, r *http.Request) {
		writeOK(w, adminapi.BlobPage{Blobs: f.blobs})
	})
	del := func(key string, w http.ResponseWriter) {
		d, ok := f.deletions[key]
		if !ok {
			writeErr(w, 404, adminapi.CodeNotFound, key+" is not cached")
			return
		}
		writeOK(w, d)
	}
	api.HandleFunc("DELETE /api/v1/repositories", func(w http.ResponseWriter, r *http.Request) {
		del(r.FormValue("upstream")+"/"+r.FormValue("repo"), w)
	})
	api.HandleFunc("DELETE /api/v1/tags", func(w http.ResponseWriter, r *http.Request) {
		del(r.FormValue("upstream")+"/"+r.FormValue("repo")+":"+r.FormValue("tag"), w)
	})
	api.HandleFunc("DELETE /api/v1/content/{digest}", func(w http.ResponseWriter, r *http.Request) {
		del(r.PathValue("digest"), w)
	})
	api.HandleFunc("POST /api/v1/gc", func(w http.ResponseWriter, r *http.Request) { writeOK(w, f.gc) })
	api.HandleFunc("POST /api/v1/prefetch", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewDecoder(r.Body).Decode(&f.prefetchReq)
		f.job = adminapi.PrefetchJob{ID: "job-1", State: adminapi.StateQueued, Created: time.Now()}
		for _, ref := range f.prefetchReq.Refs {
			f.job.Items = append(f.job.Items, adminapi.PrefetchItem{Ref: ref, State: adminapi.StateQueued})
		}
		w.WriteHeader(http.StatusAccepted)
		writeOK(w, f.job)
	})
	api.HandleFunc("GET /api/v1/prefetch/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.advance()
		job := f.job
		job.Items = append([]adminapi.PrefetchItem(nil), f.job.Items...)
		polled := f.polled
		f.mu.Unlock()
		writeOK(w, job)
		if polled != nil {
			select {
			case polled <- struct{}{}:
			default:
			}
		}
	})
	api.HandleFunc("DELETE /api/v1/prefetch/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.canceled = true
		f.job.State = adminapi.StateCanceled
		writeOK(w, f.job)
	})
	api.HandleFunc("GET /api/v1/export", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Length", strconv.Itoa(len(f.export)))
		w.Header().Set(adminapi.HeaderExportImages, strconv.Itoa(f.exportImages))
		if f.exportStall != nil {
			w.Write(f.export[:len(f.export)/2])
			w.(http.Flusher).Flush()
			f.exportStall <- struct{}{}
			<-r.Context().Done()
			return
		}
		if f.exportAbort {
			w.Write(f.export[:len(f.export)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Write(f.export)
	})
	api.HandleFunc("POST /api/v1/import", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.imported = b
		f.mu.Unlock()
		if f.importFail != "" {
			writeErr(w, 400, adminapi.CodeInvalid, f.importFail)
			return
		}
		writeOK(w, adminapi.ImportReport{Images: []string{"docker.io/library/nginx:1.27"}, Manifests: 2, Blobs: 3, Bytes: int64(len(b)), Skipped: 1})
	})
	return mux
}

// advance moves the job one step; f.mu is held.
func (f *fakeAdmin) advance() {
	if f.job.State == adminapi.StateCanceled || f.stuck && f.job.State == adminapi.StateRunning {
		return
	}
	f.job.State = adminapi.StateRunning
	f.job.Done, f.job.Failed = 0, 0
	for i := range f.job.Items {
		it := &f.job.Items[i]
		switch it.State {
		case adminapi.StateQueued:
			it.State = adminapi.StateRunning
			it.TotalBytes, it.Bytes = 2000, 1000
		case adminapi.StateRunning:
			if f.stuck {
				continue
			}
			if strings.Contains(it.Ref, "fail") {
				it.State, it.Error = adminapi.StateFailed, "manifest unknown"
			} else {
				it.State, it.Bytes, it.Cached, it.Digest = adminapi.StateDone, 2000, 500, "sha256:"+strings.Repeat("ab", 32)
			}
		}
		switch it.State {
		case adminapi.StateDone:
			f.job.Done++
		case adminapi.StateFailed:
			f.job.Failed++
		}
	}
	if f.job.Done+f.job.Failed == len(f.job.Items) {
		f.job.State = adminapi.StateDone
		if f.job.Failed > 0 {
			f.job.State = adminapi.StateFailed
		}
	}
}

// cliResult is what one in-process run of the CLI printed.
type cliResult struct {
	code           int
	stdout, stderr string
}

type cliOptions struct {
	stdin          string
	outTTY, errTTY bool
	env            map[string]string
	ctx            context.Context
}

// runCLI runs the CLI in-process with buffers for stdout and stderr and an
// environment of env only (none of the test process's WHARF_* leak in).
func runCLI(t *testing.T, o cliOptions, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	ctx := o.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	// Never probe a real server on this machine nor touch ./data: the
	// default admin listener is a closed port, the data directory one that
	// does not exist yet.
	env := map[string]string{
		"WHARF_ADMIN_LISTEN": "127.0.0.1:1",
		"WHARF_DATA_DIR":     filepath.Join(t.TempDir(), "data"),
	}
	for k, v := range o.env {
		env[k] = v
	}
	std := stdio{
		in: strings.NewReader(o.stdin), out: &out, err: &errb,
		outTTY: o.outTTY, errTTY: o.errTTY,
		lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	}
	code := run(ctx, args, std)
	return cliResult{code: code, stdout: out.String(), stderr: errb.String()}
}
