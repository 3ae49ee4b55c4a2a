package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/server"
)

// check asserts a result's exit code and that stdout and stderr contain
// the given strings.
func (r cliResult) check(t *testing.T, code int, inStdout, inStderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range inStdout {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range inStderr {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// TestUsageErrors: bad flags and arguments end with exit code 2 and one
// line on stderr naming the problem and the command's help; nothing is
// contacted.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"stats", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"stats", "extra"}, `unexpected argument "extra"`},
		{[]string{"gc", "now"}, `unexpected argument "now"`},
		{[]string{"ls", "a", "b"}, `unexpected argument "b"`},
		{[]string{"ls", "--blobs", "nginx"}, "--blobs lists every blob"},
		{[]string{"rm"}, "no reference given"},
		{[]string{"rm", "nginx", "Not/Valid"}, `invalid image reference "Not/Valid"`},
		{[]string{"rm", "sha256:abc"}, `invalid image reference "sha256:abc"`},
		{[]string{"prefetch"}, "no references given"},
		{[]string{"prefetch", "-j", "17", "nginx"}, "-j 17: want 1 to 16"},
		{[]string{"prefetch", "-j", "x", "nginx"}, `invalid value "x" for flag -j`},
		{[]string{"prefetch", "--platform", "linux", "nginx"}, `platform "linux"`},
		{[]string{"prefetch", "UPPER"}, `invalid image reference "UPPER"`},
		{[]string{"prefetch", "sha256:" + strings.Repeat("a", 64)}, "bare digest"},
		{[]string{"prefetch", "-f", filepath.Join(dir, "missing.txt")}, "missing.txt"},
		{[]string{"export", "sha256:" + strings.Repeat("a", 64), "-o", "x"}, "bare digest"},
		{[]string{"export"}, "standard output is a terminal"},
		{[]string{"export", "-o", "-", "--json"}, "--json needs -o FILE"},
		{[]string{"import"}, "want one archive"},
		{[]string{"import", "a", "b"}, "want one archive"},
		{[]string{"import", dir}, "is a directory"},
		{[]string{"import", filepath.Join(dir, "missing.tar")}, "missing.tar"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCLI(t, cliOptions{outTTY: true, env: map[string]string{"WHARF_SERVER": "http://127.0.0.1:1"}}, tt.args...)
			r.check(t, exitUsage, nil, []string{tt.want, "(see wharf " + tt.args[0] + " --help)"})
			if lines := strings.Count(r.stderr, "\n"); lines != 1 {
				t.Errorf("%d lines on stderr, want 1:\n%s", lines, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "wharf "+tt.args[0]+": ") {
				t.Errorf("stderr does not name the command: %q", r.stderr)
			}
		})
	}
}

// TestHelp: --help of every command prints usage, flags, examples and the
// exit codes on stdout and exits 0; "wharf help CMD" does the same.
func TestHelp(t *testing.T) {
	for _, c := range clientCommands {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				r := runCLI(t, cliOptions{}, args...)
				r.check(t, exitOK, []string{"Usage: wharf " + c.name, "Flags:", "--server URL", "--json", "Examples:", "Exit codes:"}, nil)
				if r.stderr != "" {
					t.Errorf("stderr: %s", r.stderr)
				}
			})
		}
	}
	r := runCLI(t, cliOptions{}, "help")
	r.check(t, exitOK, []string{"wharf serve", "wharf prefetch [REF... | -]", "wharf import FILE|-", "Exit codes:"}, nil)
}

