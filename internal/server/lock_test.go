package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wharf-mirror/wharf/internal/config"
)

// One process owns a data directory: a second instance on it fails with
// ErrDataDirInUse naming the holder, and may open it once the first closed.
func TestDataDirLock(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	first, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, lockFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file = %q, %v; want this PID", b, err)
	}
	// A write in progress of the first instance must survive the attempt:
	// the second must not get as far as emptying blobs/tmp.
	tmp := filepath.Join(cfg.DataDir, "blobs", "tmp", "in-progress")
	if err := os.WriteFile(tmp, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := New(ctx, cfg, Options{})
	if !errors.Is(err, ErrDataDirInUse) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second New = %v, want ErrDataDirInUse", err)
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q does not name the holder", err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("the refused instance touched the first one's files: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	third.Close()
}
