//go:build bench

package bench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// The transfer workload: a cache of transferImages images of transferLayers
// layers each, 1 GiB of layers in all, exported to one archive and imported
// back.
const (
	transferImages     = 4
	transferLayers     = 4
	transferLayerBytes = 64 << 20 // 4 × 4 × 64 MiB = 1 GiB
	transferRepoFormat = "library/bench-transfer-%d"

	// cliTimeout bounds one CLI command (prefetch, export or import of the
	// whole cache); each takes seconds on a healthy machine.
	cliTimeout = 5 * time.Minute
	// transferDisk is the free space the phase needs where its data
	// directories are: the source cache, the archive, and the last copy
	// imported each way (earlier copies are removed as the phase goes),
	// with room to spare.
	transferDisk = 5 << 30
	// cliSampleEvery is how often a CLI process's VmHWM is read.
	cliSampleEvery = 10 * time.Millisecond
	// maxCLIOutput bounds what is kept of a CLI command's stdout and stderr.
	maxCLIOutput = 1 << 20
)

// seedTransfer is the seed of the first transfer image; image i has seed
// seedTransfer+i, apart from every other workload's.
const seedTransfer uint64 = 16

// errArchive means an exported archive does not hold what the cache held.
var errArchive = errors.New("archive does not match the cache")

// TestTransfer takes figure 4, prints it, and writes results/transfer.json.
// It is its own test (not a phase of TestE2E) so that it can be run alone
// with -run TestTransfer; `make bench-e2e` (-run .) runs both.
func TestTransfer(t *testing.T) {
	bin := wharfBinary(t)
	rep := &report{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Machine: describeMachine(t.Context(), bin, os.TempDir()),
		Runs:    runs(t),
	}
	finish := measureConditions(&rep.Conditions)
	t.Run("transfer", func(t *testing.T) { rep.Transfer = benchTransfer(t, bin, rep.Runs) })
	finish()
	rep.print(os.Stdout)
	if t.Failed() || rep.Transfer == nil {
		t.Log("the phase failed: results/transfer.json left as it was")
		return
	}
	if err := rep.writeJSON("results/transfer.json"); err != nil {
		t.Errorf("write results: %v", err)
	}
}

// transferImage is one image of the transfer workload.
type transferImage struct {
	repo  string
	img   v1.Image
	bytes int64 // config + layers: what a pull fetches besides manifests
}

