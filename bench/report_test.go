//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
)

// report is everything one run measured. It is printed as tables and
// written as JSON; a phase that failed is left nil.
type report struct {
	Date    string  `json:"date"` // RFC 3339, UTC
	Machine machine `json:"machine"`
	Runs    int     `json:"runs"` // repetitions of every timed figure
	// Conditions tell a quiet machine from a busy one: the figures of a run
	// with much steal or a high load average are not comparable.
	Conditions conditions `json:"conditions"`

	Pull       *pullReport       `json:"pull,omitempty"`
	Concurrent *concurrentReport `json:"concurrent,omitempty"`
	Requests   []requestRow      `json:"requests,omitempty"`
	Transfer   *transferReport   `json:"transfer,omitempty"`
}

// machine describes where the figures were taken.
type machine struct {
	CPUModel string `json:"cpu_model"`
	NumCPU   int    `json:"num_cpu"` // runtime.NumCPU of the test process
	// GOMAXPROCS of the test process, which runs the client (SHA-256 of
	// every byte) and the fake upstream (ChaCha8 generation of every byte):
	// they compete with wharf for the same CPUs.
	GOMAXPROCS int `json:"gomaxprocs"`
	// WharfGOMAXPROCS is the GOMAXPROCS environment wharf inherits; "" means
	// Go's default (the CPU count, or the cgroup's CPU limit if lower).
	WharfGOMAXPROCS string `json:"wharf_gomaxprocs_env"`
	CgroupCPUMax    string `json:"cgroup_cpu_max,omitempty"` // /sys/fs/cgroup/cpu.max
	MemTotalBytes   int64  `json:"mem_total_bytes"`
	OS              string `json:"os"`
	Arch            string `json:"arch"`
	Kernel          string `json:"kernel"`
	GoVersion       string `json:"go_version"`
	WharfVersion    string `json:"wharf_version"`
	// DataDirFS is the file system type of the directory wharf's data
	// directories are created in (the test's temporary directory).
	DataDirFS string `json:"data_dir_fs"`
}

// conditions is what else the machine was doing during the run.
type conditions struct {
	LoadAvgBefore string `json:"loadavg_before"` // 1, 5 and 15 minute load averages (/proc/loadavg)
	LoadAvgAfter  string `json:"loadavg_after"`
	// StealPercent and IOWaitPercent are shares of all CPU time over the
	// run (/proc/stat): time the hypervisor ran something else on our
	// CPUs, and time idle with I/O outstanding.
	StealPercent  float64 `json:"steal_percent"`
	IOWaitPercent float64 `json:"iowait_percent"`
}

// cpuTotals is the aggregate "cpu" line of /proc/stat, in ticks.
type cpuTotals struct{ total, iowait, steal uint64 }

func readCPUTotals() cpuTotals {
	line, _, _ := strings.Cut(readSmall("/proc/stat"), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTotals{}
	}
	var c cpuTotals
	// user nice system idle iowait irq softirq steal [guest guest_nice]:
	// guest time is already included in user and nice.
	for i, v := range f[1:9] {
		n, _ := strconv.ParseUint(v, 10, 64)
		c.total += n
		switch i {
		case 4:
			c.iowait = n
		case 7:
			c.steal = n
		}
	}
	return c
}

// measureConditions returns a function that completes c at the end of the run.
func measureConditions(c *conditions) (finish func()) {
	c.LoadAvgBefore = loadAvg()
	before := readCPUTotals()
	return func() {
		c.LoadAvgAfter = loadAvg()
		after := readCPUTotals()
		if d := float64(after.total - before.total); d > 0 {
			c.StealPercent = 100 * float64(after.steal-before.steal) / d
			c.IOWaitPercent = 100 * float64(after.iowait-before.iowait) / d
		}
	}
}

