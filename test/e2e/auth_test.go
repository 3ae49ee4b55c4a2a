//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// Credentials of TestClientAuth's wharf. alice and the static token ci may
// pull from ghcr.io; bob is a valid user whom ghcr.io's access list leaves
// out.
const (
	alicePassword = "alice-e2e-password"
	bobPassword   = "bob-e2e-password"
	ciToken       = "ci-e2e-token-0123456789abcdef"
	// ghcrUser and ghcrPassword are wharf's own credentials for the ghcr.io
	// upstream. Holding them makes the upstream private in wharf's eyes;
	// the suite's ghcr.io fake does not check them (registrytest.Options
	// without Username accepts any).
	ghcrUser     = "bot"
	ghcrPassword = "e2e-upstream-secret"
)

// Reasons a client names when wharf refused it: 401 (no or wrong
// credentials) or 403 DENIED (authenticated, not on the access list).
// Clients print the OCI error code or message wharf sent, or their own
// words for the status.
var (
	unauthorizedReasons = []string{"unauthorized", "authentication required",
		"invalid username/password"} // podman login's words for a 401
	deniedReasons = []string{"denied", "forbidden"} // ctr prints only the status: 403 Forbidden
)

// TestClientAuth: wharf's client authentication with real clients. ghcr.io
// holds wharf's own upstream credentials, so wharf serves it only to
// authenticated clients on its access list (alice, the static token ci);
// docker.io holds none and stays open to anonymous clients. Every client
// logs in (or passes credentials) the way its users do, goes through
// wharf's token endpoint, and pulls through the path-prefix route.
//
// Every refusal is checked three ways: the client failed, its message
// names an authentication or authorisation reason, and wharf's request log
// holds the refusal (401, or 403 for bob) and no answer that served the
// private repository; the ghcr.io upstream saw no manifest or blob
// request meanwhile. The refusals of the first client run on a cold
// cache, so a policy that let them through would have had to fetch
// upstream; later ones run on a warm cache, where a policy checked only on
// a miss would serve the cached image. Every successful pull is checked
// for the image the client ended up with and for the identity wharf
// logged ("client":"user:alice", "token:ci", "anonymous").
func TestClientAuth(t *testing.T) {
	// Under the suite's directory rather than t.TempDir: the logs are kept
	// with the suite's on failure.
	dir, err := os.MkdirTemp(suite.dir, "auth-")
	if err != nil {
		t.Fatal(err)
	}
	w := startAuthWharf(t, filepath.Join(dir, "wharf"))
	priv := seedImage(t, suite.ghcr, "e2eauth/private", "v1", buildImage(t, "e2eauth-private", ociImage, amd64, 2))
	pub := seedImage(t, suite.hub, "library/e2eauth-public", "1", buildImage(t, "e2eauth-public", dockerImage, amd64, 2))
	privBase := w.addr + "/ghcr.io"
	privRef, privName := priv.ref(privBase), privBase+"/"+priv.Repo
	ghcrStart := suite.ghcr.mark()
	pulled := false // some client pulled the private image

	// The base endpoint challenges a client without credentials, naming
	// wharf's own token endpoint on the host the client used (the Docker
	// token flow, distribution spec/auth/token.md).
	status, hdr, body := w.get(t, "", "/v2/")
	if want := `Bearer realm="http://` + w.addr + `/token",service="wharf"`; status != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != want {
		t.Errorf("GET /v2/ without credentials: %d, WWW-Authenticate %q; want 401 and %q; body %s",
			status, hdr.Get("WWW-Authenticate"), want, clip(string(body), 300))
	}

	t.Run("docker", func(t *testing.T) {
		d := needDockerd(t)
		// A CLI configuration of its own: the logins stay out of the shared
		// daemon's CLI configuration and every other test's.
		cfg := t.TempDir()
		env := baseEnv("DOCKER_HOST=unix://" + d.sock)
		docker := func(stdin string, args ...string) (string, error) {
			return commandInput(t.Context(), env, stdin, append([]string{d.cli, "--config", cfg}, args...)...)
		}
		login := func(user, password string) (string, error) {
			return docker(password, "login", w.addr, "-u", user, "--password-stdin")
		}
		mustLogin := func(user, password string) {
			t.Helper()
			out, err := login(user, password)
			if err != nil {
				t.Fatalf("docker login as %s: %v", user, err)
			}
			if !strings.Contains(out, "Login Succeeded") {
				t.Errorf("docker login as %s: %q, want Login Succeeded", user, out)
			}
		}
		pubRef := pub.ref(w.addr + "/docker.io")
		t.Cleanup(func() { dockerRemove(t, d, env, privRef, pubRef) })

		// dockerd logs in itself (POST /auth): GET /v2/, the token endpoint
		// with Basic credentials, /v2/ again with the token.
		a := w.attempt(t)
		failedBefore := w.tokenLogLines(t, "alice", 401)
		out, err := login("alice", "wrong-password")
		expectRefused(t, "docker login with a wrong password", out, err, unauthorizedReasons...)
		a.refused(t, priv, 0, "")
		// The failed login is in wharf's log: user name and status, no secret.
		if n := w.tokenLogLines(t, "alice", 401); n <= failedBefore {
			t.Errorf("wharf logged no failed token request for alice (%d before, %d after)", failedBefore, n)
		}
		if b, err := os.ReadFile(w.logPath); err != nil || strings.Contains(string(b), "wrong-password") {
			t.Errorf("wharf's log holds the password (or cannot be read: %v)", err)
		}

		a = w.attempt(t)
		out, err = docker("", "pull", privRef)
		expectRefused(t, "anonymous docker pull of "+privRef, out, err, unauthorizedReasons...)
		a.refused(t, priv, http.StatusUnauthorized, "anonymous")

		mustLogin("bob", bobPassword)
		a = w.attempt(t)
		out, err = docker("", "pull", privRef)
		expectRefused(t, "docker pull of "+privRef+" as bob", out, err, deniedReasons...)
		a.refused(t, priv, http.StatusForbidden, "user:bob")

		mustLogin("alice", alicePassword)
		a = w.attempt(t)
		d.docker(t, "--config", cfg, "pull", privRef)
		pulled = true
		d.expectImage(t, privRef, privName, priv)
		a.served(t, priv, "user:alice")

		// Logged out, on a warm cache: the image is removed first so that
		// the pull has to ask wharf for everything again.
		if _, err := docker("", "logout", w.addr); err != nil {
			t.Fatal(err)
		}
		d.docker(t, "rmi", privRef)
		a = w.attempt(t)
		out, err = docker("", "pull", privRef)
		expectRefused(t, "docker pull of "+privRef+" after docker logout", out, err, unauthorizedReasons...)
		a.refused(t, priv, http.StatusUnauthorized, "anonymous")

		// docker.io holds no upstream credentials: open to anonymous
		// clients, through the same token flow (an anonymous token).
		a = w.attempt(t)
		d.docker(t, "--config", cfg, "pull", pubRef)
		d.expectImage(t, pubRef, w.addr+"/docker.io/"+pub.Repo, pub)
		a.servedRepo(t, "docker.io", pub.Repo, "anonymous")
	})

	t.Run("containerd", func(t *testing.T) {
		c := needContainerd(t)
		// ctr reaches wharf through a recorder of token requests, to prove
		// which grant containerd used; wharf announces the realm on the
		// host the client used, so the token requests pass it too.
		rec := newTokenRecorder(t, w.addr)
		ref := priv.ref(rec.addr + "/ghcr.io")
		pull := func(user string) (string, error) {
			argv := []string{c.ctrBin, "--address", c.sock, "--namespace", ctrNamespace, "images", "pull", "--plain-http"}
			if user != "" {
				argv = append(argv, "--user", user)
			}
			return command(t.Context(), baseEnv(), append(argv, ref)...)
		}
		remove := func(ctx context.Context) {
			t.Helper()
			ctr := []string{c.ctrBin, "--address", c.sock, "--namespace", ctrNamespace}
			out, err := command(ctx, baseEnv(), append(ctr, "images", "ls", "-q", "name=="+ref)...)
			if err != nil {
				t.Errorf("ctr images ls: %v", err)
				return
			}
			if strings.TrimSpace(out) == "" {
				return // not pulled
			}
			if _, err := command(ctx, baseEnv(), append(ctr, "images", "rm", "--sync", ref)...); err != nil {
				t.Errorf("ctr images rm: %v", err)
			}
		}
		// The test's context is canceled before cleanups run.
		t.Cleanup(func() { remove(context.Background()) })

		for _, tc := range []struct {
			what    string
			user    string // --user
			status  int    // what wharf logged for the manifest request
			client  string
			reasons []string
		}{
			{"anonymous", "", http.StatusUnauthorized, "anonymous", unauthorizedReasons},
			{"with a wrong password", "alice:wrong-password", 0, "", unauthorizedReasons},
			{"as bob", "bob:" + bobPassword, http.StatusForbidden, "user:bob", deniedReasons},
		} {
			a, rm := w.attempt(t), rec.mark()
			out, err := pull(tc.user)
			expectRefused(t, "ctr pull of "+ref+" "+tc.what, out, err, tc.reasons...)
			a.refused(t, priv, tc.status, tc.client)
			if tc.status == 0 {
				// Refused at the token endpoint: the password grant, and
				// any fallback containerd tried, answered 401.
				toks := rec.since(rm)
				if len(toks) == 0 || toks[0].method != http.MethodPost {
					t.Errorf("ctr pull %s: token requests %+v, want a POST first", tc.what, toks)
				}
				for _, r := range toks {
					if r.status != http.StatusUnauthorized {
						t.Errorf("ctr pull %s: token request %+v answered %d, want 401", tc.what, r, r.status)
					}
				}
			}
		}

		for _, tc := range []struct{ user, client string }{
			{"alice:" + alicePassword, "user:alice"},
			{"ci:" + ciToken, "token:ci"}, // a static token as the password
		} {
			name, _, _ := strings.Cut(tc.user, ":")
			a, rm := w.attempt(t), rec.mark()
			if out, err := pull(tc.user); err != nil {
				t.Fatalf("ctr pull as %s: %v\n%s", name, err, out)
			}
			pulled = true
			c.expectImage(t, ref, priv)
			a.served(t, priv, tc.client)
			// containerd asks for its token with an OAuth2 password grant
			// (POST, spec/auth/oauth.md), which wharf accepted: no fallback
			// to GET with Basic credentials.
			toks := rec.since(rm)
			if len(toks) == 0 {
				t.Errorf("ctr pull as %s: no token request reached wharf", name)
			}
			for _, r := range toks {
				if r.method != http.MethodPost || r.grantType != "password" || r.username != name || r.status != http.StatusOK {
					t.Errorf("ctr pull as %s: token request %+v, want POST grant_type=password username=%s answered 200", name, r, name)
				}
			}
			remove(t.Context())
		}
	})

	t.Run("podman and skopeo", func(t *testing.T) {
		ct := newContainersTool(t, "unqualified-search-registries = []\n")
		// --authfile must name an existing file; it starts with no login.
		authFile := filepath.Join(ct.dir, "login.json")
		if err := os.WriteFile(authFile, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		podman := func(stdin string, args ...string) (string, error) {
			return commandInput(t.Context(), ct.env, stdin, append(append([]string{ct.podman}, ct.storArgs...), args...)...)
		}
		login := func(user, password string) (string, error) {
			return podman(password, "login", "--tls-verify=false", "--authfile", authFile, "-u", user, "--password-stdin", w.addr)
		}
		mustLogin := func(user, password string) {
			t.Helper()
			out, err := login(user, password)
			if err != nil {
				t.Fatalf("podman login as %s: %v", user, err)
			}
			if !strings.Contains(out, "Login Succeeded") {
				t.Errorf("podman login as %s: %q, want Login Succeeded", user, out)
			}
		}
		pullArgs := []string{"pull", "--tls-verify=false", "--authfile", authFile,
			"--signature-policy", ct.policy, "--arch", "amd64", "--os", "linux", privRef}

		a := w.attempt(t)
		out, err := login("alice", "wrong-password")
		expectRefused(t, "podman login with a wrong password", out, err, unauthorizedReasons...)
		a.refused(t, priv, 0, "")

		a = w.attempt(t)
		out, err = podman("", pullArgs...)
		expectRefused(t, "podman pull of "+privRef+" without a login", out, err, unauthorizedReasons...)
		a.refused(t, priv, http.StatusUnauthorized, "anonymous")

		mustLogin("bob", bobPassword)
		a = w.attempt(t)
		out, err = podman("", pullArgs...)
		expectRefused(t, "podman pull of "+privRef+" as bob", out, err, deniedReasons...)
		a.refused(t, priv, http.StatusForbidden, "user:bob")

		mustLogin("alice", alicePassword)
		a = w.attempt(t)
		ct.podmanRun(t, pullArgs...)
		pulled = true
		ct.expectImage(t, privRef, privName, priv)
		a.served(t, priv, "user:alice")

		ct.podmanRun(t, "logout", "--authfile", authFile, w.addr)
		ct.removeAll(t)
		a = w.attempt(t)
		out, err = podman("", pullArgs...)
		expectRefused(t, "podman pull of "+privRef+" after podman logout", out, err, unauthorizedReasons...)
		a.refused(t, priv, http.StatusUnauthorized, "anonymous")

		// skopeo with credentials on the command line. It reads the
		// tool's empty REGISTRY_AUTH_FILE, so without --creds it is
		// anonymous.
		skopeo := func(creds string) (string, error) {
			argv := []string{ct.skopeo, "--registries-conf", ct.regConf, "--policy", ct.policy,
				"--override-os", "linux", "--override-arch", "amd64", "inspect", "--tls-verify=false"}
			if creds != "" {
				argv = append(argv, "--creds", creds)
			}
			return command(t.Context(), ct.env, append(argv, "docker://"+privRef)...)
		}
		for _, tc := range []struct {
			creds   string
			status  int
			client  string
			reasons []string
		}{
			{"", http.StatusUnauthorized, "anonymous", unauthorizedReasons},
			{"alice:wrong-password", 0, "", unauthorizedReasons},
			{"bob:" + bobPassword, http.StatusForbidden, "user:bob", deniedReasons},
		} {
			a := w.attempt(t)
			out, err := skopeo(tc.creds)
			expectRefused(t, fmt.Sprintf("skopeo inspect of %s with --creds %q", privRef, strings.Split(tc.creds, ":")[0]), out, err, tc.reasons...)
			a.refused(t, priv, tc.status, tc.client)
		}
		for _, tc := range []struct{ creds, client string }{
			{"alice:" + alicePassword, "user:alice"},
			{"any-name:" + ciToken, "token:ci"}, // a static token as the password, any user name
		} {
			a := w.attempt(t)
			out, err := skopeo(tc.creds)
			if err != nil {
				t.Fatalf("skopeo inspect as %s: %v", tc.client, err)
			}
			var info struct{ Digest string }
			if err := json.Unmarshal([]byte(out), &info); err != nil || info.Digest != priv.Digest.String() {
				t.Errorf("skopeo inspect as %s: digest %q (%v), want %s", tc.client, info.Digest, err, priv.Digest)
			}
			a.served(t, priv, tc.client)
		}
	})

	t.Run("crane", func(t *testing.T) {
		cr := newCrane(t)
		tarball := filepath.Join(cr.dir, "private.tar")
		pull := func() (string, error) {
			return command(t.Context(), cr.env, cr.bin, "--insecure", "pull", "--platform", "linux/amd64", privRef, tarball)
		}
		// crane auth login writes the credentials to $DOCKER_CONFIG (the
		// crane's own directory) without asking the registry: the pull
		// is where they are checked.
		login := func(user, password string) {
			t.Helper()
			if _, err := commandInput(t.Context(), cr.env, password, cr.bin, "auth", "login", w.addr, "-u", user, "--password-stdin"); err != nil {
				t.Fatalf("crane auth login as %s: %v", user, err)
			}
		}

		a := w.attempt(t)
		out, err := pull()
		expectRefused(t, "anonymous crane pull of "+privRef, out, err, unauthorizedReasons...)
		a.refused(t, priv, http.StatusUnauthorized, "anonymous")

		login("alice", "wrong-password")
		a = w.attempt(t)
		out, err = pull()
		expectRefused(t, "crane pull of "+privRef+" with a wrong password", out, err, unauthorizedReasons...)
		a.refused(t, priv, 0, "")

		login("bob", bobPassword)
		a = w.attempt(t)
		out, err = pull()
		expectRefused(t, "crane pull of "+privRef+" as bob", out, err, deniedReasons...)
		a.refused(t, priv, http.StatusForbidden, "user:bob")

		login("alice", alicePassword)
		a = w.attempt(t)
		if got := cr.digest(t, privRef); got != priv.Digest {
			t.Errorf("crane digest %s as alice = %s, want %s", privRef, got, priv.Digest)
		}
		expectTarball(t, cr.pull(t, privRef, "private"))
		pulled = true
		a.served(t, priv, "user:alice")

		cr.run(t, "auth", "logout", w.addr)
		a = w.attempt(t)
		out, err = pull()
		expectRefused(t, "crane pull of "+privRef+" after crane auth logout", out, err, unauthorizedReasons...)
		a.refused(t, priv, http.StatusUnauthorized, "anonymous")
	})

	// Over the whole test: wharf fetched the private image once, with its
	// own ghcr.io credentials, and no client reached the upstream itself.
	all := suite.ghcr.since(ghcrStart)
	expectNoBypass(t, suite.ghcr, all)
	if pulled {
		expectFetchedOnce(t, suite.ghcr, all, priv)
		expectAtLeast(t, "token requests with wharf's ghcr.io credentials", all, 1,
			onServer(registrytest.ServerToken), byWharf, basicAuth(ghcrUser, ghcrPassword))
	}
	expectCount(t, "token requests with other credentials", all, 0,
		onServer(registrytest.ServerToken), withBasic, not(basicAuth(ghcrUser, ghcrPassword)))
}

// authWharf is TestClientAuth's wharf process.
type authWharf struct {
	*wharf
}

// startAuthWharf starts `wharf serve` with client authentication on: an
// htpasswd file with alice and bob (bcrypt), the static token ci, ghcr.io
// holding wharf's upstream credentials and open to alice and ci only, and
// the suite's upstreams mapped as in startWharf. The process is stopped
// when the test ends.
func startAuthWharf(t *testing.T, dir string) *authWharf {
	t.Helper()
	// htpasswd -B: bcrypt at the default cost, as htpasswd writes it.
	var htpasswd bytes.Buffer
	for _, u := range []struct{ name, password string }{{"alice", alicePassword}, {"bob", bobPassword}} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u.password), bcrypt.DefaultCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&htpasswd, "%s:%s\n", u.name, hash)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	htpasswdPath := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswdPath, htpasswd.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// The failure limit is raised: every client here fails on purpose
	// from the same address, some with retries, and the limit's own
	// behaviour (429) is not what this test is about.
	cfg := fmt.Sprintf(`# wharf with client authentication, for TestClientAuth.
log_format: json
log_level: info
auth:
  htpasswd_file: %q
  tokens:
    - name: ci
      token: %q
limits:
  auth_failures: 1000
upstreams:
  ghcr.io:
    username: %q
    password: %q
    access:
      users: [alice, ci]
`, htpasswdPath, ciToken, ghcrUser, ghcrPassword)
	w, _, _ := startOwnWharf(t, dir, ownWharf{
		name:   "auth",
		config: cfg,
		ups:    []*upstream{suite.hub, suite.ghcr, suite.k8s},
	})
	return &authWharf{wharf: w}
}

