package gc

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the dependency direction of DESIGN.md: gc decides on
// the index and the blob store and learns what is in use through its own
// Guard interface, so it never imports the mirror, the HTTP layer or the
// upstream client (which import nothing of gc either). Test files are
// exempt.
func TestImports(t *testing.T) {
	forbidden := []string{
		"github.com/wharf-mirror/wharf/internal/mirror",
		"github.com/wharf-mirror/wharf/internal/server",
		"github.com/wharf-mirror/wharf/internal/ociapi",
		"github.com/wharf-mirror/wharf/internal/upstream",
		"github.com/wharf-mirror/wharf/internal/config",
		"net/http",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %q, which gc must not depend on", name, path)
				}
			}
		}
	}
}
