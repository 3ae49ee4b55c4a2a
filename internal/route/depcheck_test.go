package route_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package a leaf (DESIGN.md: route does not import
// blob, meta or upstream): it may only use the standard library and
// go-digest. Test files are exempt.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"crypto/sha256":                       true,
		"crypto/sha512":                       true,
		"errors":                              true,
		"fmt":                                 true,
		"strings":                             true,
		"github.com/opencontainers/go-digest": true,
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
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !allowed[path] {
				t.Errorf("%s imports %q, which route must not depend on", name, path)
			}
		}
	}
}
