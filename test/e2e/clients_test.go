//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// ---------------------------------------------------------------- dockerd

// dockerd is a Docker Engine with its own data root, exec root, socket and
// daemon.json. The suite's uses wharf as its Docker Hub mirror
// (registry-mirrors, client-compat §1): its graphdriver pull path sends
// plain /v2/library/<name>/... requests, wharf's default route.
// TestHTTPSProxy's reaches wharf as its HTTPS proxy instead.
type dockerd struct {
	dir     string
	sock    string
	cli     string
	env     []string
	proc    *process
	version string
}

func startDockerd(ctx context.Context, tb cleaner, tools map[string]string, dir, mirror string) (*dockerd, error) {
	return startDockerdWith(ctx, tb, tools, dir, dockerdOptions{mirror: mirror})
}

// dockerdOptions set a dockerd apart from the suite's.
type dockerdOptions struct {
	// mirror is the registry-mirrors entry (host:port, plain HTTP); ""
	// configures no mirror.
	mirror string
	// env is added to the daemon's environment (not the CLI's), e.g.
	// HTTPS_PROXY, which dockerd reads once at start.
	env []string
}

// startDockerdWith starts a dockerd in dir configured by o.
func startDockerdWith(ctx context.Context, tb cleaner, tools map[string]string, dir string, o dockerdOptions) (*dockerd, error) {
	for _, sub := range []string{"root", "exec", "cli"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	d := &dockerd{dir: dir, sock: filepath.Join(dir, "docker.sock"), cli: tools["docker"]}
	// A daemon.json of its own, so the machine's /etc/docker/daemon.json is
	// never read; the mirror is configured the way users do.
	// dockerd 20.10 would otherwise write its trust key to /etc/docker
	// (deprecated-key-path exists only as a daemon.json key).
	daemonCfg := map[string]any{
		"deprecated-key-path": filepath.Join(dir, "key.json"),
	}
	if o.mirror != "" {
		daemonCfg["registry-mirrors"] = []string{"http://" + o.mirror}
	}
	daemonJSON, err := json.Marshal(daemonCfg)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, daemonJSON, 0o644); err != nil {
		return nil, err
	}
	argv := []string{tools["dockerd"],
		"--config-file", cfg,
		"--data-root", filepath.Join(dir, "root"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", "unix://" + d.sock,
		"--storage-driver", "vfs",
		"--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
	}
	if d.proc, err = startProcess("dockerd", filepath.Join(dir, "dockerd.log"), baseEnv(o.env...), argv...); err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		d.proc.stop()
		// dockerd stops the containerd it started on SIGTERM; if it could
		// not, that containerd is found by the pid it wrote.
		killPIDFile(filepath.Join(dir, "exec", "containerd", "containerd.pid"), "containerd")
	})
	d.env = baseEnv("DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(dir, "cli"))
	err = waitFor(ctx, d.proc, 60*time.Second, "dockerd API", func(ctx context.Context) error {
		out, err := command(ctx, d.env, d.cli, "version", "--format", "{{.Server.Version}}")
		d.version = strings.TrimSpace(out)
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// docker runs the docker CLI against this daemon.
func (d *dockerd) docker(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, d.env, append([]string{d.cli}, args...)...)
}

// dockerInspect is what `docker image inspect` says about an image.
type dockerInspect struct {
	ID          string   `json:"Id"`
	RepoTags    []string `json:"RepoTags"`
	RepoDigests []string `json:"RepoDigests"`
}

func (d *dockerd) inspect(t *testing.T, ref string) dockerInspect {
	t.Helper()
	var imgs []dockerInspect
	if err := json.Unmarshal([]byte(d.docker(t, "image", "inspect", ref)), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("docker image inspect %s: %v (%d images)", ref, err, len(imgs))
	}
	return imgs[0]
}

// expectImage checks that ref is f: the image ID is f's config digest and
// RepoDigests has "<name>@<f.Digest>" (the digest dockerd resolved the tag
// to: the index for a multi-arch image).
func (d *dockerd) expectImage(t *testing.T, ref, name string, f fixture) {
	t.Helper()
	img := d.inspect(t, ref)
	if img.ID != f.Config.String() {
		t.Errorf("dockerd %s: image ID %s, want the config digest %s", ref, img.ID, f.Config)
	}
	want := name + "@" + f.Digest.String()
	if !slices.Contains(img.RepoDigests, want) {
		t.Errorf("dockerd %s: RepoDigests %v, want %s among them", ref, img.RepoDigests, want)
	}
}

// removeAll deletes every image of the daemon.
func (d *dockerd) removeAll(t *testing.T) {
	t.Helper()
	ids := strings.Fields(d.docker(t, "images", "-aq"))
	if len(ids) > 0 {
		d.docker(t, append([]string{"rmi", "-f"}, slices.Compact(slices.Sorted(slices.Values(ids)))...)...)
	}
	if left := strings.Fields(d.docker(t, "images", "-aq")); len(left) > 0 {
		t.Fatalf("docker rmi left images: %v", left)
	}
}

// ------------------------------------------------------------- containerd

// containerd is a containerd daemon with its own root, state, sockets and
// config. ctr pulls with --hosts-dir, which reads the certs.d/<host>/hosts.toml
// layout that config_path points the CRI plugin at (client-compat §2).
type containerd struct {
	dir     string
	sock    string
	ctrBin  string
	proc    *process
	version string
}

// ctrNamespace is the containerd namespace the suite's images live in.
const ctrNamespace = "e2e"

func startContainerd(ctx context.Context, tb cleaner, tools map[string]string, dir string) (*containerd, error) {
	if err := os.MkdirAll(filepath.Join(dir, "certs.d"), 0o755); err != nil {
		return nil, err
	}
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), ctrBin: tools["ctr"]}
	// The CRI plugin is disabled: kubelet is not part of the suite, and ctr
	// resolves hosts itself from --hosts-dir. config_path is set as a node
	// would set it, to the same certs.d directory.
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  address = %[5]q

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = %[6]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc",
		filepath.Join(dir, "debug.sock"), filepath.Join(dir, "certs.d"), filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	var err error
	if c.proc, err = startProcess("containerd", filepath.Join(dir, "containerd.log"), baseEnv(),
		tools["containerd"], "--config", cfgPath); err != nil {
		return nil, err
	}
	tb.Cleanup(c.proc.stop)
	err = waitFor(ctx, c.proc, 60*time.Second, "containerd API", func(ctx context.Context) error {
		out, err := command(ctx, baseEnv(), c.ctrBin, "--address", c.sock, "version")
		if err == nil {
			c.version = serverVersion(out)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// serverVersion picks the Server's Version line of `ctr version`.
func serverVersion(out string) string {
	_, server, ok := strings.Cut(out, "Server:")
	if !ok {
		return ""
	}
	for _, line := range strings.Split(server, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// ctr runs ctr against this containerd.
func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	argv := append([]string{c.ctrBin, "--address", c.sock, "--namespace", ctrNamespace}, args...)
	return mustRun(t, baseEnv(), argv...)
}

// pull pulls ref (and unpacks it) resolving hosts from hostsDir.
func (c *containerd) pull(t *testing.T, hostsDir, ref string) {
	t.Helper()
	c.ctr(t, "images", "pull", "--hosts-dir", hostsDir, ref)
}

// images returns `ctr images ls`: reference → digest.
func (c *containerd) images(t *testing.T) map[string]digest.Digest {
	t.Helper()
	imgs := map[string]digest.Digest{}
	for _, line := range strings.Split(c.ctr(t, "images", "ls"), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 3 {
			imgs[f[0]] = digest.Digest(f[2])
		}
	}
	return imgs
}

// content returns the digests of `ctr content ls`.
func (c *containerd) content(t *testing.T) map[digest.Digest]bool {
	t.Helper()
	have := map[digest.Digest]bool{}
	for _, d := range strings.Fields(c.ctr(t, "content", "ls", "-q")) {
		have[digest.Digest(d)] = true
	}
	return have
}

// expectImage checks that ref resolved to f.Digest and that the content
// store holds f's manifest, config and layers.
func (c *containerd) expectImage(t *testing.T, ref string, f fixture) {
	t.Helper()
	if got := c.images(t)[ref]; got != f.Digest {
		t.Errorf("ctr images ls: %s is %q, want %s", ref, got, f.Digest)
	}
	have := c.content(t)
	for _, d := range append([]digest.Digest{f.Digest, f.Image}, f.Blobs...) {
		if !have[d] {
			t.Errorf("ctr content ls: %s lacks %s", ref, d)
		}
	}
}

// removeAll deletes every image and, synchronously, the content and
// snapshots only they referenced.
func (c *containerd) removeAll(t *testing.T) {
	t.Helper()
	refs := strings.Fields(c.ctr(t, "images", "ls", "-q"))
	if len(refs) > 0 {
		c.ctr(t, append([]string{"images", "rm", "--sync"}, refs...)...)
	}
	if left := strings.Fields(c.ctr(t, "content", "ls", "-q")); len(left) > 0 {
		t.Fatalf("ctr content ls after removing every image: %v", left)
	}
}

// writeHosts writes <hostsDir>/<host>/hosts.toml.
func writeHosts(t *testing.T, hostsDir, host, toml string) {
	t.Helper()
	dir := filepath.Join(hostsDir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// defaultHostsDir returns a hosts directory whose _default/hosts.toml sends
// every registry to wharf: one endpoint for all, told apart by ?ns=
// (client-compat §2.3). No server is set, so the fallback is the real
// registry, which this machine cannot reach: a pull that works came through
// wharf.
func defaultHostsDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs.d")
	writeHosts(t, dir, "_default", fmt.Sprintf(`[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, suite.wharf.addr))
	return dir
}

// ------------------------------------------------------- podman and skopeo

// containersTool runs podman or skopeo with its own storage and
// registries.conf (client-compat §3): a Podman/CRI-O node.
type containersTool struct {
	dir      string
	regConf  string
	policy   string
	env      []string
	podman   string
	skopeo   string
	storArgs []string
}

func newContainersTool(t *testing.T, registriesConf string) *containersTool {
	t.Helper()
	bins := need(t, "podman", "skopeo")
	// Not t.TempDir: podman refuses a runroot path longer than 50 bytes.
	dir, err := os.MkdirTemp(suite.dir, "pm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &containersTool{
		dir:     dir,
		regConf: filepath.Join(dir, "registries.conf"),
		policy:  filepath.Join(dir, "policy.json"),
		podman:  bins[0],
		skopeo:  bins[1],
	}
	if err := os.WriteFile(c.regConf, []byte(registriesConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"root", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// An empty credentials file of its own: no login of the machine's is used.
	authFile := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(authFile, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.env = baseEnv(
		"CONTAINERS_REGISTRIES_CONF="+c.regConf,
		"REGISTRY_AUTH_FILE="+authFile,
		"TMPDIR="+filepath.Join(dir, "tmp"),
	)
	c.storArgs = []string{
		"--root", filepath.Join(dir, "root"),
		"--runroot", filepath.Join(dir, "run"),
		"--tmpdir", filepath.Join(dir, "tmp"),
		"--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "none",
		"--registries-conf", c.regConf,
	}
	return c
}

func (c *containersTool) podmanRun(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, c.env, append(append([]string{c.podman}, c.storArgs...), args...)...)
}

// pull pulls ref with podman for linux/amd64.
func (c *containersTool) pull(t *testing.T, ref string) {
	t.Helper()
	c.podmanRun(t, "pull", "--signature-policy", c.policy, "--arch", "amd64", "--os", "linux", ref)
}

// podmanImage is what `podman image inspect` says about an image.
type podmanImage struct {
	ID          string   `json:"Id"`
	Digest      string   `json:"Digest"`
	RepoDigests []string `json:"RepoDigests"`
}

// expectImage checks that podman stored ref as f: the image ID is f's
// config digest and RepoDigests has <name>@<digest> for the digest it
// pulled (the index for a multi-arch image).
func (c *containersTool) expectImage(t *testing.T, ref, name string, f fixture) {
	t.Helper()
	var imgs []podmanImage
	if err := json.Unmarshal([]byte(c.podmanRun(t, "image", "inspect", ref)), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("podman image inspect %s: %v (%d images)", ref, err, len(imgs))
	}
	if got := "sha256:" + imgs[0].ID; got != f.Config.String() {
		t.Errorf("podman %s: image ID %s, want the config digest %s", ref, got, f.Config)
	}
	want := name + "@" + f.Digest.String()
	if !slices.Contains(imgs[0].RepoDigests, want) {
		t.Errorf("podman %s: RepoDigests %v, want %s among them", ref, imgs[0].RepoDigests, want)
	}
}

// removeAll deletes every podman image.
func (c *containersTool) removeAll(t *testing.T) {
	t.Helper()
	c.podmanRun(t, "rmi", "--all", "--force")
	if left := strings.Fields(c.podmanRun(t, "images", "-q")); len(left) > 0 {
		t.Fatalf("podman rmi --all left %v", left)
	}
}

func (c *containersTool) skopeoRun(t *testing.T, args ...string) string {
	t.Helper()
	argv := append([]string{c.skopeo, "--registries-conf", c.regConf, "--policy", c.policy,
		"--override-os", "linux", "--override-arch", "amd64"}, args...)
	return mustRun(t, c.env, argv...)
}

// copy copies docker://ref with skopeo into a dir: layout (which keeps the
// manifest bytes as they are, unlike oci:, which converts Docker schema2)
// under the tool's directory and returns the layout's path.
func (c *containersTool) copy(t *testing.T, ref, name string) string {
	t.Helper()
	dst := filepath.Join(c.dir, "copies", name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	c.skopeoRun(t, "copy", "docker://"+ref, "dir:"+dst)
	return dst
}

// rawManifest returns the manifest skopeo reads for ref (the top-level one:
// an index stays an index with --raw).
func (c *containersTool) rawManifest(t *testing.T, ref string) []byte {
	t.Helper()
	return []byte(c.skopeoRun(t, "inspect", "--raw", "--no-tags", "docker://"+ref))
}

// expectRaw checks that skopeo read exactly the upstream's bytes of f.
func (c *containersTool) expectRaw(t *testing.T, ref string, f fixture) {
	t.Helper()
	raw := c.rawManifest(t, ref)
	if d := digest.FromBytes(raw); d != f.Digest {
		t.Errorf("skopeo inspect --raw %s: digest %s, want %s", ref, d, f.Digest)
	}
}

// expectLayout checks a dir: layout skopeo wrote: its manifest is f's
// linux/amd64 image, byte for byte, and every blob of it is there.
func expectLayout(t *testing.T, dir string, f fixture) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(b); got != f.Image {
		t.Errorf("skopeo copy to %s: manifest %s, want %s", dir, got, f.Image)
	}
	for _, d := range f.Blobs {
		if _, err := os.Stat(filepath.Join(dir, d.Encoded())); err != nil {
			t.Errorf("skopeo copy to %s: blob %s missing: %v", dir, d, err)
		}
	}
}

// ----------------------------------------------------------------- crane

// crane runs crane against wharf directly, the way users without mirror
// support in their client address a mirror (client-compat §3.5).
type crane struct {
	bin string
	env []string
	dir string
}

func newCrane(t *testing.T) *crane {
	t.Helper()
	dir := t.TempDir()
	return &crane{bin: need(t, "crane")[0], env: baseEnv("DOCKER_CONFIG=" + dir), dir: dir}
}

func (c *crane) run(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, c.env, append([]string{c.bin, "--insecure"}, args...)...)
}

func (c *crane) digest(t *testing.T, ref string) digest.Digest {
	t.Helper()
	return digest.Digest(strings.TrimSpace(c.run(t, "digest", ref)))
}

// pull pulls ref for linux/amd64 into a tarball and returns its path.
func (c *crane) pull(t *testing.T, ref, name string) string {
	t.Helper()
	out := filepath.Join(c.dir, name+".tar")
	c.run(t, "pull", "--platform", "linux/amd64", ref, out)
	return out
}

// mirrorBase is wharf's path-prefix base for an upstream's repositories:
// 127.0.0.1:PORT/<registry>/<repo>.
func mirrorBase(u *upstream) string { return suite.wharf.addr + "/" + u.name }
