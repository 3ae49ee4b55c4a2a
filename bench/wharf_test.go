//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the process lifecycle. They only cap how long a broken run can
// hang; a healthy wharf starts in milliseconds and stops as fast.
const (
	startTimeout  = 20 * time.Second // process start → "wharf serving" log line → /healthz 200
	stopTimeout   = 15 * time.Second // SIGTERM → exit, before SIGKILL
	killTimeout   = 5 * time.Second  // SIGKILL → exit
	healthPoll    = 20 * time.Millisecond
	sampleEvery   = 50 * time.Millisecond // VmRSS sampling period during a phase
	maxSampleTime = 15 * time.Minute      // a sampler stops on its own after this
)

// errNoStatus means /proc/<pid>/status lacked the field asked for (the process
// is gone, or the kernel does not report it).
var errNoStatus = errors.New("field not in /proc/<pid>/status")

// wharfBinary returns the absolute path of the wharf binary under test:
// $WHARF_BIN, or bin/wharf at the module root (built by `make bench-e2e`).
func wharfBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("WHARF_BIN")
	if p == "" {
		p = filepath.Join("..", "bin", "wharf")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("wharf binary: %v", err)
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		t.Fatalf("wharf binary %s not found: run `make bench-e2e`, which builds it first, or set WHARF_BIN", abs)
	}
	return abs
}

// wharfVersion asks the binary for its version string.
func wharfVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "wharf"))
}

// wharfOptions configures one wharf process.
type wharfOptions struct {
	bin     string
	dataDir string
	// upstreams maps registry names to upstream base URLs (--upstream NAME=URL).
	upstreams map[string]string
	// env is added to the process environment (e.g. "WHARF_TAG_TTL=0s");
	// every other WHARF_* variable of the test's environment is dropped so
	// that the figures do not depend on the shell they were run from.
	env []string
}

// wharfProc is one running bin/wharf.
type wharfProc struct {
	t        testing.TB
	pid      int
	url      string // registry API, "http://127.0.0.1:PORT"
	adminURL string // admin listener, "http://127.0.0.1:PORT"
	logPath  string // the process's stderr (JSON log lines)

	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd.Wait has returned
	waitErr  error         // cmd.Wait's result; read after exited is closed
	stopOnce sync.Once
}

// startWharf starts bin/wharf on kernel-chosen loopback ports, waits until
// its admin /healthz answers 200, and registers its stop with t.Cleanup.
//
// The ports are read back from the "wharf serving" log line rather than
// picked in advance, so there is no window in which another process could
// take them.
func startWharf(t testing.TB, o wharfOptions) *wharfProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "wharf.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("wharf log: %v", err)
	}
	args := []string{"serve",
		"--listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0",
		"--data-dir", o.dataDir,
		"--log-format", "json",
		"--log-level", "info",
	}
	for _, name := range slices.Sorted(maps.Keys(o.upstreams)) {
		args = append(args, "--upstream", name+"="+o.upstreams[name])
	}
	cmd := exec.Command(o.bin, args...)
	cmd.Env = append(withoutWharfEnv(os.Environ()), o.env...)
	cmd.Stdout = logFile
	addrs := make(chan servingAddrs, 1)
	cmd.Stderr = &logWatcher{w: logFile, found: addrs}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", o.bin, err)
	}
	p := &wharfProc{t: t, pid: cmd.Process.Pid, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		// cmd.Wait also waits for the goroutine that copies stderr into
		// the logWatcher, so the log file is complete once exited closes.
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(p.stop)

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	select {
	case a := <-addrs:
		p.url, p.adminURL = "http://"+a.Listen, "http://"+a.AdminListen
	case <-p.exited:
		t.Fatalf("wharf exited during start (%v); log:\n%s", p.waitErr, p.logTail())
	case <-deadline.C:
		t.Fatalf("wharf did not log its listen addresses within %v; log:\n%s", startTimeout, p.logTail())
	}
	if err := waitHealthy(p.adminURL+"/healthz", p.exited, deadline.C); err != nil {
		t.Fatalf("wharf not healthy: %v; log:\n%s", err, p.logTail())
	}
	return p
}

// waitHealthy polls url until it answers 200, the process exits, or the
// deadline fires.
func waitHealthy(url string, exited <-chan struct{}, deadline <-chan time.Time) error {
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	tick := time.NewTicker(healthPoll)
	defer tick.Stop()
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("process exited")
		case <-deadline:
			return fmt.Errorf("no 200 from %s within %v", url, startTimeout)
		case <-tick.C:
		}
	}
}

// stop ends the process by its PID: SIGTERM (wharf drains and closes its
// index), then SIGKILL if it does not exit in time. An exit the harness did
// not ask for is a test error: every figure taken after it would be wrong.
func (p *wharfProc) stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.exited:
			p.t.Errorf("wharf (pid %d) exited on its own: %v; log:\n%s", p.pid, p.waitErr, p.logTail())
			return
		default:
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.t.Errorf("SIGTERM wharf (pid %d): %v", p.pid, err)
		}
		select {
		case <-p.exited:
			if p.waitErr != nil {
				p.t.Errorf("wharf (pid %d) exit after SIGTERM: %v; log:\n%s", p.pid, p.waitErr, p.logTail())
			}
			return
		case <-time.After(stopTimeout):
		}
		p.t.Errorf("wharf (pid %d) still running %v after SIGTERM; killing it", p.pid, stopTimeout)
		_ = p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(killTimeout):
			p.t.Errorf("wharf (pid %d) survived SIGKILL for %v", p.pid, killTimeout)
		}
	})
}