// benchTransfer is figure 4. A wharf fills a cold cache from the upstream
// (prefetch), the whole cache is exported through its admin API runs times,
// then, with that server stopped, the archive is imported runs times into
// an empty data directory by the CLI alone, and runs times through a fresh
// server on an empty data directory. Last, with the upstream down, both
// imported caches serve every image whole.
func benchTransfer(t *testing.T, bin string, runs int) *transferReport {
	work := t.TempDir()
	if free, err := freeBytes(work); err == nil && free < transferDisk {
		t.Fatalf("%s has %s free; the transfer phase needs %s (set TMPDIR)", work, mib(free), mib(transferDisk))
	}

	hub := registrytest.New(t, dockerHub)
	sizes := make([]int64, transferLayers)
	for i := range sizes {
		sizes[i] = transferLayerBytes
	}
	images := make([]transferImage, transferImages)
	want := map[digest.Digest]int64{} // every blob the archive must hold
	var refs []string
	for i := range images {
		img := registrytest.RandomImage(t, seedTransfer+uint64(i), sizes...)
		repo := fmt.Sprintf(transferRepoFormat, i)
		hub.PushImage(t, repo, tag, img)
		images[i] = transferImage{repo: repo, img: img, bytes: imageBytes(t, img)}
		addBlobs(t, want, img)
		refs = append(refs, repo+":"+tag)
	}
	var content int64
	for _, n := range want {
		content += n
	}
	upstream := map[string]string{"docker.io": hub.URL()}
	archive := filepath.Join(work, "cache.tar")
	rep := &transferReport{
		Images: transferImages, Layers: transferLayers, LayerBytes: transferLayerBytes,
		Blobs: len(want), ContentBytes: content,
	}

	// Fill: a cold cache, filled by the server from the upstream.
	w := startWharf(t, wharfOptions{bin: bin, dataDir: filepath.Join(work, "src"), upstreams: upstream})
	fill := runCLI(t, bin, append([]string{"prefetch", "--server", w.adminURL}, refs...)...)
	rep.FillSeconds = fill.secs
	t.Logf("fill: prefetch of %d images (%s) in %.2fs", len(refs), mib(content), fill.secs)

	// Export of the whole cache, by the server, to a file the CLI writes.
	var export transferRuns
	for i := range runs {
		if err := os.Remove(archive); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("remove the previous archive: %v", err)
		}
		s := measureServer(t, w)
		r := runCLI(t, bin, "export", "--server", w.adminURL, "--json", "-o", archive)
		s.stop(t, &r)
		var out struct {
			Images int   `json:"images"`
			Bytes  int64 `json:"bytes"`
		}
		if err := json.Unmarshal(r.stdout, &out); err != nil {
			t.Fatalf("export --json output %q: %v", r.stdout, err)
		}
		st, err := os.Stat(archive)
		if err != nil {
			t.Fatalf("archive: %v", err)
		}
		if out.Images != transferImages || out.Bytes != st.Size() {
			t.Fatalf("export says %d images, %d bytes; want %d images, and the file has %d bytes",
				out.Images, out.Bytes, transferImages, st.Size())
		}
		contents, err := checkArchive(archive, want)
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		rep.ArchiveBytes, rep.ArchiveEntries = st.Size(), contents.entries
		export.add(r, st.Size())
		t.Logf("export run %d: %.2fs, %s; server peak %s (%s before), %.2f CPU s; CLI peak %s, %.2f CPU s (%.2f system)", i+1,
			r.secs, mib(st.Size()), mib(r.serverHWM), mib(r.serverRSSBefore), r.serverCPU, mib(r.peakRSS), r.cpu, r.sys)
	}
	listTar(t, archive)
	w.stop()
	if self, err := readMem(os.Getpid()); err == nil {
		t.Logf("CLI ru_maxrss %s (median) against the test process's own VmHWM %s: ru_maxrss is not the CLI's peak",
			mib(int64(newStat(export.cliRU).Median)), mib(self.HWM))
	}

	// Import with no server: the CLI opens the empty data directory itself.
	// The last copy is kept for the check at the end.
	var local transferRuns
	var localDir string
	for i := range runs {
		removeDir(t, localDir)
		localDir = filepath.Join(work, "import-local-"+strconv.Itoa(i))
		r := runCLI(t, bin, "import", "--data-dir", localDir, "--json", archive)
		checkImport(t, r.stdout, len(want))
		local.add(r, rep.ArchiveBytes)
		t.Logf("import in-process run %d: %.2fs; CLI peak %s, %.2f CPU s (%.2f system)", i+1, r.secs, mib(r.peakRSS), r.cpu, r.sys)
	}

	// Import through a server started on an empty data directory.
	var served transferRuns
	var servedDir string
	for i := range runs {
		removeDir(t, servedDir)
		servedDir = filepath.Join(work, "import-server-"+strconv.Itoa(i))
		w := startWharf(t, wharfOptions{bin: bin, dataDir: servedDir, upstreams: upstream})
		s := measureServer(t, w)
		r := runCLI(t, bin, "import", "--server", w.adminURL, "--json", archive)
		s.stop(t, &r)
		w.stop()
		checkImport(t, r.stdout, len(want))
		served.add(r, rep.ArchiveBytes)
		t.Logf("import through server run %d: %.2fs; server peak %s (%s before), %.2f CPU s; CLI peak %s, %.2f CPU s (%.2f system)", i+1,
			r.secs, mib(r.serverHWM), mib(r.serverRSSBefore), r.serverCPU, mib(r.peakRSS), r.cpu, r.sys)
	}
	// The archive is no longer needed; the imported copies are.
	if err := os.Remove(archive); err != nil {
		t.Errorf("remove archive: %v", err)
	}

	// Both imported caches serve every image whole with the upstream down:
	// each blob and manifest is a cache hit, or the pull fails.
	hub.Down()
	for _, dir := range []string{localDir, servedDir} {
		w := startWharf(t, wharfOptions{bin: bin, dataDir: dir, upstreams: upstream})
		for _, im := range images {
			timedPull(t, w.url, im.repo, im.bytes, nil)
		}
		w.stop()
		t.Logf("%s: %d images pulled whole with the upstream down", filepath.Base(dir), len(images))
	}
	removeDir(t, localDir)
	removeDir(t, servedDir)

	rep.Export = export.row(true)
	rep.ImportInProcess = local.row(false)
	rep.ImportServer = served.row(true)
	return rep
}

