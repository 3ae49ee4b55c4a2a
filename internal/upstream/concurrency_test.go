package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// streamingBlobs is an upstream whose blob bodies stream until the test
// lets them finish: headers and a first chunk go out at once, the rest
// when release is closed (or the client goes away).
type streamingBlobs struct {
	recorder
	release chan struct{}
}

func (s *streamingBlobs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.record(r)
	w.Header().Set("Content-Length", "10")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "01234")
	w.(http.Flusher).Flush()
	select {
	case <-s.release:
	case <-r.Context().Done():
		return
	}
	io.WriteString(w, "56789")
}

func newStreamingBlobs(t *testing.T) (*streamingBlobs, *httptest.Server) {
	t.Helper()
	s := &streamingBlobs{release: make(chan struct{})}
	srv := serve(t, s)
	// Registered after serve, so it runs before the server's Close, which
	// waits for handlers.
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
	})
	return s, srv
}

var anyBlob = digest.FromString("any")

func TestMaxConcurrentWaitsForAClosedBody(t *testing.T) {
	s, srv := newStreamingBlobs(t)
	c := newClient(t, upstream.Config{URL: srv.URL, MaxConcurrent: 2})
	waiting := make(chan struct{}, 1)
	upstream.SetOnWait(c, func() { waiting <- struct{}{} })
	ctx := t.Context()

	first, _, err := c.GetBlob(ctx, "app", anyBlob)
	if err != nil {
		t.Fatalf("first GetBlob: %v", err)
	}
	second, _, err := c.GetBlob(ctx, "app", anyBlob)
	if err != nil {
		t.Fatalf("second GetBlob: %v", err)
	}
	defer second.Close()
	if n := c.InFlight(); n != 2 {
		t.Fatalf("InFlight = %d with two open bodies, want 2", n)
	}

	type result struct {
		body io.ReadCloser
		err  error
	}
	third := make(chan result, 1)
	go func() {
		rc, _, err := c.GetBlob(ctx, "app", anyBlob)
		third <- result{rc, err}
	}()
	<-waiting
	if n := s.count(); n != 2 {
		t.Fatalf("upstream saw %d requests while two were in flight, want 2", n)
	}

	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := <-third
	if r.err != nil {
		t.Fatalf("third GetBlob: %v", r.err)
	}
	defer r.body.Close()
	if n := s.count(); n != 3 {
		t.Errorf("upstream saw %d requests, want 3", n)
	}
	if n := c.InFlight(); n != 2 {
		t.Errorf("InFlight = %d, want 2", n)
	}
}

func TestMaxConcurrentGivesUpWithTheContext(t *testing.T) {
	s, srv := newStreamingBlobs(t)
	c := newClient(t, upstream.Config{Name: "busy.example", URL: srv.URL, MaxConcurrent: 2})
	waiting := make(chan struct{}, 1)
	upstream.SetOnWait(c, func() { waiting <- struct{}{} })

	for range 2 {
		rc, _, err := c.GetBlob(t.Context(), "app", anyBlob)
		if err != nil {
			t.Fatalf("GetBlob: %v", err)
		}
		defer rc.Close()
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.GetBlob(ctx, "app", anyBlob)
		errc <- err
	}()
	<-waiting
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, upstream.ErrUnreachable) || upstream.IsTransient(err) {
		t.Errorf("giving up on a slot is reported as an upstream failure: %v", err)
	}
	for _, want := range []string{"busy.example", "2 requests in flight"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := s.count(); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
	if n := c.InFlight(); n != 2 {
		t.Errorf("InFlight = %d, want 2", n)
	}
}

