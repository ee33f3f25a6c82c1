package engine

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestEngineKnowsNothingOfCaddy: the engine (pool, dispatch, workers,
// runtime) imports no Caddy package, so nothing of Caddy's config or its
// HTTP errors can creep in; the wsgi and asgi handlers are the adapter.
func TestEngineKnowsNothingOfCaddy(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files here: %v", err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/caddyserver/") || path == "github.com/hearth-dev/hearth/modules/hearth" ||
				path == "github.com/hearth-dev/hearth/modules/guard" {
				t.Errorf("%s imports %s: the engine must not know Caddy's config or HTTP errors (give it what it needs in Options or Request)", name, path)
			}
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("checked only %d files", checked)
	}
}
