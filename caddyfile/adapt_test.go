package caddyfile

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-dns/rfc2136"

	_ "github.com/hearth-dev/hearth/modules/hearthio"
	_ "github.com/hearth-dev/hearth/modules/process"
)

var update = flag.Bool("update", false, "rewrite the expected output of the golden files")

// separator splits a .caddyfiletest file into the Caddyfile and the
// expected adapted JSON, or "error: <message>" for input that must fail.
const separator = "----------"

// TestAdapt adapts every testdata/*.caddyfiletest and compares the result.
func TestAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "\n"+separator+"\n")
			if !ok {
				t.Fatalf("%s has no %q line", file, separator)
			}
			out, _, err := adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			var got string
			if err != nil {
				got = "error: " + err.Error()
			} else {
				var buf bytes.Buffer
				if err := json.Indent(&buf, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				got = buf.String()
			}
			if *update {
				if err := os.WriteFile(file, []byte(input+"\n"+separator+"\n"+got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.TrimSpace(got) != strings.TrimSpace(expected) {
				t.Errorf("%s:\ngot:\n%s\nwant:\n%s", file, got, expected)
			}
		})
	}
}
