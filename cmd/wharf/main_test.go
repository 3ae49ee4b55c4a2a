package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

var wharfBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wharf-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wharfBin = filepath.Join(dir, "wharf")
	out, err := exec.Command("go", "build", "-o", wharfBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building wharf: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// The in-process commands start servers and clients of their own;
		// none may outlive its command.
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
			goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: :5000\ntag_tll: 5m\n"), 0o644)
	invalid := filepath.Join(dir, "invalid.yaml")
	os.WriteFile(invalid, []byte("upstreams:\n  ghcr.io:\n    url: ftp://x\ntag_ttl: -1s\n"), 0o644)
	tests := []struct {
		args     []string
		code     int
		contains []string
	}{
		{[]string{"version"}, 0, []string{"wharf "}},
		{[]string{"help"}, 0, []string{"wharf serve"}},
		{[]string{}, 2, []string{"Usage"}},
		{[]string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{[]string{"serve", "--help"}, 0, []string{"--upstream", "WHARF_LISTEN"}},
		{[]string{"serve", "--upstream", "nonsense"}, 2, []string{"nonsense"}},
		{[]string{"serve", "--config", bad}, 2, []string{"line 2", "tag_tll"}},
		{[]string{"serve", "--config", invalid}, 2, []string{"ghcr.io", "tag_ttl"}},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, 2, []string{"missing.yaml"}},
		{[]string{"help"}, 0, []string{"wharf stats", "wharf ls", "wharf rm", "wharf gc", "wharf prefetch", "wharf export", "wharf import", "Exit codes"}},
		{[]string{"help", "serve"}, 0, []string{"--upstream"}},
		{[]string{"prefetch", "--help"}, 0, []string{"Usage: wharf prefetch", "kubeadm config images list | wharf prefetch -"}},
		{[]string{"ls", "--bogus"}, 2, []string{"wharf ls: flag provided but not defined: -bogus (see wharf ls --help)"}},
		{[]string{"rm"}, 2, []string{"wharf rm: no reference given"}},
		{[]string{"stats", "--server", "http://127.0.0.1:1"}, 3, []string{"wharf stats: no wharf answers at http://127.0.0.1:1"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := exec.Command(wharfBin, tt.args...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tt.code, out.String())
			}
			for _, s := range tt.contains {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
			if tt.code == 2 && len(tt.args) > 1 {
				for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
					if !strings.HasPrefix(line, "wharf") {
						t.Errorf("error line does not name the program: %q", line)
					}
				}
			}
		})
	}
}

// process is a wharf serve process.
type process struct {
	cmd   *exec.Cmd
	addr  string // registry API
	admin string // admin listener
	done  chan struct{}
	logs  *bytes.Buffer
}

func startWharf(t *testing.T, dataDir string, args ...string) *process {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"}, args...)
	cmd := exec.Command(wharfBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logs: new(bytes.Buffer)}
	type addrs struct{ api, admin string }
	addrc := make(chan addrs, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(line, '\n'))
			var rec struct {
				Msg, Listen string
				AdminListen string `json:"admin_listen"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "wharf serving" {
				addrc <- addrs{rec.Listen, rec.AdminListen}
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case a := <-addrc:
		p.addr, p.admin = a.api, a.admin
	case <-p.done:
		t.Fatalf("wharf exited: %s", p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("wharf did not start: %s", p.logs.String())
	}
	return p
}

// TestKillDuringDownload: wharf is killed with SIGKILL while it streams an
// uncached blob. After a restart on the same data directory, no partial
// blob is served: the leftover is gone and the blob is fetched again whole.
func TestKillDuringDownload(t *testing.T) {
	up := registrytest.New(t, registrytest.Options{})
	img := registrytest.RandomImage(t, 1, 16<<20)
	up.PushImage(t, "foo/bar", "v1", img)
	ls, _ := img.Layers()
	hd, _ := ls[0].Digest()
	d := digest.Digest(hd.String())
	up.AddFault(registrytest.Fault{Match: registrytest.IsBlobGET(d), ResetAfter: -1, BytesPerSec: 2 << 20, Times: 1})

	dataDir := t.TempDir()
	p := startWharf(t, dataDir, "--upstream", "ghcr.io="+up.URL())
	url := "http://" + p.addr + "/v2/ghcr.io/foo/bar/blobs/" + d.String()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dataDir, "blobs", "tmp")
	if entries, _ := os.ReadDir(tmp); len(entries) == 0 {
		t.Fatalf("no download in progress in %s", tmp)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	resp.Body.Close()

	p2 := startWharf(t, dataDir, "--upstream", "ghcr.io="+up.URL())
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("leftover temp files after restart: %v", entries)
	}
	url = "http://" + p2.addr + "/v2/ghcr.io/foo/bar/blobs/" + d.String()
	head, err := http.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.Header.Get("X-Wharf-Cache") == "hit" {
		t.Fatal("a partial blob survived the kill as a cache hit")
	}
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != 16<<20 || digest.NewDigest(digest.SHA256, h) != d {
		t.Fatalf("after restart: %d bytes, err %v, digest %s", n, err, digest.NewDigest(digest.SHA256, h))
	}
}

// TestServeAndShutdown: the admin endpoints answer, and SIGTERM stops the
// server cleanly (exit code 0).
func TestServeAndShutdown(t *testing.T) {
	up := registrytest.New(t, registrytest.Options{})
	p := startWharf(t, t.TempDir(), "--upstream", "docker.io="+up.URL())
	var admin string
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var rec struct {
			Msg         string
			AdminListen string `json:"admin_listen"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "wharf serving" {
			admin = rec.AdminListen
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	resp, err := http.Get("http://" + p.addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM: %s", code, p.logs.String())
	}
}