// attempt is a client action under observation: where wharf's log and the
// ghcr.io upstream's log stood when it began.
type attempt struct {
	w   *authWharf
	log logMark
	up  upMark
}

func (w *authWharf) attempt(t *testing.T) attempt {
	t.Helper()
	return attempt{w: w, log: w.mark(t), up: suite.ghcr.mark()}
}

// refused checks what a refused pull of f left behind: wharf answered no
// request for f's repository with success, and none of its manifests or
// blobs was asked of the upstream. With status set, wharf refused at least
// one of those requests with that status for that client; a wrong
// password is refused at the token endpoint, which wharf does not log, so
// it passes 0.
func (a attempt) refused(t *testing.T, f fixture, status int, client string) {
	t.Helper()
	logged := filterLog(a.w.requestsSince(t, a.log), forRepo("ghcr.io", f.Repo))
	found := false
	for _, e := range logged {
		if e.Status < 400 {
			t.Errorf("wharf served a client it should have refused: %s", e)
		}
		found = found || (e.Status == status && clientOf(e) == client)
	}
	if status != 0 && !found {
		t.Errorf("wharf logged no %d for %s on ghcr.io %s; it logged:\n%v", status, client, f.Repo, logged)
	}
	expectCount(t, "upstream requests for a refused pull", suite.ghcr.since(a.up), 0, apiRequest, inRepo(f.Repo))
}

