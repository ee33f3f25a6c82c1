package engine

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// runtimeFiles is the Python side of Hearth: hearth_worker.py, the program
// every worker runs, the hearth_runtime package it imports, and the
// settings overlay.
//
//go:embed runtime/*.py runtime/hearth_runtime/*.py
var runtimeFiles embed.FS

// runtimeVersion names the directory the runtime is written to: the
// content hash of every file of it, so two versions of Hearth never mix
// files, and a file that differs from this binary's is noticed.
var runtimeVersion = func() string {
	h := sha256.New()
	for _, name := range runtimeFileNames() {
		data, _ := runtimeFiles.ReadFile(name)
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}()

// runtimeFileNames lists the embedded runtime's files, sorted, as paths
// under runtime/.
func runtimeFileNames() []string {
	var names []string
	fs.WalkDir(runtimeFiles, "runtime", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, path)
		}
		return nil
	})
	return names
}

// settingsOverlay is the Django settings module of `settings overlay`,
// written beside the worker runtime as OverlayModule.
var settingsOverlay = func() []byte {
	data, _ := runtimeFiles.ReadFile("runtime/hearth_overlay.py")
	return data
}()

// OverlayModule is the module name of the settings overlay (written
// beside the runtime's program): the project's directory comes first on a
// worker's sys.path, so the name carries the overlay's hash, which no
// project's module has.
var OverlayModule = func() string {
	sum := sha256.Sum256(settingsOverlay)
	return "hearth_overlay_" + hex.EncodeToString(sum[:6])
}()

var runtimeMu sync.Mutex

// Runtime makes sure the embedded runtime is in place and returns the
// path of its program, hearth_worker.py. The runtime's files go to a
// directory named by runtimeVersion, in a root that is Caddy's, created
// with a known mode and checked (owner, mode, no symbolic link, safe
// parents) before every use, as is each directory below it; a file that
// is missing or differs is replaced through a temporary file: Python puts
// the program's directory first on sys.path, so anything another user
// could put there would run as the app. Workers of Caddy's own user use
// Options.RuntimeDir (hearth/runtime in Caddy's data directory, mode
// 0700); workers running as another user, who cannot read that, use
// hearth-runtime-<Caddy's uid> in the system's temporary directory (mode
// 0755, files 0644). A directory there that someone else made is never
// used: the runtime goes to a directory of Caddy's beside it (one it made
// afresh, or made so before: owned by Caddy's account, which no one else
// can make), and the log says so (another local account could otherwise
// keep every app of another account from starting). Without
// Options.RuntimeDir (a command run as root beside a data directory of
// another account's, whose files root's own workers must not import),
// Caddy's own user's workers use the shared one too.
func (p *Pool) Runtime() (string, error) {
	runtimeMu.Lock()
	defer runtimeMu.Unlock()
	if p.opts.Credential != nil || p.opts.RuntimeDir == "" {
		return sharedRuntime(p.logger)
	}
	return installRuntime(p.opts.RuntimeDir, 0o700, 0o600)
}

// sharedRoot is the directory of Caddy's the shared runtime went to when
// its usual one was someone else's ("" while the usual one serves);
// runtimeMu guards it.
var sharedRoot string

// sharedRuntime installs the runtime for workers of other accounts (mode
// 0755, files 0644) and returns the path of its program: in
// hearth-runtime-<Caddy's uid> in the temporary directory, or, when that
// is someone else's, in hearth-runtime-<uid>-<n> beside it: the one it
// went to before, or one an earlier Caddy made (safedir proves it Caddy's:
// its name proves nothing), or a new one (MkdirTemp: an exclusive mkdir).
// A temporary directory that is itself unsafe refuses them all, with the
// fix.
func sharedRuntime(logger *zap.Logger) (string, error) {
	tmp := filepath.Clean(os.TempDir())
	named := filepath.Join(tmp, fmt.Sprintf("hearth-runtime-%d", os.Geteuid()))
	path, err := installRuntime(named, 0o755, 0o644)
	if err == nil {
		sharedRoot = ""
		return path, nil
	}
	candidates, _ := filepath.Glob(named + "-*")
	if sharedRoot != "" && filepath.Dir(sharedRoot) == tmp {
		candidates = append([]string{sharedRoot}, candidates...)
	}
	for _, dir := range candidates {
		if p, cerr := installRuntime(dir, 0o755, 0o644); cerr == nil {
			if dir != sharedRoot {
				logger.Warn("the worker runtime's usual directory cannot be used; it went to a directory of Caddy's beside it",
					zap.String("dir", dir), zap.String("usual", named), zap.String("why", err.Error()))
			}
			sharedRoot = dir
			return p, nil
		}
	}
	dir, terr := os.MkdirTemp(tmp, filepath.Base(named)+"-")
	if terr == nil {
		if path, terr = installRuntime(dir, 0o755, 0o644); terr != nil {
			_ = os.RemoveAll(dir)
		}
	}
	if terr != nil {
		return "", fmt.Errorf("%w; and a directory of Caddy's beside it could not be made either: %v", err, terr)
	}
	sharedRoot = dir
	logger.Warn("the worker runtime's usual directory cannot be used; it went to a new directory of Caddy's beside it",
		zap.String("dir", dir), zap.String("usual", named), zap.String("why", err.Error()))
	return path, nil
}

// installRuntime writes the runtime's files into root/runtimeVersion and
// returns the path of hearth_worker.py there.
func installRuntime(root string, dirMode, fileMode fs.FileMode) (string, error) {
	root, err := safedir.Ensure(root, dirMode)
	if err != nil {
		return "", fmt.Errorf("the worker runtime's directory: %w", err)
	}
	dirs := map[string]string{} // under runtime/ → its checked directory
	for _, name := range runtimeFileNames() {
		rel := strings.TrimPrefix(filepath.Dir(name), "runtime")
		dir, ok := dirs[rel]
		if !ok {
			if dir, err = safedir.Ensure(filepath.Join(root, runtimeVersion, rel), dirMode); err != nil {
				return "", fmt.Errorf("the worker runtime's directory: %w", err)
			}
			dirs[rel] = dir
		}
		data, _ := runtimeFiles.ReadFile(name)
		base := filepath.Base(name)
		if name == "runtime/hearth_overlay.py" {
			base = OverlayModule + ".py"
		}
		if err := safedir.WriteFile(dir, base, data, fileMode); err != nil {
			return "", fmt.Errorf("writing the worker runtime: %w", err)
		}
	}
	return filepath.Join(dirs[""], "hearth_worker.py"), nil
}

// startRuntime starts a process of the worker runtime, checking the
// runtime's directory and file again first: between two starts a tmp
// cleaner may have removed them, and someone else made the directory anew.
func (p *Pool) startRuntime(cmd supervisor.Command, logger *zap.Logger) (*supervisor.Process, error) {
	path, err := p.Runtime()
	if err != nil {
		return nil, err
	}
	cmd.Args = append([]string{path}, cmd.Args...)
	return supervisor.Start(cmd, logger)
}
