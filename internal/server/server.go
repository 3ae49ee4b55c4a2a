// Package server assembles a wharf instance from its configuration: it opens
// the cache (blob store and index) in the data directory, makes the index
// agree with the blob files, builds the routing table, one upstream client
// per configured registry and the mirror, and serves the registry API and
// the admin endpoints; it runs cache eviction in the background when the
// cache is bounded.
//
// It is the only place where the packages meet; cmd/wharf parses flags and
// calls it, and integration tests use it to run a real wharf in-process.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/admin"
	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/blob/fsstore"
	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/meta/sqlite"
	"github.com/wharf-mirror/wharf/internal/mirror"
	"github.com/wharf-mirror/wharf/internal/mitm"
	"github.com/wharf-mirror/wharf/internal/ociapi"
	"github.com/wharf-mirror/wharf/internal/ratelimit"
	"github.com/wharf-mirror/wharf/internal/route"
	"github.com/wharf-mirror/wharf/internal/tlsserve"
	"github.com/wharf-mirror/wharf/internal/ui"
	"github.com/wharf-mirror/wharf/internal/upstream"
)

// maxRateLimitedClients bounds the memory of the per-client rate limiter:
// beyond it, the idlest clients' buckets are dropped.
const maxRateLimitedClients = 65536

// Options carries what is not part of the configuration file.
type Options struct {
	Logger    *slog.Logger
	Version   string            // reported in the User-Agent sent upstream
	Transport http.RoundTripper // upstream transport override (tests); nil = default
	// OnCollect, when set, is called after every eviction run, background
	// or on demand (Collect), with its report and error.
	OnCollect func(gc.Report, error)
}

// Instance is a running wharf: cache opened, handlers built.
type Instance struct {
	cfg    *config.Config
	log    *slog.Logger
	lock   *dirLock // held until Close
	blobs  blob.Store
	index  meta.Index
	mirror *mirror.Service
	api    http.Handler
	admin  http.Handler
	authz  *authz // client authentication and access policies
	// limiter bounds each client's request rate (limits.client_rate) on
	// the registry, proxy and transparent listeners; nil when off.
	limiter *ratelimit.Limiter

	metricsHandler http.Handler // GET /metrics on the admin listener
	adminAPI       *admin.Handler
	state          *adminState

	tls *tlsFront // HTTPS on the registry listener, or nil
	// transparent is the TLS configuration of the transparent listener,
	// or nil when it is off.
	transparent *tls.Config
	ca          *mitm.CA    // wharf's own CA, when the proxy mode uses it
	proxy       *mitm.Proxy // the HTTPS_PROXY front, or nil

	gc *collector // eviction: the collector and its background loop (gc.go)
}