// served checks that wharf served the pull of f from ghcr.io, and named
// client as the one it served.
func (a attempt) served(t *testing.T, f fixture, client string) {
	t.Helper()
	a.servedRepo(t, "ghcr.io", f.Repo, client)
}

// servedRepo checks that wharf answered requests for upstream's repo with
// success, each naming client in its log line. The challenged first
// attempts (401, anonymous) that precede the token flow are not counted.
func (a attempt) servedRepo(t *testing.T, upstream, repo, client string) {
	t.Helper()
	logged := filterLog(a.w.requestsSince(t, a.log), forRepo(upstream, repo))
	n := 0
	for _, e := range logged {
		if e.Status >= 400 {
			continue
		}
		n++
		if got := clientOf(e); got != client {
			t.Errorf("wharf logged client %q, want %q: %s", got, client, e)
		}
	}
	if n == 0 {
		t.Errorf("wharf logged no successful request for %s %s; it logged:\n%v", upstream, repo, logged)
	}
}

// clientOf is the "client" attribute of a request line: who wharf's
// authorizer said the request came from.
func clientOf(e logEntry) string {
	var v struct {
		Client string `json:"client"`
	}
	if err := json.Unmarshal([]byte(e.raw), &v); err != nil {
		return ""
	}
	return v.Client
}

