package metatest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/meta/metatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	metatest.Run(t, func(*testing.T) meta.Index { return metatest.NewMemory() })
}
