//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// tagTTL is wharf's tag TTL in this suite: short, so that the tag-moved
// scenario sees a revalidation after a bounded wait, and so that the
// upstream-gone scenario exercises stale-if-error rather than plain hits.
const tagTTL = 2 * time.Second

// env is everything TestMain starts and every test shares. It is the
// package's only package-level state, written once by TestMain before any
// test runs and read-only afterwards.
type env struct {
	dir string // temporary root of everything below

	hub, ghcr, k8s *upstream

	wharf *wharf

	// The daemons, or why they are not there: a missing tool (skip, or
	// failure in CI) or a start failure (always a failure).
	dockerd    *dockerd
	dockerdErr error
	ctrd       *containerd
	ctrdErr    error

	// tools maps every client binary the suite uses to its path, or to ""
	// when it is not installed.
	tools map[string]string
}

var suite *env

// ci reports whether missing tools are failures (CI=true) rather than skips.
func ci() bool { return os.Getenv("CI") == "true" }

// errMissingTool marks a client that is not installed, errNotRoot daemons
// that cannot run without root.
var (
	errMissingTool = errors.New("not installed")
	errNotRoot     = errors.New("the daemons need root")
)

func TestMain(m *testing.M) {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	code := run(m)
	os.Exit(code)
}

// run builds the environment, runs the tests and tears everything down,
// returning the process exit code. Teardown happens on every path, a
// failed setup included.
func run(m *testing.M) (code int) {
	tb := &mainTB{}
	defer func() {
		if code != 0 {
			tb.Fail() // keeps the temporary directory for inspection
		}
		tb.runCleanups()
		if tb.Failed() && code == 0 {
			code = 1
		}
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			log.Printf("e2e: goroutines leaked after teardown: %v", err)
			code = 1
		}
	}()
	e, err := setup(tb)
	if err != nil {
		log.Printf("e2e: setup failed: %v", err)
		return 1
	}
	suite = e
	return m.Run()
}

// setup starts the upstreams, wharf and the daemons. Everything it starts
// is registered with tb.Cleanup before it can fail.
func setup(tb *mainTB) (e *env, err error) {
	defer func() {
		// registrytest reports setup problems through Fatalf.
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(f))
		}
	}()
	dir, err := os.MkdirTemp("", "wharf-e2e-")
	if err != nil {
		return nil, err
	}
	tb.dir = dir
	tb.Cleanup(func() {
		if tb.Failed() || os.Getenv("WHARF_E2E_KEEP") != "" {
			log.Printf("e2e: keeping %s for inspection", dir)
			return
		}
		os.RemoveAll(dir)
	})
	e = &env{dir: dir, tools: findTools()}

	// Docker Hub: a token service (auth.docker.io) and blobs redirected to a
	// CDN host. ghcr.io: a token service. registry.k8s.io: every repository
	// request redirected to a storage host (client-compat §4.2).
	e.hub = &upstream{name: "docker.io", reg: registrytest.New(tb, registrytest.Options{Auth: true, Redirect: registrytest.RedirectBlobs})}
	e.ghcr = &upstream{name: "ghcr.io", reg: registrytest.New(tb, registrytest.Options{Auth: true})}
	e.k8s = &upstream{name: "registry.k8s.io", reg: registrytest.New(tb, registrytest.Options{Redirect: registrytest.RedirectAll})}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if e.wharf, err = startWharf(ctx, tb, filepath.Join(dir, "wharf"), []*upstream{e.hub, e.ghcr, e.k8s}); err != nil {
		return nil, err
	}

	// The daemons start concurrently: each takes a few seconds.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if e.tools["dockerd"] == "" || e.tools["docker"] == "" {
			e.dockerdErr = fmt.Errorf("dockerd/docker: %w", errMissingTool)
			return
		}
		if os.Geteuid() != 0 {
			e.dockerdErr = fmt.Errorf("dockerd: %w", errNotRoot)
			return
		}
		e.dockerd, e.dockerdErr = startDockerd(ctx, tb, e.tools, filepath.Join(dir, "dockerd"), e.wharf.addr)
	}()
	go func() {
		defer wg.Done()
		if e.tools["containerd"] == "" || e.tools["ctr"] == "" {
			e.ctrdErr = fmt.Errorf("containerd/ctr: %w", errMissingTool)
			return
		}
		if os.Geteuid() != 0 {
			e.ctrdErr = fmt.Errorf("containerd: %w", errNotRoot)
			return
		}
		e.ctrd, e.ctrdErr = startContainerd(ctx, tb, e.tools, filepath.Join(dir, "containerd"))
	}()
	wg.Wait()
	for _, err := range []error{e.dockerdErr, e.ctrdErr} {
		if err != nil {
			log.Printf("e2e: %v", err)
		}
	}
	log.Printf("e2e: wharf %s on %s; upstreams docker.io=%s ghcr.io=%s registry.k8s.io=%s",
		e.wharf.version, e.wharf.addr, e.hub.reg.Host(), e.ghcr.reg.Host(), e.k8s.reg.Host())
	log.Printf("e2e: clients: %s", clientVersions(ctx, e))
	return e, nil
}