// addBlobs records the manifest, config and layers of img in want.
func addBlobs(t *testing.T, want map[digest.Digest]int64, img v1.Image) {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	want[digest.FromBytes(raw)] = int64(len(raw))
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		want[digest.Digest(d.Digest.String())] = d.Size
	}
}

// cliResult is one finished wharf CLI command.
type cliResult struct {
	secs    float64 // start of the process to its exit
	peakRSS int64   // the CLI process's own peak resident set: its last VmHWM read before it exited
	// ruMaxRSS is ru_maxrss of the CLI process. It is not the CLI's peak:
	// Go starts a child with vfork (CLONE_VM), and execve(2) folds the
	// high-water mark of the memory it leaves, the test process's, into
	// the child's maxrss, so it is at least the test process's peak.
	ruMaxRSS int64
	cpu      float64 // CPU seconds (user + system) of the CLI process
	sys      float64 // of which system (kernel) time
	stdout   []byte

	// Filled in by serverMeter.stop when a server did the work.
	serverHWM       int64   // server's VmHWM during the command (reset before it)
	serverRSSBefore int64   // server's VmRSS right before the command
	serverCPU       float64 // server's CPU seconds during the command
}

// runCLI runs bin with args, with no WHARF_* variables from the test's
// environment and the default admin listener on a closed port, so that only
// the flags decide which wharf the command talks to. A failed command fails
// the test.
func runCLI(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(withoutWharfEnv(os.Environ()), "WHARF_ADMIN_LISTEN=127.0.0.1:1")
	cmd.WaitDelay = killTimeout
	stdout, stderr := &limitedBuffer{max: maxCLIOutput}, &limitedBuffer{max: maxCLIOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start wharf %s: %v", args[0], err)
	}
	// Start returns once execve has succeeded: from here on the PID's
	// memory is the CLI's own.
	peak, perr := samplePeak(cmd.Process.Pid)
	err := cmd.Wait()
	r := cliResult{secs: time.Since(start).Seconds(), stdout: stdout.Bytes()}
	if perr == nil {
		r.peakRSS = peak.Stop()
	}
	if err != nil {
		t.Fatalf("wharf %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	if perr != nil {
		t.Fatalf("wharf %s: peak RSS: %v", args[0], perr)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatalf("wharf %s: no rusage", args[0])
	}
	// getrusage(2): on Linux ru_maxrss is in kilobytes (KiB).
	r.ruMaxRSS = ru.Maxrss << 10
	r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	r.sys = time.Duration(ru.Stime.Nano()).Seconds()
	return r
}

// peakSampler follows VmHWM of one process until it exits.
type peakSampler struct {
	stopCh chan struct{}
	done   chan struct{}
	peak   int64 // written by the sampling goroutine; read after done
}

// samplePeak reads VmHWM of process pid every cliSampleEvery through one
// open /proc/<pid>/status. An open /proc/<pid> file stays bound to the
// process it was opened for: once that process has exited it reads no
// Vm* fields (a zombie) or fails with ESRCH (reaped), never the status of
// a later process given the same PID. VmHWM only grows, so the last value
// read is the peak up to at most cliSampleEvery before the exit.
func samplePeak(pid int) (*peakSampler, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	s := &peakSampler{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer f.Close()
		tick := time.NewTicker(cliSampleEvery)
		defer tick.Stop()
		limit := time.NewTimer(cliTimeout + killTimeout)
		defer limit.Stop()
		for {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return
			}
			b, err := io.ReadAll(io.LimitReader(f, 64<<10))
			if err != nil {
				return
			}
			m, err := parseMem(b)
			if err != nil {
				return // exited: a zombie has no memory
			}
			s.peak = max(s.peak, m.HWM)
			select {
			case <-s.stopCh:
				return
			case <-limit.C:
				return
			case <-tick.C:
			}
		}
	}()
	return s, nil
}