// logTail returns the last few KiB of the process's log, for failure messages.
func (p *wharfProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	const keep = 4 << 10
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// mem reads the process's current and peak resident set size.
func (p *wharfProc) mem() (memStatus, error) { return readMem(p.pid) }

// memStatus is the memory part of /proc/<pid>/status, in bytes.
type memStatus struct {
	RSS int64 // VmRSS: resident set size now
	HWM int64 // VmHWM: peak resident set size since the process started
}

// readMem parses VmRSS and VmHWM from /proc/<pid>/status (proc(5); the
// kernel reports them in kB, meaning KiB).
func readMem(pid int) (memStatus, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memStatus{}, err
	}
	return parseMem(b)
}

func parseMem(status []byte) (memStatus, error) {
	var m memStatus
	var haveRSS, haveHWM bool
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return memStatus{}, fmt.Errorf("%s: unexpected value %q", name, rest)
		}
		kib, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("%s: %w", name, err)
		}
		if name == "VmRSS" {
			m.RSS, haveRSS = kib<<10, true
		} else {
			m.HWM, haveHWM = kib<<10, true
		}
	}
	if !haveRSS || !haveHWM {
		return memStatus{}, errNoStatus
	}
	return m, nil
}

// userHZ is the unit of utime and stime in /proc/<pid>/stat (proc(5):
// clock ticks, sysconf(_SC_CLK_TCK)), which the Linux ABI fixes at 100.
const userHZ = 100

// cpuTime reads the CPU time (user + system) the process has used so far
// from /proc/<pid>/stat, to a tick (10 ms).
func (p *wharfProc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

func parseStatCPU(stat []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after the last ')' start with field 3, state.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errNoStatus
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, errNoStatus
	}
	var ticks int64
	for _, s := range f[11:13] { // fields 14 utime and 15 stime
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/<pid>/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// selfCPUTime is the CPU time (user + system) the test process has used:
// the client and the in-process fake upstream.
func selfCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// cpuMeter measures the CPU time wharf and the test process use during a
// phase.
type cpuMeter struct {
	w           *wharfProc // nil: the phase has no wharf
	wharf, self time.Duration
}

func startCPU(t testing.TB, w *wharfProc) cpuMeter {
	t.Helper()
	c := cpuMeter{w: w}
	c.wharf, c.self = c.read(t)
	return c
}

// stop returns the CPU seconds used since startCPU.
func (c cpuMeter) stop(t testing.TB) (wharf, self float64) {
	t.Helper()
	w, s := c.read(t)
	return (w - c.wharf).Seconds(), (s - c.self).Seconds()
}

func (c cpuMeter) read(t testing.TB) (wharf, self time.Duration) {
	t.Helper()
	var err error
	if c.w != nil {
		if wharf, err = c.w.cpuTime(); err != nil {
			t.Fatalf("wharf CPU time: %v", err)
		}
	}
	if self, err = selfCPUTime(); err != nil {
		t.Fatalf("test process CPU time: %v", err)
	}
	return wharf, self
}

// rssSampler records the largest VmRSS of a process, read every sampleEvery
// until Stop. VmHWM is the exact peak but covers the whole life of the
// process; sampling gives the peak of one phase of a process that was
// already running (e.g. a warm pull after a cold one).
type rssSampler struct {
	stopCh chan struct{}
	done   chan struct{}
	peak   int64
	n      int
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		limit := time.NewTimer(maxSampleTime)
		defer limit.Stop()
		for {
			if m, err := readMem(pid); err == nil {
				s.peak = max(s.peak, m.RSS)
				s.n++
			}
			select {
			case <-s.stopCh:
				return
			case <-limit.C:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop ends sampling (after one last sample) and returns the largest VmRSS
// seen and the number of samples taken.
func (s *rssSampler) Stop() (peak int64, samples int) {
	close(s.stopCh)
	<-s.done
	return s.peak, s.n
}

// servingAddrs are the addresses in wharf's "wharf serving" log line.
type servingAddrs struct {
	Msg         string `json:"msg"`
	Listen      string `json:"listen"`
	AdminListen string `json:"admin_listen"`
}

// logWatcher copies wharf's stderr to w and reports the listen addresses of
// the first "wharf serving" line on found. exec.Cmd writes to it from a
// single goroutine.
type logWatcher struct {
	w       *os.File
	found   chan<- servingAddrs
	partial []byte
	done    bool
}

func (l *logWatcher) Write(b []byte) (int, error) {
	if _, err := l.w.Write(b); err != nil {
		return 0, err
	}
	if l.done {
		return len(b), nil
	}
	l.partial = append(l.partial, b...)
	for {
		line, rest, ok := bytes.Cut(l.partial, []byte("\n"))
		if !ok {
			break
		}
		l.partial = rest
		var a servingAddrs
		if json.Unmarshal(line, &a) == nil && a.Msg == "wharf serving" && a.Listen != "" && a.AdminListen != "" {
			l.found <- a
			l.done, l.partial = true, nil
			break
		}
	}
	return len(b), nil
}

// withoutWharfEnv drops WHARF_* variables from env.
func withoutWharfEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "WHARF_") {
			out = append(out, kv)
		}
	}
	return out
}