// New opens the cache in cfg.DataDir and builds the handlers. cfg must be
// validated and resolved. Close releases everything.
func New(ctx context.Context, cfg *config.Config, opts Options) (inst *Instance, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.release()
		}
	}()
	blobs, err := fsstore.New(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	index, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "index.db"))
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	defer func() {
		if err != nil {
			index.Close()
		}
	}()
	if err := reconcile(ctx, blobs, index, log); err != nil {
		return nil, err
	}
	mets, metricsHandler := newMetrics()
	watchCache(mets, index)
	state := &adminState{
		version: opts.Version, started: time.Now(), metrics: mets,
		health: newHealth(mets), clients: map[string]*upstream.Client{},
	}

	routes, err := route.NewTable(cfg.DefaultUpstream, routeEntries(cfg))
	if err != nil {
		return nil, fmt.Errorf("routing table: %w", err)
	}
	ua := "wharf"
	if opts.Version != "" {
		ua += "/" + opts.Version
	}
	var ups []mirror.UpstreamConfig
	for _, name := range cfg.EnabledUpstreams() {
		u := cfg.Upstreams[name]
		client, err := upstream.New(upstream.Config{
			Name:           name,
			URL:            u.URL,
			Username:       u.Username,
			Password:       u.ResolvedPassword(),
			TokenRealms:    u.TokenRealms,
			Transport:      opts.Transport,
			ConnectTimeout: cfg.Fetch.ConnectTimeout.Std(),
			HeaderTimeout:  cfg.Fetch.HeaderTimeout.Std(),
			Retries:        cfg.Fetch.Retries,
			MaxConcurrent:  cfg.Fetch.MaxConcurrent,
			UserAgent:      ua,
			Logger:         log.With("upstream", name),
			Observer:       state.health,
		})
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		state.clients[name] = client
		watchRateLimit(mets, name, client)
		ups = append(ups, mirror.UpstreamConfig{
			Name:   name,
			Client: client,
			Policy: mirror.Policy{
				TagTTL:      u.EffectiveTagTTL(cfg),
				MaxStale:    u.EffectiveMaxStale(cfg),
				NegativeTTL: cfg.NegativeTTL.Std(),
			},
		})
	}
	m, err := mirror.New(mirror.Config{
		Upstreams:    ups,
		Blobs:        blobs,
		Index:        index,
		Logger:       log,
		FetchTimeout: cfg.Fetch.Timeout.Std(),
		Observer:     mets,
	})
	if err != nil {
		return nil, err
	}
	inst = &Instance{cfg: cfg, log: log, lock: lock, blobs: blobs, index: index, mirror: m, state: state}
	if inst.authz, err = inst.newAuthz(); err != nil {
		m.Close()
		return nil, err
	}
	z := inst.authz
	defer func() {
		if err != nil {
			z.close()
		}
	}()
	inst.api = ociapi.New(ociapi.Config{Routes: routes, Mirror: m, Logger: log, Observer: mets, Authorizer: inst.authz})
	inst.api = inst.authz.withToken(inst.api, log)
	if l := cfg.Limits; l.ClientRate > 0 {
		inst.limiter = ratelimit.New(l.ClientRate, l.EffectiveClientBurst(), maxRateLimitedClients, nil)
		inst.api = ratelimit.Middleware(inst.limiter, inst.api)
	}
	if err := inst.newProxy(); err != nil {
		m.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if inst.transparent, err = inst.newTransparent(); err != nil {
		m.Close()
		return nil, fmt.Errorf("transparent: %w", err)
	}
	inst.api = inst.withCACert(inst.api)
	if inst.tls, err = inst.newTLS(); err != nil {
		m.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	if inst.tls != nil {
		inst.api = tlsserve.HSTS(inst.api)
	}
	inst.metricsHandler = metricsHandler
	observeGC := func(r gc.Report, err error) {
		mets.Eviction(r.Manifests, r.Blobs, r.Bytes, err)
		state.recordGC(r, err)
		if opts.OnCollect != nil {
			opts.OnCollect(r, err)
		}
	}
	if err := inst.startGC(observeGC); err != nil {
		m.Close()
		return nil, err
	}
	if inst.adminAPI, err = inst.newAdminAPI(routes); err != nil {
		inst.stopGC()
		m.Close()
		return nil, err
	}
	inst.admin = inst.adminHandler()
	return inst, nil
}

func routeEntries(cfg *config.Config) []route.Upstream {
	var out []route.Upstream
	for _, name := range cfg.EnabledUpstreams() {
		u := cfg.Upstreams[name]
		out = append(out, route.Upstream{
			Name:          name,
			Aliases:       u.Aliases,
			VirtualHosts:  u.VirtualHosts,
			LibraryPrefix: u.EffectiveLibraryPrefix(name),
		})
	}
	return out
}

// reconcile makes the index and the blob files agree after a crash: records
// of content whose file is missing go, and committed files the index does
// not know (a crash between the file's rename and the index write) are
// adopted as blobs. The store already removed interrupted writes.
func reconcile(ctx context.Context, blobs blob.Store, index meta.Index, log *slog.Logger) error {
	removed, err := index.Reconcile(ctx, func(d digest.Digest) bool {
		_, err := blobs.Stat(ctx, d)
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("reconcile index: %w", err)
	}
	adopted := 0
	err = blobs.Walk(ctx, func(d digest.Digest, size int64) error {
		if _, err := index.Blob(ctx, d); err == nil {
			return nil
		} else if !errors.Is(err, meta.ErrNotFound) {
			return err
		}
		if _, err := index.Manifest(ctx, d); err == nil {
			return nil
		}
		adopted++
		return index.PutBlob(ctx, meta.Blob{Digest: d, Size: size})
	})
	if err != nil {
		return fmt.Errorf("reconcile blob files: %w", err)
	}
	if removed > 0 || adopted > 0 {
		log.Info("cache reconciled", "index_records_removed", removed, "files_adopted", adopted)
	}
	return nil
}

// Handler is the registry API.
func (i *Instance) Handler() http.Handler { return i.api }

// AdminHandler serves /healthz, /readyz, /metrics and the admin API
// (/api/v1/); everything but the health checks needs the admin token when
// one is configured.
func (i *Instance) AdminHandler() http.Handler { return i.admin }

func (i *Instance) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := i.ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	token := i.cfg.ResolvedAdminToken()
	mux.Handle("GET /metrics", requireToken(token, i.metricsHandler))
	mux.Handle("/api/", requireToken(token, i.adminAPI))
	// The UI's pages hold no data: they load without the token and ask
	// for it when an API call answers 401.
	mux.Handle("/", ui.Handler())
	return mux
}

// ready checks that the index answers and the data directory is writable.
func (i *Instance) ready(ctx context.Context) error {
	if _, err := i.index.Tag(ctx, "", "", ""); err != nil && !errors.Is(err, meta.ErrNotFound) {
		return fmt.Errorf("index: %w", err)
	}
	f, err := os.CreateTemp(i.cfg.DataDir, ".ready-*")
	if err != nil {
		return fmt.Errorf("data directory not writable: %w", err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Listeners are the sockets an instance serves; nil ones are skipped.
type Listeners struct {
	API   net.Listener // the registry API (required)
	Admin net.Listener // admin API, UI, metrics, health
	Proxy net.Listener // the HTTPS_PROXY front (proxy.listen)
	// Redirect is the plain-HTTP listener that redirects to the HTTPS
	// registry listener (tls.redirect_listen).
	Redirect net.Listener
	// Transparent is the TLS listener answering for registry host names
	// (transparent.listen).
	Transparent net.Listener
}

// Serve serves the registry API on api and the admin endpoints on admin
// (nil to skip) until ctx is done, then shuts down gracefully.
func (i *Instance) Serve(ctx context.Context, api, admin net.Listener) error {
	return i.ServeListeners(ctx, Listeners{API: api, Admin: admin})
}

// ServeListeners serves every listener of l until ctx is done, then shuts
// down gracefully: servers stop accepting, requests in flight get 30 s,
// and connections the proxy took over are closed.
func (i *Instance) ServeListeners(ctx context.Context, l Listeners) error {
	api := l.API
	if i.tls != nil {
		api = tls.NewListener(api, i.tls.config)
	}
	servers := []*http.Server{i.newHTTPServer(i.api)}
	listeners := []net.Listener{api}
	if l.Redirect != nil {
		if i.tls == nil {
			return errors.New("a redirect listener was given but TLS is not configured")
		}
		servers = append(servers, i.newHTTPServer(i.redirectHandler(l.API.Addr())))
		listeners = append(listeners, l.Redirect)
	}
	if l.Admin != nil {
		servers = append(servers, i.newHTTPServer(i.admin))
		listeners = append(listeners, l.Admin)
	}
	if l.Proxy != nil {
		if i.proxy == nil {
			return errors.New("a proxy listener was given but proxy.listen is not configured")
		}
		servers = append(servers, i.newHTTPServer(ratelimit.Middleware(i.limiter, i.proxy)))
		listeners = append(listeners, l.Proxy)
	}
	if l.Transparent != nil {
		if i.transparent == nil {
			return errors.New("a transparent listener was given but transparent.listen is not configured")
		}
		servers = append(servers, i.newHTTPServer(i.api))
		listeners = append(listeners, tls.NewListener(l.Transparent, i.transparent))
	}
	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for k, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Serve(listeners[k]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			s.Close()
		}
	}
	if i.proxy != nil {
		i.proxy.Close()
	}
	wg.Wait()
	close(errc)
	if first == nil {
		first = <-errc
	}
	return first
}

func (i *Instance) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    int(i.cfg.Limits.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(i.log.Handler(), slog.LevelWarn),
	}
}

// Close stops eviction and the mirror (cancelling shared fetches) and
// closes the index.
func (i *Instance) Close() error {
	if i.proxy != nil {
		i.proxy.Close()
	}
	i.adminAPI.Close()
	i.stopGC()
	return errors.Join(i.mirror.Close(), i.authz.close(), i.index.Close(), i.lock.release())
}