func loadAvg() string {
	f := strings.Fields(readSmall("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// stat summarises the repetitions of one figure.
type stat struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

func newStat(runs []float64) stat {
	if len(runs) == 0 {
		return stat{}
	}
	s := slices.Clone(runs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{Runs: runs, Median: med, Min: s[0], Max: s[len(s)-1]}
}

// pullReport is figure 1: one image pulled three ways.
type pullReport struct {
	Layers     int     `json:"layers"`
	LayerBytes int64   `json:"layer_bytes"` // size of each layer
	Bytes      int64   `json:"bytes"`       // config + layers: what one pull transfers and verifies
	Direct     pullRow `json:"direct"`
	Cold       pullRow `json:"cold"`
	Warm       pullRow `json:"warm"`
	// Time ratios: a pull through wharf took this many times as long as the
	// same pull straight from the upstream (1.0 = as fast; 2.0 = half the
	// throughput). Median over median, and min over min.
	ColdOverDirect ratio `json:"cold_over_direct"`
	WarmOverDirect ratio `json:"warm_over_direct"`
}

type pullRow struct {
	Seconds stat `json:"seconds"`
	MBps    stat `json:"mb_per_s"` // 10^6 bytes per second, per run
	// PeakRSSBytes is wharf's peak resident set during the pull: VmHWM of
	// the fresh process for a cold pull, the largest VmRSS sampled every 50
	// ms for the warm pull that follows in the same process. Absent for
	// direct pulls.
	PeakRSSBytes *stat `json:"peak_rss_bytes,omitempty"`
	// WharfCPUSeconds is the CPU time (user + system) wharf used during the
	// pull; absent for direct pulls.
	WharfCPUSeconds *stat `json:"wharf_cpu_seconds,omitempty"`
	// TestCPUSeconds is the CPU time of the test process during the pull:
	// the client (SHA-256 of every byte) and, when the upstream is asked,
	// the fake upstream (ChaCha8 generation of every byte).
	TestCPUSeconds stat `json:"test_cpu_seconds"`
}

type ratio struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
}

// concurrentReport is figure 2: many clients, one big blob.
type concurrentReport struct {
	Clients   int   `json:"clients"`
	BlobBytes int64 `json:"blob_bytes"`
	// IdleRSSBytes is VmRSS of a freshly started wharf (empty data
	// directory) one second after /healthz first answered 200.
	IdleRSSBytes stat          `json:"idle_rss_bytes"`
	Cold         concurrentRow `json:"cold"`
	Warm         concurrentRow `json:"warm"`
}

type concurrentRow struct {
	WallSeconds   stat `json:"wall_seconds"`       // first request sent → last client verified its copy
	AggregateMBps stat `json:"aggregate_mb_per_s"` // clients × blob size / wall time, 10^6 bytes per second
	// PeakRSSBytes is VmHWM of the process started for this phase (it
	// includes the process's start-up, which is far smaller).
	PeakRSSBytes stat `json:"peak_rss_bytes"`
	// SampledPeakRSSBytes is the largest VmRSS read every 50 ms during the
	// phase: a check on VmHWM that also shows a short peak can be missed.
	SampledPeakRSSBytes stat `json:"sampled_peak_rss_bytes"`
	WharfCPUSeconds     stat `json:"wharf_cpu_seconds"` // CPU time wharf used during the phase
	TestCPUSeconds      stat `json:"test_cpu_seconds"`  // CPU time of the clients and the fake upstream
	// Per run, the GETs of the blob that reached the upstream. A fetch is
	// a GET with a token at the registry (must be 1 cold, 0 warm); with
	// Docker Hub's redirect it is followed by one download from the storage
	// host. Challenged GETs carried no token and were answered 401: the
	// first request of a process that has no token yet.
	UpstreamFetches    []int `json:"upstream_fetches"`
	UpstreamChallenged []int `json:"upstream_challenged"`
	StorageDownloads   []int `json:"storage_downloads"`
}

// requestRow is one line of figure 3: the requests that reached the fake
// upstream during one pull.
type requestRow struct {
	Pull          string `json:"pull"`
	Total         int    `json:"total"` // every request to the registry, storage host and token server
	ManifestGETs  int    `json:"manifest_gets"`
	ManifestHEADs int    `json:"manifest_heads"`
	BlobGETs      int    `json:"blob_gets"`    // on the registry (one per upstream blob fetch)
	StorageGETs   int    `json:"storage_gets"` // blob downloads from the redirect target
	TokenRequests int    `json:"token_requests"`
	// Unauthorized counts requests to the registry without a token, each
	// answered 401 with a Bearer challenge (the request log is written
	// before authentication, so they are also in the other columns).
	Unauthorized int `json:"unauthorized"`
}

// transferReport is figure 4: the whole cache exported to an archive and
// imported back, with the CLI alone and through a server.
type transferReport struct {
	Images     int   `json:"images"`
	Layers     int   `json:"layers_per_image"`
	LayerBytes int64 `json:"layer_bytes"` // size of each layer
	// Blobs and ContentBytes count what the cache holds: every manifest,
	// config and layer.
	Blobs        int   `json:"blobs"`
	ContentBytes int64 `json:"content_bytes"`
	// ArchiveBytes is the size of the exported tar: the content, index.json,
	// oci-layout, and tar's headers and padding (ArchiveEntries entries).
	ArchiveBytes   int64 `json:"archive_bytes"`
	ArchiveEntries int   `json:"archive_entries"`
	// FillSeconds is one prefetch of every image into the cold cache the
	// export reads, through the server from the upstream.
	FillSeconds float64 `json:"fill_seconds"`

	Export          transferRow `json:"export"`            // server writes the archive, the CLI saves it to a file
	ImportInProcess transferRow `json:"import_in_process"` // the CLI opens an empty data directory itself
	ImportServer    transferRow `json:"import_server"`     // the CLI sends the archive to a server on an empty data directory
}

// transferRow is one operation of figure 4.
type transferRow struct {
	// WallSeconds is the CLI process's start to its exit.
	WallSeconds stat `json:"wall_seconds"`
	MBps        stat `json:"mb_per_s"` // archive bytes / wall time, 10^6 bytes per second, per run
	// ServerPeakRSSBytes is the server's VmHWM during the command, reset
	// to its VmRSS right before (/proc/<pid>/clear_refs);
	// ServerRSSBeforeBytes is that VmRSS. Absent when no server takes part.
	ServerPeakRSSBytes   *stat `json:"server_peak_rss_bytes,omitempty"`
	ServerRSSBeforeBytes *stat `json:"server_rss_before_bytes,omitempty"`
	ServerCPUSeconds     *stat `json:"server_cpu_seconds,omitempty"`
	// CLIPeakRSSBytes is the CLI process's VmHWM, read every 10 ms until
	// it exits. CLIRUMaxRSSBytes is its ru_maxrss, kept to show why it is
	// not used: Linux folds the test process's peak into it (Go starts
	// children with vfork, and execve carries the parent's high-water mark
	// over), so it is at least the test process's peak. CLICPUSeconds is
	// the CLI's user + system time.
	CLIPeakRSSBytes  stat `json:"cli_peak_rss_bytes"`
	CLIRUMaxRSSBytes stat `json:"cli_ru_maxrss_bytes"`
	CLICPUSeconds    stat `json:"cli_cpu_seconds"`
}

// describeMachine collects what is needed to compare figures across runs.
func describeMachine(ctx context.Context, bin, tmp string) machine {
	return machine{
		CPUModel:        procField("/proc/cpuinfo", "model name"),
		NumCPU:          runtime.NumCPU(),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		WharfGOMAXPROCS: os.Getenv("GOMAXPROCS"),
		CgroupCPUMax:    strings.TrimSpace(readSmall("/sys/fs/cgroup/cpu.max")),
		MemTotalBytes:   memTotal(),
		OS:              runtime.GOOS,
		Arch:            runtime.GOARCH,
		Kernel:          strings.TrimSpace(readSmall("/proc/sys/kernel/osrelease")),
		GoVersion:       runtime.Version(),
		WharfVersion:    wharfVersion(ctx, bin),
		DataDirFS:       fsType(tmp),
	}
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	sc := bufio.NewScanner(strings.NewReader(readSmall(path)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() int64 {
	f := strings.Fields(procField("/proc/meminfo", "MemTotal"))
	if len(f) != 2 {
		return 0
	}
	kib, _ := strconv.ParseInt(f[0], 10, 64)
	return kib << 10
}

// readSmall reads a small system file; "" if it cannot.
func readSmall(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

// fsType names the file system dir is on (statfs(2) magic numbers).
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch uint64(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlayfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	}
	return fmt.Sprintf("0x%x", uint64(st.Type))
}

// writeJSON writes the report to path, creating its directory.
func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// print writes the figures as tables. Timed figures are "median (min)";
// throughputs are "median (best)".
func (r *report) print(w io.Writer) {
	var b bytes.Buffer
	m := r.Machine
	fmt.Fprintf(&b, "\nwharf end-to-end benchmark, %s\n", r.Date)
	fmt.Fprintf(&b, "machine: %s; %d CPUs (cgroup cpu.max %q); %.1f GiB RAM; %s/%s, kernel %s; data dirs on %s\n",
		m.CPUModel, m.NumCPU, cmp.Or(m.CgroupCPUMax, "none"), float64(m.MemTotalBytes)/(1<<30), m.OS, m.Arch, m.Kernel, m.DataDirFS)
	fmt.Fprintf(&b, "software: wharf %s; %s; GOMAXPROCS %d in the test process (client + fake upstream), wharf GOMAXPROCS %s\n",
		m.WharfVersion, m.GoVersion, m.GOMAXPROCS, cmp.Or(m.WharfGOMAXPROCS, "Go default"))
	fmt.Fprintf(&b, "conditions: load average %s before, %s after; CPU steal %.1f%%, iowait %.1f%% during the run\n",
		r.Conditions.LoadAvgBefore, r.Conditions.LoadAvgAfter, r.Conditions.StealPercent, r.Conditions.IOWaitPercent)
	fmt.Fprintf(&b, "%d runs of every timed figure, shown as median (min); throughput as median (best); MB = 10^6 bytes\n", r.Runs)
	fmt.Fprintf(&b, "the client (SHA-256 of every byte) and the fake upstream (generates every byte) run in the test process, on the same CPUs as wharf\n")

	if p := r.Pull; p != nil {
		fmt.Fprintf(&b, "\n1. Pull of a %s image (config + %d × %s layers), containerd-style, %d blobs at a time, every digest verified\n",
			mib(p.Bytes), p.Layers, mib(p.LayerBytes), layerConcurrency)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "pull\tseconds\tMB/s\ttime ÷ direct\twharf peak RSS\twharf CPU s\ttest-process CPU s")
		row := func(name string, pr pullRow, rt *ratio) {
			fmt.Fprintf(tw, "%s\t%s\t%.0f (%.0f)\t%s\t%s\t%s\t%s\n", name,
				secs(pr.Seconds, 3), pr.MBps.Median, pr.MBps.Max, ratioString(rt),
				mibStat(pr.PeakRSSBytes), secsPtr(pr.WharfCPUSeconds), secs(pr.TestCPUSeconds, 2))
		}
		row("direct from upstream", p.Direct, nil)
		row("wharf cold", p.Cold, &p.ColdOverDirect)
		row("wharf warm", p.Warm, &p.WarmOverDirect)
		tw.Flush()
		fmt.Fprintln(&b, "   peak RSS: cold = VmHWM of a fresh process; warm = largest VmRSS sampled every 50 ms in the same process")
	}

	if c := r.Concurrent; c != nil {
		fmt.Fprintf(&b, "\n2. %d concurrent GETs of one %s blob, each verified; a fresh wharf process per phase\n", c.Clients, mib(c.BlobBytes))
		fmt.Fprintf(&b, "   idle RSS 1 s after start: %s\n", mibStat(&c.IdleRSSBytes))
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "phase\twall seconds\taggregate MB/s\tpeak RSS (VmHWM)\tmax sampled VmRSS\twharf CPU s\ttest-process CPU s\tupstream fetches+401s/downloads, per run")
		row := func(name string, cr concurrentRow) {
			fmt.Fprintf(tw, "%s\t%s\t%.0f (%.0f)\t%s\t%s\t%s\t%s\t%s\n", name,
				secs(cr.WallSeconds, 2), cr.AggregateMBps.Median, cr.AggregateMBps.Max,
				mibStat(&cr.PeakRSSBytes), mibStat(&cr.SampledPeakRSSBytes),
				secs(cr.WharfCPUSeconds, 2), secs(cr.TestCPUSeconds, 2), perRun(cr))
		}
		row("cold (uncached)", c.Cold)
		row("warm (cached)", c.Warm)
		tw.Flush()
	}

	if len(r.Requests) > 0 {
		fmt.Fprintf(&b, "\n3. Upstream requests for one pull of a multi-arch image (index: linux/amd64 + linux/arm64; client pulls linux/amd64)\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "pull\ttotal\tmanifest GETs\tmanifest HEADs\tblob GETs\tstorage GETs\ttoken requests\t401s")
		for _, q := range r.Requests {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", q.Pull, q.Total, q.ManifestGETs, q.ManifestHEADs, q.BlobGETs, q.StorageGETs, q.TokenRequests, q.Unauthorized)
		}
		tw.Flush()
		fmt.Fprintln(&b, "   blob GETs: at the registry, answered with a redirect; storage GETs: downloads from the redirect target;")
		fmt.Fprintln(&b, "   401s: registry requests sent without a token (also counted in their own column)")
	}

	if x := r.Transfer; x != nil {
		fmt.Fprintf(&b, "\n4. Export and import of the whole cache: %d images × %d × %s layers, %d blobs, %s; archive %s\n",
			x.Images, x.Layers, mib(x.LayerBytes), x.Blobs, mib(x.ContentBytes), mib(x.ArchiveBytes))
		fmt.Fprintf(&b, "   cache filled by one prefetch through the server in %.2f s\n", x.FillSeconds)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "operation\twall s\tMB/s\tserver peak RSS\tserver RSS before\tCLI peak RSS\tserver CPU s\tCLI CPU s")
		row := func(name string, tr transferRow) {
			fmt.Fprintf(tw, "%s\t%s\t%.0f (%.0f)\t%s\t%s\t%s\t%s\t%s\n", name,
				secs(tr.WallSeconds, 2), tr.MBps.Median, tr.MBps.Max,
				mibStat(tr.ServerPeakRSSBytes), mibStat(tr.ServerRSSBeforeBytes), mibStat(&tr.CLIPeakRSSBytes),
				secsPtr(tr.ServerCPUSeconds), secs(tr.CLICPUSeconds, 2))
		}
		row("export (server → CLI → file)", x.Export)
		row("import in-process (CLI, no server)", x.ImportInProcess)
		row("import through server (CLI → server)", x.ImportServer)
		tw.Flush()
		fmt.Fprintln(&b, "   wall s: CLI process start to exit; MB/s: archive bytes ÷ wall s; server peak RSS: VmHWM reset just before the command;")
		fmt.Fprintln(&b, "   CLI peak RSS: the CLI's VmHWM read every 10 ms (its ru_maxrss includes the test process's peak: vfork + execve)")
	}
	_, _ = w.Write(b.Bytes())
}

func secs(s stat, prec int) string { return fmt.Sprintf("%.*f (%.*f)", prec, s.Median, prec, s.Min) }

func secsPtr(s *stat) string {
	if s == nil {
		return "-"
	}
	return secs(*s, 2)
}

func ratioString(r *ratio) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f (%.2f)", r.Median, r.Min)
}

func mibStat(s *stat) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%s (%s)", mib(int64(s.Median)), mib(int64(s.Min)))
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// perRun formats the upstream counts of each run as "1+1/1", fetches +
// challenged GETs / downloads, separated by spaces.
func perRun(cr concurrentRow) string {
	parts := make([]string, len(cr.UpstreamFetches))
	for i := range parts {
		if i < len(cr.UpstreamChallenged) && i < len(cr.StorageDownloads) {
			parts[i] = fmt.Sprintf("%d+%d/%d", cr.UpstreamFetches[i], cr.UpstreamChallenged[i], cr.StorageDownloads[i])
		}
	}
	return strings.Join(parts, " ")
}
