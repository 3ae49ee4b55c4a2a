package ocilayout

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the dependency direction of DESIGN.md: the archive
// format works on the blob store and the index only, so the admin API, the
// CLI and offline tools can use it without the mirror, the HTTP layer or the
// upstream client. Test files are exempt.
func TestImports(t *testing.T) {
	forbidden := []string{
		"github.com/wharf-mirror/wharf/internal/mirror",
		"github.com/wharf-mirror/wharf/internal/server",
		"github.com/wharf-mirror/wharf/internal/ociapi",
		"github.com/wharf-mirror/wharf/internal/upstream",
		"github.com/wharf-mirror/wharf/internal/config",
		"github.com/google/go-containerregistry",
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
			if slices.ContainsFunc(forbidden, func(p string) bool { return path == p || strings.HasPrefix(path, p+"/") }) {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
