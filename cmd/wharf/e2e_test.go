package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// wharfCLI runs the wharf binary with args and an environment that keeps
// the machine's configuration out: no WHARF_* but env, the default admin
// listener on a closed port.
func wharfCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(wharfBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "WHARF_ADMIN_LISTEN=127.0.0.1:1"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// stopWharf ends a wharf serve process with SIGTERM and waits for it.
func stopWharf(t *testing.T, p *process) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

// TestEndToEnd: the subcommands against a real wharf process and on a data
// directory with no server: prefetch an image, list it, export it, import
// the archive into another data directory in-process, serve that one with
// the upstream down and pull the image whole from the cache, remove the
// tag.
func TestEndToEnd(t *testing.T) {
	up := registrytest.New(t, registrytest.Options{})
	img := registrytest.RandomImage(t, 7, 300_000, 1<<20)
	up.PushImage(t, "team/app", "v1", img)
	const ref = "ghcr.io/team/app:v1"

	dir := t.TempDir()
	p := startWharf(t, filepath.Join(dir, "first"), "--upstream", "ghcr.io="+up.URL())
	server := "http://" + p.admin

	r := wharfCLI(t, nil, "prefetch", "--server", server, ref)
	r.check(t, exitOK, []string{"1 done, 0 failed"}, []string{ref + " done"})

	r = wharfCLI(t, nil, "ls", "--server", server)
	r.check(t, exitOK, []string{"UPSTREAM/REPOSITORY", "ghcr.io/team/app"}, nil)
	r = wharfCLI(t, nil, "ls", "--server", server, "ghcr.io/team/app")
	r.check(t, exitOK, []string{"TAG", "v1"}, nil)

	r = wharfCLI(t, []string{"WHARF_SERVER=" + server}, "stats", "--json")
	r.check(t, exitOK, nil, nil)
	var stats struct {
		Stats     adminapi.Stats      `json:"stats"`
		Upstreams []adminapi.Upstream `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &stats); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, r.stdout)
	}
	if stats.Stats.Cache.Manifests < 1 || stats.Stats.Cache.Blobs < 3 || stats.Stats.Cache.Bytes < 1<<20 {
		t.Errorf("stats after prefetch: %+v", stats.Stats.Cache)
	}

	archive := filepath.Join(dir, "x.tar")
	r = wharfCLI(t, nil, "export", "--server", server, "-o", archive)
	r.check(t, exitOK, nil, []string{"exported 1 image", archive})
	stopWharf(t, p)

	// No server runs: import opens the other data directory itself.
	other := filepath.Join(dir, "other")
	r = wharfCLI(t, nil, "import", archive, "--data-dir", other, "-v")
	r.check(t, exitOK, []string{"imported 1 image", ref}, []string{"opened data directory " + other})

	// A damaged archive is rejected whole: nothing is recorded.
	whole, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged.tar")
	os.WriteFile(damaged, whole[:len(whole)/2], 0o644)
	third := filepath.Join(dir, "third")
	r = wharfCLI(t, nil, "import", "--data-dir", third, damaged)
	r.check(t, exitFailed, nil, []string{"wharf import: " + damaged + ": import rejected"})
	r = wharfCLI(t, nil, "ls", "--data-dir", third, "team/app")
	r.check(t, exitNotFound, nil, nil)

	// A reference that is not cached is not exported.
	r = wharfCLI(t, nil, "export", "--data-dir", other, "-o", filepath.Join(dir, "none.tar"), "ghcr.io/team/other:v1")
	r.check(t, exitNotFound, nil, []string{"NOT_FOUND"})

	// Serve it with the upstream down: everything comes from the cache.
	up.Down()
	p2 := startWharf(t, other, "--upstream", "ghcr.io="+up.URL())
	pullFromCache(t, "http://"+p2.addr, "ghcr.io/team/app", "v1", img)

	server2 := "http://" + p2.admin
	r = wharfCLI(t, nil, "rm", "--server", server2, ref)
	r.check(t, exitOK, []string{"removed " + ref + ": 1 tag"}, nil)
	r = wharfCLI(t, nil, "ls", "--server", server2, ref)
	r.check(t, exitNotFound, nil, []string{ref + " is not cached"})
	r = wharfCLI(t, nil, "rm", "--server", server2, ref)
	r.check(t, exitNotFound, nil, []string{"not cached"})
}

// pullFromCache pulls repo:tag as a client would and checks the manifest
// and every blob against img, each answered from the cache.
func pullFromCache(t *testing.T, base, repo, tag string, img v1.Image) {
	t.Helper()
	wantManifest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, accept string) ([]byte, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/v2/"+repo+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d, %v: %s", path, resp.StatusCode, err, b)
		}
		return b, resp.Header.Get("X-Wharf-Cache")
	}
	mt, _ := img.MediaType()
	manifest, result := get("/manifests/"+tag, string(mt))
	// The tag was recorded by the import; whether it counts as fresh
	// depends on tag_ttl, and with the upstream down a stale tag is served
	// from the cache too. Never from upstream.
	if result != "hit" && result != "stale" {
		t.Errorf("manifest by tag: X-Wharf-Cache %q, want hit or stale", result)
	}
	if got := digest.FromBytes(manifest); got.String() != wantManifest.String() {
		t.Fatalf("manifest digest %s, want %s", got, wantManifest)
	}
	if _, result := get("/manifests/"+wantManifest.String(), string(mt)); result != "hit" {
		t.Errorf("manifest by digest: X-Wharf-Cache %q, want hit", result)
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs := []v1.Hash{cfg}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, d)
	}
	for _, d := range blobs {
		b, result := get("/blobs/"+d.String(), "")
		if sum := sha256.Sum256(b); "sha256:"+hex.EncodeToString(sum[:]) != d.String() {
			t.Errorf("blob %s: content does not match its digest (%d bytes)", d, len(b))
		}
		if result != "hit" {
			t.Errorf("blob %s: X-Wharf-Cache %q, want hit", d, result)
		}
	}
}