// expectRefused checks that a client command failed, and for the reason
// wanted: its output names one of reasons (case-insensitively). A command
// that timed out or could not run was not refused.
func expectRefused(t *testing.T, what, out string, err error, reasons ...string) {
	t.Helper()
	var ce *commandError
	switch {
	case err == nil:
		t.Errorf("%s succeeded, want it refused; output:\n%s", what, clip(out, 2000))
		return
	case !errors.As(err, &ce), errors.Is(err, context.DeadlineExceeded):
		t.Errorf("%s: did not run to a refusal: %v", what, err)
		return
	}
	var exit *exec.ExitError
	if !errors.As(ce.err, &exit) {
		t.Errorf("%s: did not run to a refusal: %v", what, err)
		return
	}
	msg := strings.ToLower(ce.stdout + "\n" + ce.stderr)
	for _, r := range reasons {
		if strings.Contains(msg, r) {
			t.Logf("%s: refused: %s", what, lineWith(ce.stderr+"\n"+ce.stdout, r))
			return
		}
	}
	t.Errorf("%s failed, but its message names none of %q: %v", what, reasons, err)
}

// lineWith is the last line of out that contains reason (case-insensitively):
// the client's error, without its progress output.
func lineWith(out, reason string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(strings.ToLower(lines[i]), reason) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

// commandInput is command with stdin, for the clients' --password-stdin:
// passwords stay out of the process list and of commandError's argv.
func commandInput(ctx context.Context, env []string, stdin string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil && err != nil {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		return stdout.String(), &commandError{argv: argv, err: err, stdout: stdout.String(), stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// dockerRemove removes the images refs name from the shared daemon, those
// that are there: the daemon outlives the test.
func dockerRemove(t *testing.T, d *dockerd, env []string, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		if _, err := command(context.WithoutCancel(t.Context()), env, d.cli, "image", "inspect", ref); err != nil {
			continue // not pulled
		}
		if _, err := command(context.WithoutCancel(t.Context()), env, d.cli, "rmi", ref); err != nil {
			t.Errorf("docker rmi %s: %v", ref, err)
		}
	}
}

// Predicates over upstream requests for the token service.

func onServer(s string) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return r.Server == s }
}

func withBasic(r registrytest.Request) bool {
	return strings.HasPrefix(r.Header.Get("Authorization"), "Basic ")
}

func basicAuth(user, password string) func(registrytest.Request) bool {
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	return func(r registrytest.Request) bool { return r.Header.Get("Authorization") == want }
}

// tokenRecorder is a reverse proxy on loopback in front of wharf that
// records every request to wharf's token endpoint: which method and which
// OAuth2 grant a client used (spec/auth/oauth.md), and wharf's answer.
// Everything else passes through untouched; the Host header is kept, so
// wharf announces its realm on the recorder and the token requests come
// through it too.
type tokenRecorder struct {
	addr string

	mu   sync.Mutex
	reqs []tokenRequest
}

// tokenRequest is one request to /token.
type tokenRequest struct {
	method    string
	grantType string // POST form's grant_type
	username  string // POST form's username, or the Basic user of a GET
	status    int
}

// maxTokenForm bounds the token request body the recorder reads.
const maxTokenForm = 64 << 10

func newTokenRecorder(t *testing.T, wharfAddr string) *tokenRecorder {
	t.Helper()
	rec := &tokenRecorder{}
	transport := &http.Transport{DisableCompression: true}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: wharfAddr})
			pr.Out.Host = pr.In.Host
		},
		Transport: transport,
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.URL.Path == "/token" {
				rec.record(resp.Request, resp.StatusCode)
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" && r.Body != nil {
			// Read the form for the record and hand the same bytes on.
			body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenForm))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r = r.WithContext(context.WithValue(r.Context(), tokenFormKey{}, body))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	rec.addr = strings.TrimPrefix(srv.URL, "http://")
	return rec
}

// tokenFormKey carries the token request's body from the handler to
// ModifyResponse.
type tokenFormKey struct{}

func (rec *tokenRecorder) record(r *http.Request, status int) {
	tr := tokenRequest{method: r.Method, status: status}
	if body, ok := r.Context().Value(tokenFormKey{}).([]byte); ok && r.Method == http.MethodPost {
		if form, err := url.ParseQuery(string(body)); err == nil {
			tr.grantType, tr.username = form.Get("grant_type"), form.Get("username")
		}
	} else if user, _, ok := r.BasicAuth(); ok {
		tr.username = user
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = append(rec.reqs, tr)
}

// mark is the number of token requests recorded so far.
func (rec *tokenRecorder) mark() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// since returns the token requests recorded after m.
func (rec *tokenRecorder) since(m int) []tokenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]tokenRequest(nil), rec.reqs[m:]...)
}

// tokenLogLines counts wharf's "token request" log lines for user with
// status.
func (w *authWharf) tokenLogLines(t *testing.T, user string, status int) int {
	t.Helper()
	b, err := os.ReadFile(w.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		var e struct {
			Msg    string `json:"msg"`
			User   string `json:"user"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "token request" && e.User == user && e.Status == status {
			n++
		}
	}
	return n
}
