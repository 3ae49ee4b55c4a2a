// Package bench is wharf's end-to-end benchmark harness (DESIGN.md, "Test
// layers" item 5). Its tests are behind the build tag "bench" and are run by
// `make bench-e2e`, which builds bin/wharf first; see README.md for the
// figures and what each one means.
//
// The harness runs wharf as a real process (bin/wharf serve, and the CLI
// subcommands for figure 4), so that its memory can be read from
// /proc/<pid>/status, in front of an in-process fake Docker Hub
// (registrytest: Bearer token flow, blobs redirected to a storage host). The
// client is a Go HTTP client in the test process that pulls the way containerd
// does: HEAD the tag, GET the manifest by digest, then the config and the
// layers three at a time, verifying the SHA-256 of every byte it receives.
//
// Invariants:
//   - Every wharf process the harness starts is stopped by its PID (SIGTERM,
//     then SIGKILL) in the test's Cleanup, and its exit is waited for.
//   - A per-phase peak RSS comes from a wharf process started for that phase,
//     or from one whose VmHWM was reset right before it (writing "5" to
//     /proc/<pid>/clear_refs); otherwise a process is never reused across two
//     phases whose peaks are reported separately.
//   - A CLI command's peak RSS is its own VmHWM, read while it runs, not its
//     ru_maxrss: a Go child's ru_maxrss includes the test process's peak
//     (vfork, then execve carries the old memory's high-water mark over).
//   - Only correctness is asserted (digests, sizes, the single upstream fetch
//     of a blob pulled concurrently); timings and memory are reported, never
//     asserted.
//   - Every loop is bounded in count and in time.
package bench