// TestNoServer: exit code 3 with one line saying which server did not
// answer and why, or which data directory could not be used.
func TestNoServer(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"closed port", []string{"stats", "--server", "http://127.0.0.1:1"}, nil, "no wharf answers at http://127.0.0.1:1: dial tcp"},
		{"env server", []string{"ls"}, map[string]string{"WHARF_SERVER": "http://127.0.0.1:1"}, "no wharf answers at http://127.0.0.1:1"},
		{"missing data dir", []string{"ls", "--data-dir", filepath.Join(dir, "nope")}, nil, "data directory " + filepath.Join(dir, "nope") + " does not exist"},
		{"admin listen closed", []string{"gc"}, map[string]string{"WHARF_ADMIN_LISTEN": "127.0.0.1:1", "WHARF_DATA_DIR": filepath.Join(dir, "nope")},
			"no wharf answers at http://127.0.0.1:1 and data directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, cliOptions{env: tt.env}, tt.args...)
			r.check(t, exitNoServer, nil, []string{tt.want})
			if lines := strings.Count(r.stderr, "\n"); lines != 1 {
				t.Errorf("%d lines on stderr, want 1:\n%s", lines, r.stderr)
			}
		})
	}
}

func TestStats(t *testing.T) {
	f, url := newFakeAdmin(t)
	started := time.Now().Add(-3 * time.Hour)
	f.stats = adminapi.Stats{
		Version: "1.2.3", Started: started,
		Cache: adminapi.Cache{Bytes: 1_200_000_000, MaxBytes: 10_000_000_000, Manifests: 34, Blobs: 120, MaxAge: "720h0m0s",
			LastGC: &adminapi.GCReport{Manifests: 1, Blobs: 2, Bytes: 3000, Duration: "1.5s"}},
		Traffic: adminapi.Traffic{Requests: 1234, Hits: 1000, Misses: 234, HitRatio: 1000.0 / 1234, BytesFromCache: 5e9, BytesFetched: 2e9, StaleServes: 3},
	}
	f.upstreams = []adminapi.Upstream{
		{Name: "docker.io", URL: "https://registry-1.docker.io", Health: "ok", RateLimit: &adminapi.RateLimit{Limit: 100, Remaining: 98, Window: "6h"}},
		{Name: "ghcr.io", URL: "https://ghcr.io", Health: "down", Error: "dial tcp: i/o timeout"},
	}
	r := runCLI(t, cliOptions{}, "stats", "--server", url)
	r.check(t, exitOK, []string{
		"wharf 1.2.3, up 3h0m0s",
		"1.20 GB of 10.0 GB (12%), 34 manifests, 120 blobs",
		"720h0m0s",
		"1234 requests: 1000 hits, 234 misses (hit ratio 81.0%), 3 stale",
		"5.00 GB served from the cache",
		"2.00 GB fetched from upstreams",
		"evicted 1 manifest, 2 blobs, 3.00 kB freed",
		"UPSTREAM", "docker.io  ok", "98/100 left per 6h",
		"down: dial tcp: i/o timeout",
	}, nil)
	if diff := cmp.Diff([]string{"GET /api/v1/stats", "GET /api/v1/upstreams"}, f.log()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}

	r = runCLI(t, cliOptions{}, "stats", "--server", url, "--json", "--probe")
	r.check(t, exitOK, nil, nil)
	var got struct {
		Stats     adminapi.Stats
		Upstreams []adminapi.Upstream
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, r.stdout)
	}
	if got.Stats.Version != "1.2.3" || len(got.Upstreams) != 2 {
		t.Errorf("stats --json = %+v", got)
	}
	if last := f.log()[len(f.log())-1]; last != "GET /api/v1/upstreams?probe=1" {
		t.Errorf("--probe sent %q", last)
	}
}

func TestToken(t *testing.T) {
	f, url := newFakeAdmin(t)
	f.token = "s3cret"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{"flag", []string{"--token", "s3cret"}, nil, exitOK},
		{"env", nil, map[string]string{"WHARF_ADMIN_TOKEN": "s3cret"}, exitOK},
		{"flag wins", []string{"--token", "s3cret"}, map[string]string{"WHARF_ADMIN_TOKEN": "wrong"}, exitOK},
		{"missing", nil, nil, exitFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, cliOptions{env: tt.env}, append([]string{"gc", "--server", url}, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit code %d, want %d: %s", r.code, tt.code, r.stderr)
			}
			if tt.code != exitOK && !strings.Contains(r.stderr, "pass --token or set WHARF_ADMIN_TOKEN") {
				t.Errorf("stderr %q gives no hint", r.stderr)
			}
		})
	}
	// The token can come from the configuration file.
	cfgFile := filepath.Join(t.TempDir(), "wharf.yaml")
	os.WriteFile(cfgFile, []byte("admin_token: s3cret\n"), 0o600)
	r := runCLI(t, cliOptions{}, "gc", "--server", url, "--config", cfgFile)
	r.check(t, exitOK, nil, nil)
}