// Stop ends sampling and returns the largest VmHWM read.
func (s *peakSampler) Stop() int64 {
	close(s.stopCh)
	<-s.done
	return s.peak
}

// limitedBuffer keeps the first max bytes written to it and drops the rest,
// so that a command's output cannot fill the test's memory.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }

// serverMeter measures a running server over one CLI command.
type serverMeter struct {
	w         *wharfProc
	rssBefore int64
	cpuBefore time.Duration
}

// measureServer resets w's peak RSS to its current RSS and notes its CPU
// time. Writing "5" to /proc/<pid>/clear_refs resets VmHWM (proc(5),
// Linux 4.0 and later), so that VmHWM after the command is the command's
// peak although the process did other work before.
func measureServer(t *testing.T, w *wharfProc) serverMeter {
	t.Helper()
	f, err := os.OpenFile("/proc/"+strconv.Itoa(w.pid)+"/clear_refs", os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("5")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Fatalf("reset VmHWM of wharf (pid %d): %v", w.pid, err)
	}
	m, err := w.mem()
	if err != nil {
		t.Fatalf("wharf memory: %v", err)
	}
	cpu, err := w.cpuTime()
	if err != nil {
		t.Fatalf("wharf CPU time: %v", err)
	}
	return serverMeter{w: w, rssBefore: m.RSS, cpuBefore: cpu}
}

// stop records the server's peak RSS and CPU time since measureServer in r.
func (s serverMeter) stop(t *testing.T, r *cliResult) {
	t.Helper()
	m, err := s.w.mem()
	if err != nil {
		t.Fatalf("wharf memory: %v", err)
	}
	cpu, err := s.w.cpuTime()
	if err != nil {
		t.Fatalf("wharf CPU time: %v", err)
	}
	r.serverHWM, r.serverRSSBefore, r.serverCPU = m.HWM, s.rssBefore, (cpu - s.cpuBefore).Seconds()
}

// archiveContents is what checkArchive found in an archive.
type archiveContents struct {
	entries   int   // tar entries, directories included
	blobBytes int64 // sizes of blobs/sha256/* entries
}

// checkArchive reads the tar headers of the archive at path (archive/tar
// seeks over the contents of a file) and checks that it is an OCI image
// layout (image-spec image-layout.md: oci-layout, index.json, blobs/) that
// holds exactly the blobs in want, each with its size, and that besides the
// contents it has no more than tar's per-entry header and padding.
func checkArchive(path string, want map[digest.Digest]int64) (archiveContents, error) {
	f, err := os.Open(path)
	if err != nil {
		return archiveContents{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return archiveContents{}, err
	}
	var c archiveContents
	var files int64 // bytes of every regular file
	seen := map[digest.Digest]bool{}
	var haveLayout, haveIndex bool
	tr := tar.NewReader(f)
	// Bounded: an entry takes at least one 512-byte header.
	for range st.Size()/512 + 1 {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return c, fmt.Errorf("%s: entry %d: %w", path, c.entries+1, err)
		}
		c.entries++
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return c, fmt.Errorf("%w: %s is of tar type %q", errArchive, name, h.Typeflag)
		}
		files += h.Size
		switch name {
		case "oci-layout":
			haveLayout = true
			continue
		case "index.json":
			haveIndex = true
			continue
		}
		hex, ok := strings.CutPrefix(name, "blobs/sha256/")
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		size, wanted := want[d]
		switch {
		case !ok || d.Validate() != nil:
			return c, fmt.Errorf("%w: unexpected entry %s", errArchive, name)
		case !wanted:
			return c, fmt.Errorf("%w: blob %s is not in the cache", errArchive, d)
		case seen[d]:
			return c, fmt.Errorf("%w: blob %s twice", errArchive, d)
		case h.Size != size:
			return c, fmt.Errorf("%w: blob %s has %d bytes, want %d", errArchive, d, h.Size, size)
		}
		seen[d] = true
		c.blobBytes += h.Size
	}
	if !haveLayout || !haveIndex {
		return c, fmt.Errorf("%w: oci-layout present %t, index.json present %t", errArchive, haveLayout, haveIndex)
	}
	if len(seen) != len(want) {
		return c, fmt.Errorf("%w: %d of %d blobs", errArchive, len(seen), len(want))
	}
	// Each entry costs a 512-byte header and under 512 bytes of padding;
	// two zero blocks end the archive.
	if overhead := st.Size() - files; overhead < 0 || overhead > int64(c.entries)*1024+1024 {
		return c, fmt.Errorf("%w: %d bytes besides %d bytes of files in %d entries", errArchive, overhead, files, c.entries)
	}
	return c, nil
}

