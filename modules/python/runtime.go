package python

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// workerRuntime is the Python side of Hearth: the program every worker runs.
//
//go:embed runtime/hearth_worker.py
var workerRuntime []byte

var runtimeFile struct {
	once sync.Once
	path string
	err  error
}

// writeRuntime writes the embedded worker runtime into Caddy's data
// directory (named by its content hash, so upgrades never mix versions) and
// returns its path. It runs once per Caddy process.
func writeRuntime() (string, error) {
	runtimeFile.once.Do(func() {
		sum := sha256.Sum256(workerRuntime)
		dir := filepath.Join(caddy.AppDataDir(), "hearth", "runtime")
		path := filepath.Join(dir, "hearth_worker-"+hex.EncodeToString(sum[:6])+".py")
		if existing, err := os.ReadFile(path); err == nil && string(existing) == string(workerRuntime) {
			runtimeFile.path = path
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			runtimeFile.err = fmt.Errorf("writing the worker runtime: %w", err)
			return
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, workerRuntime, 0o644); err != nil {
			runtimeFile.err = fmt.Errorf("writing the worker runtime: %w", err)
			return
		}
		if err := os.Rename(tmp, path); err != nil {
			runtimeFile.err = fmt.Errorf("writing the worker runtime: %w", err)
			return
		}
		runtimeFile.path = path
	})
	return runtimeFile.path, runtimeFile.err
}