// clientVersions is what each installed client says its version is, for
// the log and the README's client matrix.
func clientVersions(ctx context.Context, e *env) string {
	version := func(tool string, args ...string) string {
		if e.tools[tool] == "" {
			return "missing"
		}
		out, err := command(ctx, baseEnv(), append([]string{e.tools[tool]}, args...)...)
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	}
	parts := []string{
		"CLI " + version("docker", "--version"),
		"ctr " + version("ctr", "--version"),
		version("podman", "--version"),
		version("skopeo", "--version"),
		"crane " + version("crane", "version"),
	}
	if e.dockerd != nil {
		parts = append([]string{"dockerd " + e.dockerd.version}, parts...)
	}
	if e.ctrd != nil {
		parts = append(parts, "containerd "+e.ctrd.version)
	}
	return strings.Join(parts, "; ")
}

// clientTools are the binaries the scenarios drive (chromium: the web UI's).
var clientTools = []string{"dockerd", "docker", "containerd", "ctr", "podman", "skopeo", "crane", "jq", "chromium"}

// findTools looks every client up on PATH, and crane also in the Go bin
// directory where scripts/install-e2e-deps.sh puts it.
func findTools() map[string]string {
	tools := make(map[string]string, len(clientTools))
	for _, name := range clientTools {
		p, err := exec.LookPath(name)
		if err != nil {
			for _, dir := range goBinDirs() {
				if c := filepath.Join(dir, name); isExecutable(c) {
					p = c
					break
				}
			}
		}
		tools[name] = p
	}
	return tools
}

func goBinDirs() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// need returns the path of each named tool. A missing one skips the test,
// or fails it when CI=true.
func need(t *testing.T, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	var missing []string
	for i, n := range names {
		paths[i] = suite.tools[n]
		if paths[i] == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("client tools not installed: %s (run scripts/install-e2e-deps.sh)", strings.Join(missing, ", "))
		if ci() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return paths
}

// needDockerd returns the suite's dockerd, skipping or failing as need does
// when it is not installed and failing when it did not start.
func needDockerd(t *testing.T) *dockerd {
	t.Helper()
	need(t, "dockerd", "docker")
	needDaemon(t, suite.dockerdErr)
	return suite.dockerd
}

// needContainerd is needDockerd for the suite's containerd.
func needContainerd(t *testing.T) *containerd {
	t.Helper()
	need(t, "containerd", "ctr")
	needDaemon(t, suite.ctrdErr)
	return suite.ctrd
}

// needDaemon ends the test when a daemon is not running: a skip when it
// could not run here (not root) outside CI, a failure otherwise.
func needDaemon(t *testing.T, err error) {
	t.Helper()
	switch {
	case err == nil:
	case errors.Is(err, errNotRoot) && !ci():
		t.Skip(err)
	default:
		t.Fatalf("daemon did not start: %v", err)
	}
}

// mainTB is the testing.TB that TestMain hands to registrytest.New, which
// needs one for its Cleanup and to report problems. Cleanups run when
// TestMain tears down, in reverse order; Fatal panics with a fatal value
// that setup recovers; Errorf is recorded and fails the run.
//
// The embedded testing.TB is nil: it only supplies the interface's
// unexported method. Every method registrytest calls is implemented here.
type mainTB struct {
	testing.TB
	dir string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// fatal is what mainTB.Fatalf panics with.
type fatal string

func (m *mainTB) Helper()      {}
func (m *mainTB) Name() string { return "TestMain" }

func (m *mainTB) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}

func (m *mainTB) runCleanups() {
	m.mu.Lock()
	fs := slices.Clone(m.cleanups)
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (m *mainTB) Log(args ...any)                 { log.Print(args...) }
func (m *mainTB) Logf(format string, args ...any) { log.Printf(format, args...) }

func (m *mainTB) Error(args ...any) {
	m.Fail()
	log.Print(append([]any{"e2e: error: "}, args...)...)
}

func (m *mainTB) Errorf(format string, args ...any) {
	m.Fail()
	log.Printf("e2e: error: "+format, args...)
}

func (m *mainTB) Fatal(args ...any) {
	m.Fail()
	panic(fatal(fmt.Sprint(args...)))
}

func (m *mainTB) Fatalf(format string, args ...any) {
	m.Fail()
	panic(fatal(fmt.Sprintf(format, args...)))
}

func (m *mainTB) FailNow() {
	m.Fail()
	panic(fatal("FailNow"))
}

func (m *mainTB) Fail() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failed = true
}

func (m *mainTB) Failed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

func (m *mainTB) TempDir() string {
	d, err := os.MkdirTemp(m.dir, "tmp-")
	if err != nil {
		m.Fatalf("TempDir: %v", err)
	}
	return d
}

// Context is canceled by nothing: TestMain's resources live until teardown.
func (m *mainTB) Context() context.Context { return context.Background() }