func TestLs(t *testing.T) {
	f, url := newFakeAdmin(t)
	now := time.Now()
	for i := range 2500 { // three pages of 1000
		f.repos = append(f.repos, adminapi.Repository{Upstream: "quay.io", Name: fmt.Sprintf("bulk/r%04d", i), Tags: 1, Bytes: 10})
	}
	f.repos = append(f.repos,
		adminapi.Repository{Upstream: "docker.io", Name: "library/nginx", Tags: 2, Bytes: 70_000_000, LastAccess: now.Add(-3 * time.Hour)},
		adminapi.Repository{Upstream: "registry.k8s.io", Name: "ingress-nginx/controller", Tags: 1, Bytes: 100_000_000, LastAccess: now.Add(-5 * 24 * time.Hour)},
		adminapi.Repository{Upstream: "ghcr.io", Name: "o/r", Tags: 1, Bytes: 1000},
	)
	dgst := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	f.tags["docker.io/library/nginx"] = []adminapi.Tag{
		{Upstream: "docker.io", Repo: "library/nginx", Name: "1.27", Digest: dgst, Bytes: 70_000_000, LastAccess: now.Add(-2 * time.Minute)},
		{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: dgst, Bytes: 70_000_000},
	}
	f.blobs = []adminapi.Blob{{Digest: dgst, Bytes: 1500}, {Digest: "sha256:" + strings.Repeat("f", 64), Bytes: 500}}

	tests := []struct {
		name        string
		args        []string
		code        int
		stdout      []string
		notInStdout []string
		stderr      []string
	}{
		{"all pages", []string{}, exitOK, []string{"UPSTREAM/REPOSITORY                       TAGS  SIZE     LAST-ACCESS\n", "quay.io/bulk/r0000", "quay.io/bulk/r2499", "docker.io/library/nginx", "70.0 MB", "3h ago", "5d ago"}, nil, nil},
		{"tags of a repository", []string{"nginx"}, exitOK, []string{"TAG     DIGEST               SIZE     LAST-ACCESS", "1.27    sha256:0123456789ab  70.0 MB  2m ago", "latest", "-"}, []string{"quay.io"}, nil},
		{"tags by full name", []string{"docker.io/library/nginx"}, exitOK, []string{"1.27", "latest"}, nil, nil},
		{"one tag", []string{"nginx:latest"}, exitOK, []string{"latest"}, []string{"1.27"}, nil},
		{"no-trunc", []string{"nginx", "--no-trunc"}, exitOK, []string{dgst}, nil, nil},
		{"tag not cached", []string{"nginx:0.1"}, exitNotFound, nil, nil, []string{"docker.io/library/nginx:0.1 is not cached"}},
		{"repository as filter", []string{"ingress"}, exitOK, []string{"registry.k8s.io/ingress-nginx/controller"}, []string{"library/nginx", "DIGEST"}, nil},
		{"substring matches several", []string{"NGINX/"}, exitOK, []string{"registry.k8s.io/ingress-nginx/controller"}, []string{"docker.io/library/nginx"}, nil},
		{"wildcard", []string{"k8s.io/*controller"}, exitOK, []string{"registry.k8s.io/ingress-nginx/controller"}, []string{"library/nginx"}, nil},
		{"wildcard ?", []string{"bulk/r249?"}, exitOK, []string{"quay.io/bulk/r2490", "quay.io/bulk/r2499"}, []string{"r2500", "r0249"}, nil},
		{"upstream", []string{"--upstream", "ghcr.io"}, exitOK, []string{"ghcr.io/o/r"}, []string{"quay.io"}, nil},
		{"no match", []string{"nothing-like-this"}, exitNotFound, nil, nil, []string{`nothing cached matches "nothing-like-this"`}},
		{"blobs", []string{"--blobs"}, exitOK, []string{"DIGEST", "sha256:0123456789ab  1.50 kB", "2 blobs, 2.00 kB"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, cliOptions{}, append([]string{"ls", "--server", url}, tt.args...)...)
			r.check(t, tt.code, tt.stdout, tt.stderr)
			for _, s := range tt.notInStdout {
				if strings.Contains(r.stdout, s) {
					t.Errorf("stdout has %q:\n%s", s, r.stdout)
				}
			}
		})
	}

	r := runCLI(t, cliOptions{}, "ls", "--server", url, "--json", "ghcr")
	var repos []adminapi.Repository
	if err := json.Unmarshal([]byte(r.stdout), &repos); err != nil || len(repos) != 1 || repos[0].Name != "o/r" {
		t.Errorf("ls --json ghcr = %v, %v:\n%s", repos, err, r.stdout)
	}
	r = runCLI(t, cliOptions{}, "ls", "--server", url, "--json", "nginx:1.27")
	var tags []adminapi.Tag
	if err := json.Unmarshal([]byte(r.stdout), &tags); err != nil || len(tags) != 1 || tags[0].Name != "1.27" {
		t.Errorf("ls --json nginx:1.27 = %v, %v:\n%s", tags, err, r.stdout)
	}
}

