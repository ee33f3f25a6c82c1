// Package fuzzconfig helps the fuzz targets of the Hearth modules: it seeds
// them with the module configs of caddyfile/testdata and runs a config
// through Caddy's own decoding, provisioning and validation (caddy.Validate:
// every module is decoded, provisioned and validated, nothing is started,
// and everything is cleaned up).
package fuzzconfig

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// testdata is caddyfile/testdata, found from this file's location.
func testdata() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "caddyfile", "testdata")
}

// Seeds returns, as JSON, every object of the expected JSON configs in
// caddyfile/testdata for which match is true (walked depth first).
func Seeds(tb testing.TB, match func(path []string, obj map[string]any) bool) [][]byte {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(testdata(), "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no caddyfile tests in %s: %v", testdata(), err)
	}
	var out [][]byte
	var walk func(path []string, v any)
	walk = func(path []string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if match(path, v) {
				b, _ := json.Marshal(v)
				out = append(out, b)
			}
			for k, e := range v {
				walk(append(path[:len(path):len(path)], k), e)
			}
		case []any:
			for _, e := range v {
				walk(path, e)
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		_, expected, ok := strings.Cut(string(b), "----------")
		var v any
		if !ok || json.Unmarshal([]byte(expected), &v) != nil {
			continue // an error case: the expected output is a message
		}
		walk(nil, v)
	}
	return out
}

// Object decodes b as a JSON object, or reports false. Inputs whose
// strings might name a device or kernel file (an env_file of /dev/zero
// reads forever) are refused too: the fuzzed config is decoded and encoded
// again first, so that escapes such as \u0064 cannot hide a name.
func Object(b []byte) (map[string]json.RawMessage, bool) {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil, false
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, false
	}
	norm, err := json.Marshal(v)
	if err != nil || unsafePath(norm) {
		return nil, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(norm, &m) != nil {
		return nil, false
	}
	return m, true
}

// Handler is the apps of a config whose one HTTP route runs handler (a
// JSON object with its "handler" key).
func Handler(handler []byte) map[string]json.RawMessage {
	server, _ := json.Marshal(map[string]any{
		"listen":          []string{"127.0.0.1:0"},
		"automatic_https": map[string]any{"disable": true},
		"routes":          []any{map[string]any{"handle": []json.RawMessage{handler}}},
	})
	http, _ := json.Marshal(map[string]any{"servers": map[string]json.RawMessage{"srv0": server}})
	return map[string]json.RawMessage{"http": http}
}

// HangAfter is how long Validate may take before the fuzz target crashes.
var HangAfter = 10 * time.Second

// Validate runs apps (app name → its JSON) through caddy.Validate, with
// the admin API off and logs discarded. A panic is not recovered: the fuzz
// target reports it.
func Validate(apps map[string]json.RawMessage) error {
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"writer": map[string]any{"output": "discard"}}}},
		"apps":    apps,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	var c caddy.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	// a load that never returns is a bug too: crash with every stack
	hung := time.AfterFunc(HangAfter, func() {
		buf := make([]byte, 1<<20)
		panic(fmt.Sprintf("caddy.Validate still running after %s; goroutines:\n%s", HangAfter, buf[:runtime.Stack(buf, true)]))
	})
	defer hung.Stop()
	return caddy.Validate(&c)
}

// unsafePath reports whether a config might name a device or kernel file.
func unsafePath(b []byte) bool {
	s := strings.ToLower(string(b))
	for _, bad := range []string{"dev", "proc", "sys", "run", "fd"} {
		if strings.Contains(s, bad) {
			return true
		}
	}
	return false
}