// listTar lists the archive with the system's tar, as a user would check
// it, and wants index.json in the listing. Without a tar program the check
// is left to checkArchive and said so.
func listTar(t *testing.T, archive string) {
	t.Helper()
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Logf("no tar program (%v): archive checked with archive/tar only", err)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tarBin, "-tf", archive)
	cmd.WaitDelay = killTimeout
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tar -tf %s: %v", archive, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.TrimPrefix(sc.Text(), "./") == "index.json" {
			return
		}
	}
	t.Fatalf("tar -tf %s does not list index.json:\n%s", archive, out)
}

// checkImport checks an import's --json report: every image, manifest and
// blob of the archive recorded, none of them found already cached (the
// data directory was empty).
func checkImport(t *testing.T, stdout []byte, blobs int) {
	t.Helper()
	var rep adminapi.ImportReport
	if err := json.Unmarshal(stdout, &rep); err != nil {
		t.Fatalf("import --json output %q: %v", stdout, err)
	}
	if len(rep.Images) != transferImages || rep.Manifests+rep.Blobs != blobs || rep.Skipped != 0 {
		t.Fatalf("import recorded %d images, %d manifests, %d blobs (%d already cached); want %d images, %d manifests and blobs, none cached",
			len(rep.Images), rep.Manifests, rep.Blobs, rep.Skipped, transferImages, blobs)
	}
}

// removeDir removes a data directory the phase no longer needs, so that
// at most one copy of each kind takes disk space; "" is nothing to remove.
func removeDir(t *testing.T, dir string) {
	t.Helper()
	if dir == "" {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove %s: %v", dir, err)
	}
}

// freeBytes is the space available to this user on dir's file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// transferRuns accumulates the runs of one row of figure 4.
type transferRuns struct {
	secs, mbps, cliRSS, cliRU, cliCPU []float64
	serverHWM, serverBefore           []float64
	serverCPU                         []float64
}

func (p *transferRuns) add(r cliResult, bytes int64) {
	p.secs = append(p.secs, r.secs)
	p.mbps = append(p.mbps, float64(bytes)/1e6/r.secs)
	p.cliRSS = append(p.cliRSS, float64(r.peakRSS))
	p.cliRU = append(p.cliRU, float64(r.ruMaxRSS))
	p.cliCPU = append(p.cliCPU, r.cpu)
	p.serverHWM = append(p.serverHWM, float64(r.serverHWM))
	p.serverBefore = append(p.serverBefore, float64(r.serverRSSBefore))
	p.serverCPU = append(p.serverCPU, r.serverCPU)
}

func (p *transferRuns) row(server bool) transferRow {
	r := transferRow{
		WallSeconds:      newStat(p.secs),
		MBps:             newStat(p.mbps),
		CLIPeakRSSBytes:  newStat(p.cliRSS),
		CLIRUMaxRSSBytes: newStat(p.cliRU),
		CLICPUSeconds:    newStat(p.cliCPU),
	}
	if server {
		hwm, before, cpu := newStat(p.serverHWM), newStat(p.serverBefore), newStat(p.serverCPU)
		r.ServerPeakRSSBytes, r.ServerRSSBeforeBytes, r.ServerCPUSeconds = &hwm, &before, &cpu
	}
	return r
}