func TestRm(t *testing.T) {
	f, url := newFakeAdmin(t)
	dgst := "sha256:" + strings.Repeat("ab", 32)
	f.deletions["docker.io/library/nginx:1.25"] = adminapi.Deletion{Tags: 1, Manifests: 2, Blobs: 5, Bytes: 30_100_000,
		Kept: []adminapi.Kept{{Digest: dgst, Reason: adminapi.KeptTagged, By: []string{"docker.io/library/nginx:1.26"}}}}
	f.deletions["ghcr.io/o/r"] = adminapi.Deletion{Tags: 3, Manifests: 3, Blobs: 9, Bytes: 1000,
		Kept: []adminapi.Kept{{Digest: dgst, Reason: adminapi.KeptInUse}}}
	f.deletions[dgst] = adminapi.Deletion{Blobs: 1, Bytes: 42}

	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		requests []string
	}{
		{"tag", []string{"nginx:1.25"}, exitOK,
			[]string{"removed docker.io/library/nginx:1.25: 1 tag, 2 manifests, 5 blobs; 30.1 MB freed", "kept sha256:abababababab: still tagged by docker.io/library/nginx:1.26"}, nil,
			[]string{"DELETE /api/v1/tags?repo=library%2Fnginx&tag=1.25&upstream=docker.io"}},
		{"repository", []string{"ghcr.io/o/r"}, exitOK,
			[]string{"removed ghcr.io/o/r: 3 tags, 3 manifests, 9 blobs; 1.00 kB freed", "in use right now; retry later"}, nil,
			[]string{"DELETE /api/v1/repositories?repo=o%2Fr&upstream=ghcr.io"}},
		{"bare digest", []string{dgst}, exitOK, []string{"removed " + dgst + ": 0 manifests, 1 blob; 42 B freed"}, nil,
			[]string{"DELETE /api/v1/content/" + dgst}},
		{"digest with name", []string{"nginx@" + dgst}, exitOK, []string{"1 blob"}, nil,
			[]string{"DELETE /api/v1/content/" + dgst}},
		{"not cached, after trying all", []string{"alpine", "nginx:1.25"}, exitNotFound,
			[]string{"removed docker.io/library/nginx:1.25"}, []string{"docker.io/library/alpine: not cached", "1 of 2 not cached"},
			[]string{"DELETE /api/v1/repositories?repo=library%2Falpine&upstream=docker.io", "DELETE /api/v1/tags?repo=library%2Fnginx&tag=1.25&upstream=docker.io"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.log())
			r := runCLI(t, cliOptions{}, append([]string{"rm", "--server", url}, tt.args...)...)
			r.check(t, tt.code, tt.stdout, tt.stderr)
			if diff := cmp.Diff(tt.requests, f.log()[before:]); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}

	r := runCLI(t, cliOptions{}, "rm", "--server", url, "--json", "nginx:1.25", "nginx:9")
	r.check(t, exitNotFound, nil, nil)
	var res []struct {
		Ref      string
		Deletion *adminapi.Deletion
		Error    string
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 2 || res[0].Deletion == nil || res[1].Error != "not cached" {
		t.Errorf("rm --json = %+v, %v:\n%s", res, err, r.stdout)
	}
}

func TestGC(t *testing.T) {
	f, url := newFakeAdmin(t)
	f.gc = adminapi.GCReport{Manifests: 3, Blobs: 10, Bytes: 200_000_000, SizeBefore: 1_200_000_000, SizeAfter: 1_000_000_000, InUse: 2, Duration: "1.2s"}
	r := runCLI(t, cliOptions{}, "gc", "--server", url)
	r.check(t, exitOK, []string{"evicted 3 manifests, 10 blobs, 200 MB freed (cache 1.20 GB → 1.00 GB), 2 skipped in use in 1.2s"}, nil)

	f.gc.Error = "index: disk full"
	r = runCLI(t, cliOptions{}, "gc", "--server", url, "--json")
	r.check(t, exitFailed, []string{`"error": "index: disk full"`}, []string{"eviction failed: index: disk full"})
}

// TestPrefetchRefs: references come from arguments, files and standard
// input, in that order, without duplicates, comments or blank lines.
func TestPrefetchRefs(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "images.txt")
	os.WriteFile(list, []byte("# kubeadm images\nregistry.k8s.io/pause:3.10\n\n  registry.k8s.io/etcd:3.5.15-0  \nnginx\n"), 0o644)
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("nginx\n\nNot Valid\n"), 0o644)
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  []string
		err   string
	}{
		{"args", []string{"nginx:1.27", "ghcr.io/o/r@sha256:" + strings.Repeat("a", 64)}, "", []string{"nginx:1.27", "ghcr.io/o/r@sha256:" + strings.Repeat("a", 64)}, ""},
		{"file", []string{"-f", list}, "", []string{"registry.k8s.io/pause:3.10", "registry.k8s.io/etcd:3.5.15-0", "nginx"}, ""},
		{"stdin", []string{"-"}, "registry.k8s.io/kube-apiserver:v1.31.0\n# comment\nregistry.k8s.io/coredns/coredns:v1.11.1\n", []string{"registry.k8s.io/kube-apiserver:v1.31.0", "registry.k8s.io/coredns/coredns:v1.11.1"}, ""},
		{"all, deduplicated", []string{"nginx", "-", "-f", list, "-"}, "alpine\nnginx\n", []string{"nginx", "alpine", "registry.k8s.io/pause:3.10", "registry.k8s.io/etcd:3.5.15-0"}, ""},
		{"bad line named", []string{"-f", bad}, "", nil, bad + ":3: invalid image reference"},
		{"bad stdin line named", []string{"-"}, "ok\nBAD\n", nil, "stdin:2: invalid image reference"},
		{"empty stdin", []string{"-"}, "# nothing\n", nil, "no references given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := gatherRefs(strings.NewReader(tt.stdin), argsOnly(tt.args), filesOnly(tt.args))
			if tt.err != "" {
				r := runCLI(t, cliOptions{stdin: tt.stdin, env: map[string]string{"WHARF_SERVER": "http://127.0.0.1:1"}}, append([]string{"prefetch"}, tt.args...)...)
				r.check(t, exitUsage, nil, []string{tt.err})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("refs (-want +got):\n%s", diff)
			}
			// The same through the command, to the server.
			f, url := newFakeAdmin(t)
			r := runCLI(t, cliOptions{stdin: tt.stdin}, append([]string{"prefetch", "--server", url, "--platform", "linux/arm64/v8", "-j", "3"}, tt.args...)...)
			r.check(t, exitOK, nil, nil)
			want := adminapi.PrefetchRequest{Refs: tt.want, Platforms: []string{"linux/arm64/v8"}, Concurrency: 3}
			if diff := cmp.Diff(want, f.prefetchReq); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

// argsOnly and filesOnly split a prefetch command line as its flag set
// does, for calling gatherRefs directly.
func argsOnly(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-f" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func filesOnly(args []string) []string {
	var out []string
	for i := 0; i < len(args)-1; i++ {
		if args[i] == "-f" {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestPrefetchProgress(t *testing.T) {
	tests := []struct {
		name   string
		refs   []string
		errTTY bool
		code   int
		stdout []string
		stderr []string
	}{
		{"plain lines", []string{"nginx", "alpine"}, false, exitOK,
			[]string{"2 done, 0 failed; 3.00 kB fetched, 1.00 kB already cached"},
			[]string{"nginx queued\n", "nginx running\n", "nginx done sha256:abababababab 2.00 kB (500 B already cached)\n", "alpine done"}},
		{"a failure", []string{"nginx", "failing/image"}, false, exitFailed,
			[]string{"1 done, 1 failed"},
			[]string{"failing/image failed: manifest unknown\n", "wharf prefetch: failing/image: manifest unknown", "1 of 2 references failed"}},
		{"bars", []string{"nginx", "alpine"}, true, exitOK,
			[]string{"2 done, 0 failed"},
			[]string{"\x1b[2A", "\x1b[2K", "nginx", "100%", "2.00 kB / 2.00 kB  done"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, url := newFakeAdmin(t)
			r := runCLI(t, cliOptions{errTTY: tt.errTTY}, append([]string{"prefetch", "--server", url}, tt.refs...)...)
			r.check(t, tt.code, tt.stdout, tt.stderr)
			// Each state is printed once in plain mode.
			if !tt.errTTY && strings.Count(r.stderr, "nginx running") != 1 {
				t.Errorf("state printed more than once:\n%s", r.stderr)
			}
		})
	}

	_, url := newFakeAdmin(t)
	r := runCLI(t, cliOptions{}, "prefetch", "--server", url, "--json", "nginx")
	var job adminapi.PrefetchJob
	if err := json.Unmarshal([]byte(r.stdout), &job); err != nil || job.State != adminapi.StateDone || len(job.Items) != 1 {
		t.Errorf("prefetch --json = %+v, %v", job, err)
	}
}

// TestPrefetchInterrupt: an interrupt cancels the job on the server and
// ends with exit code 130.
func TestPrefetchInterrupt(t *testing.T) {
	f, url := newFakeAdmin(t)
	f.stuck = true
	f.polled = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan cliResult, 1)
	go func() { done <- runCLI(t, cliOptions{ctx: ctx}, "prefetch", "--server", url, "nginx") }()
	select {
	case <-f.polled:
	case <-time.After(30 * time.Second):
		t.Fatal("the job was never polled")
	}
	cancel()
	var r cliResult
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("prefetch did not end after the interrupt")
	}
	r.check(t, exitInterrupted, nil, []string{"canceled job job-1", "wharf prefetch: interrupted"})
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.canceled {
		t.Error("the job was not canceled on the server")
	}
}

func TestExport(t *testing.T) {
	archive := []byte(strings.Repeat("tar!", 1000))
	t.Run("to a file", func(t *testing.T) {
		f, url := newFakeAdmin(t)
		f.export, f.exportImages = archive, 2
		out := filepath.Join(t.TempDir(), "x.tar")
		r := runCLI(t, cliOptions{outTTY: true}, "export", "--server", url, "-o", out, "nginx:1.27", "ghcr.io/o/r")
		r.check(t, exitOK, nil, []string{"exported 2 images, 4.00 kB in", "to " + out})
		if b, err := os.ReadFile(out); err != nil || string(b) != string(archive) {
			t.Errorf("file: %v, %d bytes", err, len(b))
		}
		if _, err := os.Stat(out + ".partial"); !os.IsNotExist(err) {
			t.Errorf("partial file left: %v", err)
		}
		if got := f.log(); len(got) != 1 || got[0] != "GET /api/v1/export?ref=nginx%3A1.27&ref=ghcr.io%2Fo%2Fr" {
			t.Errorf("requests %v", got)
		}
	})
	t.Run("to stdout", func(t *testing.T) {
		f, url := newFakeAdmin(t)
		f.export, f.exportImages = archive, 5
		for _, args := range [][]string{{}, {"-o", "-"}} {
			r := runCLI(t, cliOptions{}, append([]string{"export", "--server", url}, args...)...)
			r.check(t, exitOK, nil, []string{"exported 5 images", "to standard output"})
			if r.stdout != string(archive) {
				t.Errorf("stdout has %d bytes, want the archive", len(r.stdout))
			}
		}
	})
	t.Run("progress and json", func(t *testing.T) {
		f, url := newFakeAdmin(t)
		f.export, f.exportImages = archive, 1
		out := filepath.Join(t.TempDir(), "x.tar")
		r := runCLI(t, cliOptions{errTTY: true}, "export", "--server", url, "-o", out, "--json")
		r.check(t, exitOK, []string{`"images": 1`, `"bytes": 4000`}, []string{"\x1b[2K", "x.tar", "100%", "done"})
	})
	t.Run("failure leaves no file", func(t *testing.T) {
		f, url := newFakeAdmin(t)
		f.export, f.exportAbort = archive, true
		dir := t.TempDir()
		out := filepath.Join(dir, "x.tar")
		r := runCLI(t, cliOptions{}, "export", "--server", url, "-o", out)
		r.check(t, exitFailed, nil, []string{"wharf export: export:"})
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("files left after a failed export: %v", entries)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		f, url := newFakeAdmin(t)
		f.export, f.exportStall = archive, make(chan struct{})
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan cliResult, 1)
		go func() {
			done <- runCLI(t, cliOptions{ctx: ctx}, "export", "--server", url, "-o", filepath.Join(dir, "x.tar"))
		}()
		select {
		case <-f.exportStall:
		case <-time.After(30 * time.Second):
			t.Fatal("the export never started")
		}
		cancel()
		var r cliResult
		select {
		case r = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("export did not end after the interrupt")
		}
		r.check(t, exitInterrupted, nil, []string{"interrupted"})
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("files left after an interrupted export: %v", entries)
		}
	})
	t.Run("no wharf at the base URL", func(t *testing.T) {
		_, url := newFakeAdmin(t)
		r := runCLI(t, cliOptions{}, "export", "--server", url+"/nothing-here", "-o", filepath.Join(t.TempDir(), "x"))
		r.check(t, exitNoServer, nil, nil)
	})
}

func TestImport(t *testing.T) {
	archive := strings.Repeat("layout", 500)
	file := filepath.Join(t.TempDir(), "x.tar")
	os.WriteFile(file, []byte(archive), 0o644)
	tests := []struct {
		name   string
		args   []string
		stdin  string
		errTTY bool
		stderr []string
	}{
		{"file", []string{file}, "", false, nil},
		{"flags after the file", []string{file, "--json"}, "", false, nil},
		{"stdin", []string{"-"}, archive, false, nil},
		{"progress", []string{file}, "", true, []string{"\x1b[2K", "import x.tar", "100%", "done"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, url := newFakeAdmin(t)
			r := runCLI(t, cliOptions{stdin: tt.stdin, errTTY: tt.errTTY}, append([]string{"import", "--server", url}, tt.args...)...)
			want := []string{"imported 1 image: 2 manifests, 3 blobs (1 already cached), 3.00 kB read", "  docker.io/library/nginx:1.27"}
			if tt.name == "flags after the file" {
				want = []string{`"manifests": 2`}
			}
			r.check(t, exitOK, want, tt.stderr)
			f.mu.Lock()
			defer f.mu.Unlock()
			if string(f.imported) != archive {
				t.Errorf("server received %d bytes, want the archive", len(f.imported))
			}
		})
	}

	f, url := newFakeAdmin(t)
	f.importFail = "blob sha256:aa: digest mismatch"
	r := runCLI(t, cliOptions{}, "import", "--server", url, file)
	r.check(t, exitFailed, nil, []string{"wharf import: " + file + ": blob sha256:aa: digest mismatch"})
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args []string
		pos  []string
		json bool
	}{
		{[]string{"a", "--json", "b"}, []string{"a", "b"}, true},
		{[]string{"--json", "a"}, []string{"a"}, true},
		{[]string{"a", "-"}, []string{"a", "-"}, false},
		{[]string{"a", "--", "--json"}, []string{"a", "--json"}, false},
		{[]string{"--", "-x"}, []string{"-x"}, false},
		{nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var cf commonFlags
			cmd := gcCommand(stdio{}, &cf)
			fs := newFlagSet(cmd, stdio{}, &cf)
			pos, err := parse(fs, cmd.doc, stdio{}, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.pos, pos); diff != "" || cf.json != tt.json {
				t.Errorf("positional (-want +got):\n%s json %v", diff, cf.json)
			}
		})
	}
}

