//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bounds of every wait in the suite.
const (
	// commandTimeout bounds one client command (a pull of the 64 MiB image
	// by eight containerds at once included).
	commandTimeout = 4 * time.Minute
	// stopGrace is how long a daemon gets to exit after SIGTERM before it
	// and its process group are killed.
	stopGrace = 20 * time.Second
	// pollInterval is the pause between two checks of a bounded wait.
	pollInterval = 100 * time.Millisecond
)

// cleaner registers functions to run at the end of a test or of the suite:
// *testing.T and TestMain's *mainTB.
type cleaner interface{ Cleanup(func()) }

// process is a long-running program the suite started (wharf, dockerd,
// containerd). It runs in its own process group so that stop reaches the
// children it starts (dockerd's containerd) by the group's id.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string        // file holding its stdout and stderr
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done
}

// startProcess starts argv with stdout and stderr appended to logPath. The
// caller registers stop as a cleanup.
func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGTERM, up to stopGrace to exit, then SIGKILL to
// its whole process group. Whatever is left of the group after the process
// itself ended is killed too. stop always reaps the process.
func (p *process) stop() {
	pid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				// Unkillable (stuck in the kernel): give up rather than hang
				// the suite; the reaper goroutine ends when it does.
				log.Printf("e2e: %s (pid %d) did not exit after SIGKILL", p.name, pid)
			}
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // stragglers of the group, if any
}

// tail returns the last n bytes of the process's log, for failure messages.
func (p *process) tail(n int) string { return tailFile(p.log, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// killPIDFile kills the process whose id a daemon wrote to path (dockerd's
// own containerd), if it is still running and still that program (the id
// is checked against /proc/<pid>/cmdline, against reuse).
func killPIDFile(path, program string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), program) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// waitFor polls check every pollInterval until it succeeds, the process
// dies or timeout passes; the error says which, with the last check error.
func waitFor(ctx context.Context, p *process, timeout time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for attempt := 0; ; attempt++ {
		if last = check(ctx); last == nil {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s: %s exited (%v) before it was ready; last check: %v; log:\n%s", what, p.name, p.err, last, p.tail(3000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready after %v (%d checks): %v", what, timeout, attempt+1, last)
		case <-time.After(pollInterval):
		}
	}
}

// httpOK checks that GET url answers 200.
func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// commandError is a failed client command with everything it printed.
type commandError struct {
	argv   []string
	err    error
	stdout string
	stderr string
}

func (e *commandError) Error() string {
	return fmt.Sprintf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(e.argv, " "), e.err, clip(e.stdout, 4000), clip(e.stderr, 4000))
}

func (e *commandError) Unwrap() error { return e.err }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// command runs argv to completion within commandTimeout and returns its
// stdout; a non-zero exit is a *commandError.
func command(ctx context.Context, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
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

// mustRun is command for tests: a failure ends the test.
func mustRun(t *testing.T, env []string, argv ...string) string {
	t.Helper()
	out, err := command(t.Context(), env, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// baseEnv is the environment every client runs with: the test's PATH and
// HOME, nothing that could point a client at the machine's own daemons.
func baseEnv(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C"}
	if v := os.Getenv("TMPDIR"); v != "" {
		env = append(env, "TMPDIR="+v)
	}
	return append(env, extra...)
}
