package upstream_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDependencies keeps the upstream client free of the rest of wharf
// (DESIGN.md: upstream, blob, meta and route do not import each other) and
// of libraries beyond the few it needs.
func TestDependencies(t *testing.T) {
	allowed := map[string]bool{
		"github.com/opencontainers/go-digest":                  true,
		"github.com/opencontainers/image-spec/specs-go/v1":     true,
		"github.com/wharf-mirror/wharf/internal/upstream/auth": true,
		// The public suffix list decides which token realms share a
		// registry's domain.
		"golang.org/x/net/publicsuffix": true,
	}
	for _, dir := range []string{".", "auth"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				std := !strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
				if !std && !allowed[path] {
					t.Errorf("%s imports %s", file, path)
				}
			}
		}
	}
}
