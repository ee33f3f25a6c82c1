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

var runtimeMu sync.Mutex

// writeRuntime writes the embedded worker runtime (named by its content
// hash, so upgrades never mix versions) and returns its path: into Caddy's
// data directory, or, for workers running as another user, into a
// world-readable directory under the system's temporary directory. It is
// rewritten if something (a tmp cleaner) removed it.
func writeRuntime(shared bool) (string, error) {
	runtimeMu.Lock()
	defer runtimeMu.Unlock()
	sum := sha256.Sum256(workerRuntime)
	dir := filepath.Join(caddy.AppDataDir(), "hearth", "runtime")
	if shared {
		dir = filepath.Join(os.TempDir(), "hearth-runtime")
	}
	path := filepath.Join(dir, "hearth_worker-"+hex.EncodeToString(sum[:6])+".py")
	if existing, err := os.ReadFile(path); err == nil && string(existing) == string(workerRuntime) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("writing the worker runtime: %w", err)
	}
	if shared {
		_ = os.Chmod(dir, 0o755)
	}
	tmp, err := os.CreateTemp(dir, "hearth_worker-*.tmp")
	if err != nil {
		return "", fmt.Errorf("writing the worker runtime: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(workerRuntime); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing the worker runtime: %w", err)
	}
	tmp.Close()
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("writing the worker runtime: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("writing the worker runtime: %w", err)
	}
	return path, nil
}
