package blobtest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/blob/blobtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	blobtest.Run(t, func(*testing.T) blob.Store { return blobtest.NewMemory() })
}