// TestAdminListenProbe: without --server, the admin API at the
// configuration's admin_listen is used when it answers, with the token of
// the environment.
func TestAdminListenProbe(t *testing.T) {
	f, url := newFakeAdmin(t)
	f.token = "tok"
	addr := strings.TrimPrefix(url, "http://")
	r := runCLI(t, cliOptions{env: map[string]string{"WHARF_ADMIN_LISTEN": addr, "WHARF_ADMIN_TOKEN": "tok"}}, "gc", "-v")
	r.check(t, exitOK, []string{"evicted 0 manifests"}, []string{"using the wharf at " + url + " (admin_listen)"})
	if got := f.log(); len(got) != 1 || got[0] != "POST /api/v1/gc" {
		t.Errorf("requests %v", got)
	}
	// Without -v nothing says which path was taken.
	r = runCLI(t, cliOptions{env: map[string]string{"WHARF_ADMIN_LISTEN": addr, "WHARF_ADMIN_TOKEN": "tok"}}, "gc")
	r.check(t, exitOK, nil, nil)
	if r.stderr != "" {
		t.Errorf("stderr without -v: %q", r.stderr)
	}
}

// TestDataDirInUse: a data directory another wharf holds, whose admin API
// does not answer, ends with exit code 3 and a hint to pass --server.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = dir
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Resolve(nil, func(string) (string, bool) { return "", false }); err != nil {
		t.Fatal(err)
	}
	inst, err := server.New(context.Background(), cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	for _, args := range [][]string{{"stats", "--data-dir", dir}, {"import", "-"}} {
		r := runCLI(t, cliOptions{env: map[string]string{"WHARF_DATA_DIR": dir}}, args...)
		r.check(t, exitNoServer, nil, []string{"data directory " + dir + " is in use by a running wharf", "pass --server URL"})
	}
	r := runCLI(t, cliOptions{env: map[string]string{"WHARF_DATA_DIR": dir}}, "gc")
	r.check(t, exitNoServer, nil, []string{"data directory " + dir + " is in use by a running wharf whose admin API at http://127.0.0.1:1 does not answer; pass --server URL"})
	// A token in the configuration guards the in-process API too; --token
	// cannot lock the command out of it.
	other := t.TempDir()
	for _, args := range [][]string{{"gc"}, {"gc", "--token", "wrong"}} {
		r := runCLI(t, cliOptions{env: map[string]string{"WHARF_DATA_DIR": other, "WHARF_ADMIN_TOKEN": "0123456789abcdef0123"}}, args...)
		r.check(t, exitOK, []string{"evicted 0 manifests"}, nil)
	}
}
