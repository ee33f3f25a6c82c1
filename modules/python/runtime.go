package python

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// workerRuntime is the Python side of Hearth: the program every worker runs.
//
//go:embed runtime/hearth_worker.py
var workerRuntime []byte

// settingsOverlay is the Django settings module of `settings overlay`,
// written beside the worker runtime as overlayModule.
//
//go:embed runtime/hearth_overlay.py
var settingsOverlay []byte

// overlayModule is the module name of settingsOverlay: named by its content
// hash like the runtime, and a valid Python identifier (the runtime's own
// file name, with a hyphen, cannot be imported from the directory).
var overlayModule = func() string {
	sum := sha256.Sum256(settingsOverlay)
	return "hearth_overlay_" + hex.EncodeToString(sum[:6])
}()

var runtimeMu sync.Mutex

// writeRuntime makes sure the embedded worker runtime and the settings
// overlay (named by their content hash, so upgrades never mix versions)
// are in place and returns the runtime's path. Its directory is Caddy's, created with a known mode and
// checked (owner, mode, no symbolic link, safe parents) before every use,
// and a file that is missing or differs is replaced through a temporary
// file: Python puts the runtime's directory first on sys.path, so anything
// another user could put there would run as the app. Workers of Caddy's
// own user use hearth/runtime in Caddy's data directory (mode 0700);
// workers running as another user, who cannot read that, use
// hearth-runtime-<Caddy's uid> in the system's temporary directory
// (mode 0755, the file 0644). A directory there that someone else made is
// refused with the fix.
func writeRuntime(shared bool) (string, error) {
	runtimeMu.Lock()
	defer runtimeMu.Unlock()
	sum := sha256.Sum256(workerRuntime)
	dir, dirMode, fileMode := filepath.Join(caddy.AppDataDir(), "hearth", "runtime"), fs.FileMode(0o700), fs.FileMode(0o600)
	if shared {
		dir, dirMode, fileMode = filepath.Join(os.TempDir(), fmt.Sprintf("hearth-runtime-%d", os.Geteuid())), 0o755, 0o644
	}
	dir, err := safedir.Ensure(dir, dirMode)
	if err != nil {
		return "", fmt.Errorf("the worker runtime's directory: %w", err)
	}
	name := "hearth_worker-" + hex.EncodeToString(sum[:6]) + ".py"
	if err := safedir.WriteFile(dir, name, workerRuntime, fileMode); err != nil {
		return "", fmt.Errorf("writing the worker runtime: %w", err)
	}
	if err := safedir.WriteFile(dir, overlayModule+".py", settingsOverlay, fileMode); err != nil {
		return "", fmt.Errorf("writing the settings overlay: %w", err)
	}
	return filepath.Join(dir, name), nil
}

// startRuntime starts a process of the worker runtime, checking the
// runtime's directory and file again first: between two starts a tmp
// cleaner may have removed them, and someone else made the directory anew.
func (p *Pool) startRuntime(cmd supervisor.Command, logger *zap.Logger) (*supervisor.Process, error) {
	path, err := writeRuntime(p.spec.credential != nil)
	if err != nil {
		return nil, err
	}
	if len(cmd.Args) > 0 && cmd.Args[0] == p.runtimePath {
		cmd.Args = append([]string{path}, cmd.Args[1:]...)
	}
	return supervisor.Start(cmd, logger)
}
