//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// hostsOverride runs client commands with a hosts file of the test's in
// place of /etc/hosts, the way a DNS override of a registry name to wharf
// looks to a client, without changing the machine's name resolution: each
// command runs in a private mount namespace of its own (unshare --mount
// --propagation private), in which the file is bind-mounted over
// /etc/hosts. The mount is never propagated to the machine's namespace and
// ends with the command's process.
//
// Only the process that resolves names needs it: `ctr images pull` fetches
// in the ctr process itself and only hands the content to containerd.
// Go's resolver (and glibc's, "files" first in nsswitch.conf) reads
// /etc/hosts before any DNS server.
type hostsOverride struct {
	unshare, mount, sh string
	hostsFile          string
}

// hostsOverrideTools are the programs hostsOverride runs, from util-linux
// and mount (Debian's "required" set) and the POSIX shell.
var hostsOverrideTools = []string{"unshare", "mount", "sh"}

// newHostsOverride writes hosts (host-file lines) to a file of the test's
// and returns the runner for it. A missing tool skips the test, or fails it
// when CI=true, as need does for the clients. It checks, before any client
// relies on it, that a command in the namespace reads exactly that file as
// /etc/hosts, and, when the test ends, that the machine's /etc/hosts was
// not changed.
func newHostsOverride(t *testing.T, hostsFile, hosts string) *hostsOverride {
	t.Helper()
	paths := make([]string, len(hostsOverrideTools))
	var missing []string
	for i, name := range hostsOverrideTools {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
		}
		paths[i] = p
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("tools for a private /etc/hosts not installed: %s (util-linux, mount)", strings.Join(missing, ", "))
		if ci() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err := os.WriteFile(hostsFile, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &hostsOverride{unshare: paths[0], mount: paths[1], sh: paths[2], hostsFile: hostsFile}

	machine, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		now, err := os.ReadFile("/etc/hosts")
		if err != nil || !bytes.Equal(now, machine) {
			t.Errorf("the machine's /etc/hosts changed during the test (%v):\n%s", err, now)
		}
	})
	seen, err := command(t.Context(), baseEnv(), h.argv("cat", "/etc/hosts")...)
	if err != nil {
		t.Fatalf("a private /etc/hosts: %v", err)
	}
	if seen != hosts {
		t.Fatalf("in the private mount namespace /etc/hosts reads\n%s\nwant\n%s", seen, hosts)
	}
	return h
}

// argv wraps argv so that it runs with the hosts file as /etc/hosts. The
// paths are passed to the shell as arguments, never spliced into the
// script, and the shell execs argv so that a timeout's kill reaches it.
func (h *hostsOverride) argv(argv ...string) []string {
	const script = `m=$1; f=$2; shift 2; "$m" --bind "$f" /etc/hosts && exec "$@"`
	return append([]string{h.unshare, "--mount", "--propagation", "private", "--",
		h.sh, "-c", script, "sh", h.mount, h.hostsFile}, argv...)
}

// run runs argv under the override within commandTimeout (see command).
func (h *hostsOverride) run(ctx context.Context, env []string, argv ...string) (string, error) {
	return command(ctx, env, h.argv(argv...)...)
}
