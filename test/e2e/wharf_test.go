//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// wharf is the one wharf process of the suite.
type wharf struct {
	addr      string // registry API, 127.0.0.1:PORT
	adminAddr string
	vhost     string // virtual host of ghcr.io: localhost:PORT
	version   string
	proc      *process
	logPath   string
	client    *http.Client
	syncSeq   atomic.Int64
}

// wharfBinary is bin/wharf as built by `make build`, or $WHARF_BIN.
func wharfBinary() (string, error) {
	if p := os.Getenv("WHARF_BIN"); p != "" {
		return filepath.Abs(p)
	}
	// The test runs in test/e2e: the repository root is two levels up.
	p, err := filepath.Abs(filepath.Join("..", "..", "bin", "wharf"))
	if err != nil {
		return "", err
	}
	if !isExecutable(p) {
		return "", fmt.Errorf("%s is missing: run `make build` (or `make e2e`), or set WHARF_BIN", p)
	}
	return p, nil
}

// startWharf starts `wharf serve` with every upstream mapped onto a local
// registry, the suite's short tag TTL and a virtual host for ghcr.io
// (localhost:PORT, for the conformance run over the virtual-host route).
func startWharf(ctx context.Context, tb *mainTB, dir string, ups []*upstream) (*wharf, error) {
	bin, err := wharfBinary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(addr, ":")
	w := &wharf{
		addr:      addr,
		adminAddr: admin,
		vhost:     "localhost:" + port,
		logPath:   filepath.Join(dir, "wharf.log"),
		client:    &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: time.Minute},
	}
	tb.Cleanup(w.client.CloseIdleConnections)
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil {
		w.version = strings.TrimSpace(string(out))
	}
	cfgPath := filepath.Join(dir, "wharf.yaml")
	cfg := fmt.Sprintf(`# wharf configuration of the end-to-end suite.
log_format: json
log_level: info
tag_ttl: %s
upstreams:
  ghcr.io:
    virtual_hosts: [%q]
`, tagTTL, w.vhost)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	argv := []string{bin, "serve",
		"--config", cfgPath,
		"--listen", addr,
		"--admin-listen", admin,
		"--data-dir", filepath.Join(dir, "data"),
	}
	for _, u := range ups {
		argv = append(argv, "--upstream", u.name+"="+u.reg.URL())
	}
	if w.proc, err = startProcess("wharf", w.logPath, baseEnv(), argv...); err != nil {
		return nil, err
	}
	tb.Cleanup(w.proc.stop)
	err = waitFor(ctx, w.proc, 30*time.Second, "wharf /healthz", func(ctx context.Context) error {
		return httpOK(ctx, w.client, "http://"+admin+"/healthz")
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// logEntry is one JSON line of wharf's log; request lines have Msg
// "request".
type logEntry struct {
	Msg      string `json:"msg"`
	Level    string `json:"level"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	Status   int    `json:"status"`
	Upstream string `json:"upstream"`
	Repo     string `json:"repo"`
	Ref      string `json:"ref"`
	Cache    string `json:"cache"`
	Error    string `json:"error"`
	raw      string
}

func (e logEntry) String() string { return e.raw }

// logMark is a position in wharf's log.
type logMark int64

// mark returns the current end of wharf's log.
func (w *wharf) mark(t *testing.T) logMark {
	t.Helper()
	st, err := os.Stat(w.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return logMark(st.Size())
}

// logSettle is how long requestsSince keeps reading after its marker
// showed up, for lines of earlier requests written after the marker's.
const logSettle = 250 * time.Millisecond

// requestsSince returns the request lines wharf logged after m, for
// requests that finished before the call. wharf logs a request after its
// response went out, so a client can be done a moment before its last line
// is written: a request to a unique invalid path is sent, the log is read
// until that request shows up, and once more a moment later, so that a line
// of an earlier request that lost the race to the marker's is not missed.
func (w *wharf) requestsSince(t *testing.T, m logMark) []logEntry {
	t.Helper()
	marker := fmt.Sprintf("/v2/_e2e_sync_%d", w.syncSeq.Add(1))
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+w.addr+marker, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("wharf log sync request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, found := w.readLog(t, m, marker); found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wharf never logged the sync request %s; log tail:\n%s", marker, w.proc.tail(2000))
		}
		time.Sleep(pollInterval)
	}
	time.Sleep(logSettle)
	entries, _ := w.readLog(t, m, marker)
	return entries
}

// readLog parses the request lines after m, leaving out sync markers, and
// reports whether the marker was among them.
func (w *wharf) readLog(t *testing.T, m logMark, marker string) (entries []logEntry, found bool) {
	t.Helper()
	f, err := os.Open(w.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(int64(m), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) {
			continue
		}
		var e logEntry
		if err := json.Unmarshal(line, &e); err != nil {
			continue // a line still being written
		}
		e.raw = string(line)
		switch {
		case e.Msg != "request":
		case e.Path == marker:
			found = true
		case strings.HasPrefix(e.Path, "/v2/_e2e_sync_"):
		default:
			entries = append(entries, e)
		}
	}
	return entries, found
}

// filterLog returns the entries for which keep is true.
func filterLog(entries []logEntry, keep func(logEntry) bool) []logEntry {
	var out []logEntry
	for _, e := range entries {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// forRepo keeps the entries wharf routed to upstream repo.
func forRepo(up, repo string) func(logEntry) bool {
	return func(e logEntry) bool { return e.Upstream == up && e.Repo == repo }
}

// pathHas keeps the entries whose request path contains s.
func pathHas(s string) func(logEntry) bool {
	return func(e logEntry) bool { return strings.Contains(e.Path, s) }
}

// get sends a GET to wharf's registry API and returns status, headers and
// body.
func (w *wharf) get(t *testing.T, host, path string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+w.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, resp.Header, body
}

// ownWharf is a wharf process a test starts for itself, beside the suite's.
type ownWharf struct {
	name   string      // for process logs, e.g. "proxy"
	config string      // the YAML configuration file's content
	args   []string    // further flags of `wharf serve`
	ups    []*upstream // upstreams mapped onto the suite's fake registries
	// alsoUp are further --upstream NAME=URL mappings.
	alsoUp []string
	// waitFor is a listener address to wait for besides /healthz.
	waitFor string
}

// startOwnWharf starts `wharf serve` as o says, with its log, data and
// configuration in dir, and waits until it serves. The process is
// stopped when the test ends.
func startOwnWharf(t *testing.T, dir string, o ownWharf) (w *wharf, bin, dataDir string) {
	t.Helper()
	bin, err := wharfBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var addrs [2]string
	for i := range addrs {
		if addrs[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	w = &wharf{
		addr:      addrs[0],
		adminAddr: addrs[1],
		logPath:   filepath.Join(dir, "wharf.log"),
		client:    &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: time.Minute},
	}
	t.Cleanup(w.client.CloseIdleConnections)
	cfgPath := filepath.Join(dir, "wharf.yaml")
	if err := os.WriteFile(cfgPath, []byte(o.config), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir = filepath.Join(dir, "data")
	argv := append([]string{bin, "serve",
		"--config", cfgPath,
		"--listen", w.addr,
		"--admin-listen", w.adminAddr,
		"--data-dir", dataDir,
	}, o.args...)
	for _, u := range o.ups {
		argv = append(argv, "--upstream", u.name+"="+u.reg.URL())
	}
	for _, m := range o.alsoUp {
		argv = append(argv, "--upstream", m)
	}
	if w.proc, err = startProcess("wharf ("+o.name+")", w.logPath, baseEnv(), argv...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.proc.stop)
	ctx := t.Context()
	if err := waitFor(ctx, w.proc, 30*time.Second, "wharf /healthz", func(ctx context.Context) error {
		return httpOK(ctx, w.client, "http://"+w.adminAddr+"/healthz")
	}); err != nil {
		t.Fatal(err)
	}
	if o.waitFor != "" {
		if err := waitFor(ctx, w.proc, 30*time.Second, "wharf listener "+o.waitFor, func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", o.waitFor)
			if err != nil {
				return err
			}
			return c.Close()
		}); err != nil {
			t.Fatal(err)
		}
	}
	return w, bin, dataDir
}