// TestOneSlotPerLogicalRequest: with a single slot, a request whose
// redirect target challenges for a token of its own, and whose registry
// does too, completes; a hop or token fetch taking a second slot would
// wait forever.
func TestOneSlotPerLogicalRequest(t *testing.T) {
	s := newRedirectSetup(t, "cdn.example", upstream.Config{Username: "alice", Password: "pw", MaxConcurrent: 1})
	s.cdn.challenge = []string{`Bearer realm="http://auth.cdn.example/token",service="cdn"`}
	s.cdn.tokens = s.tokens
	blob := []byte("layer")
	d := s.cdn.putBlob(blob)
	for i := range 3 {
		rc, _, err := s.client.GetBlob(t.Context(), "library/redirected/app", d)
		if err != nil {
			t.Fatalf("GetBlob %d: %v", i, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != string(blob) {
			t.Fatalf("GetBlob %d = %q, %v", i, got, err)
		}
	}
	if s.tokens.count() == 0 {
		t.Fatal("no token was fetched; the test does not exercise token fetches")
	}
	if n := s.client.InFlight(); n != 0 {
		t.Errorf("InFlight = %d after all bodies were closed, want 0", n)
	}
}

// TestSlotReleasedOnEveryOutcome runs requests that end in every way a
// request can end through one slot: a leaked slot blocks the next request
// until the test's deadline.
func TestSlotReleasedOnEveryOutcome(t *testing.T) {
	reg := newFakeRegistry()
	blob := []byte("blob")
	d := reg.putBlob(blob)
	reg.putManifest("app", "v1", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	reg.putManifest("app", "bad", fakeManifest{contentType: ociManifestType, body: []byte(testManifest), digestHeader: digest.FromString("x").String()})
	srv := serve(t, reg)
	c := newClient(t, upstream.Config{URL: srv.URL, MaxConcurrent: 1})
	ctx := t.Context()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	steps := []struct {
		name string
		run  func() error
	}{
		{"manifest", func() error { _, _, err := c.GetManifest(ctx, "app", "v1"); return err }},
		{"manifest HEAD", func() error { _, err := c.HeadManifest(ctx, "app", "v1"); return err }},
		{"manifest 404", func() error {
			_, _, err := c.GetManifest(ctx, "app", "missing")
			return ignore(err, upstream.IsNotFound(err))
		}},
		{"digest mismatch", func() error {
			_, _, err := c.GetManifest(ctx, "app", "bad")
			return ignore(err, errors.Is(err, upstream.ErrDigestMismatch))
		}},
		{"blob read to the end, closed late", func() error {
			rc, _, err := c.GetBlob(ctx, "app", d)
			if err != nil {
				return err
			}
			defer rc.Close()
			if _, err := io.ReadAll(rc); err != nil {
				return err
			}
			if n := c.InFlight(); n != 0 {
				return fmt.Errorf("InFlight = %d after EOF, want 0", n)
			}
			return nil
		}},
		{"blob closed unread", func() error {
			rc, _, err := c.GetBlob(ctx, "app", d)
			if err != nil {
				return err
			}
			rc.Close()
			return rc.Close() // twice: releases once
		}},
		{"blob 404", func() error {
			_, _, err := c.GetBlob(ctx, "app", digest.FromString("nope"))
			return ignore(err, upstream.IsNotFound(err))
		}},
		{"blob HEAD", func() error { _, err := c.HeadBlob(ctx, "app", d); return err }},
		{"ping", func() error { return c.Ping(ctx) }},
		{"passthrough", func() error {
			resp, err := c.Do(ctx, http.MethodGet, "app", "tags/list", "", nil)
			if err != nil {
				return err
			}
			return resp.Body.Close()
		}},
		{"cancelled context", func() error {
			_, _, err := c.GetManifest(cancelled, "app", "v1")
			return ignore(err, errors.Is(err, context.Canceled))
		}},
		{"manifest after all that", func() error { _, _, err := c.GetManifest(ctx, "app", "v1"); return err }},
	}
	for _, st := range steps {
		if err := st.run(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if n := c.InFlight(); n != 0 {
			t.Fatalf("%s: InFlight = %d afterwards, want 0", st.name, n)
		}
	}

	unreachable := newClient(t, upstream.Config{URL: "http://127.0.0.1:1", MaxConcurrent: 1})
	for range 2 {
		if _, _, err := unreachable.GetManifest(ctx, "app", "v1"); !errors.Is(err, upstream.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
	}
	if n := unreachable.InFlight(); n != 0 {
		t.Errorf("InFlight = %d after failures, want 0", n)
	}
}

// ignore returns nil when err is the expected outcome.
func ignore(err error, expected bool) error {
	if expected {
		return nil
	}
	if err == nil {
		return errors.New("no error, want one")
	}
	return err
}

// TestMaxConcurrentUnderLoad checks under -race that no more than
// MaxConcurrent requests reach the upstream at once and that every
// request completes.
func TestMaxConcurrentUnderLoad(t *testing.T) {
	const (
		limit   = 3
		workers = 12
		rounds  = 5
	)
	reg := newFakeRegistry()
	var (
		active, maxActive atomic.Int64
		c                 *upstream.Client
		overInFlight      atomic.Bool
	)
	reg.hook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		a := active.Add(1)
		defer active.Add(-1)
		for {
			m := maxActive.Load()
			if a <= m || maxActive.CompareAndSwap(m, a) {
				break
			}
		}
		if c.InFlight() > limit {
			overInFlight.Store(true)
		}
		return false
	}
	blob := []byte("some layer bytes")
	d := reg.putBlob(blob)
	srv := serve(t, reg)
	c = newClient(t, upstream.Config{URL: srv.URL, MaxConcurrent: limit})

	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for range workers {
		wg.Go(func() {
			for range rounds {
				rc, _, err := c.GetBlob(t.Context(), "app", d)
				if err != nil {
					errs <- err
					continue
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || string(got) != string(blob) {
					errs <- fmt.Errorf("body %q, %v", got, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := maxActive.Load(); m > limit {
		t.Errorf("upstream saw %d requests at once, more than %d", m, limit)
	}
	if overInFlight.Load() {
		t.Errorf("InFlight exceeded %d", limit)
	}
	if n := c.InFlight(); n != 0 {
		t.Errorf("InFlight = %d at the end, want 0", n)
	}
	if n := reg.count(); n != workers*rounds {
		t.Errorf("upstream saw %d requests, want %d", n, workers*rounds)
	}
}

func TestNegativeMaxConcurrent(t *testing.T) {
	if _, err := upstream.New(upstream.Config{URL: "https://r.example", MaxConcurrent: -1}); err == nil {
		t.Fatal("New accepted MaxConcurrent -1")
	}
}
