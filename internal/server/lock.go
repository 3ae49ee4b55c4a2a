package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrDataDirInUse reports a data directory another wharf process (a server,
// or a CLI command working on it directly) holds.
var ErrDataDirInUse = errors.New("data directory is in use by another wharf process")

// lockFile is the name of the lock in the data directory.
const lockFile = "wharf.lock"

// dirLock is an exclusive advisory lock (flock) on the data directory: one
// process at a time owns the cache, since the index's in-memory state (link
// cache, fills in flight, pins) is per process. The kernel releases it when
// the process dies, so a kill -9 never leaves a stale lock behind.
type dirLock struct{ f *os.File }

// lockDataDir takes the lock, or fails with ErrDataDirInUse naming the
// holder's PID when it can read it.
func lockDataDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := ""
			if b, err := os.ReadFile(path); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					holder = fmt.Sprintf(" (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("%s%s: %w", dir, holder, ErrDataDirInUse)
		}
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	// The PID is informative only (error messages); the flock is the lock.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// release drops the lock.
func (l *dirLock) release() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}
