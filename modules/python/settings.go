package python

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/regularfile"
	"github.com/hearth-dev/hearth/modules/python/engine"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// The values of `settings`.
const (
	// SettingsAuto gives the app its production settings as environment
	// variables (SECRET_KEY, DEBUG, ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS)
	// for a settings.py that reads them.
	SettingsAuto = "auto"
	// SettingsOverlay (Django) loads the project's own settings module and
	// sets the production settings over it, without any edit to it.
	SettingsOverlay = "overlay"
)

// prepareSettings computes what `settings auto` or `settings overlay`
// gives the app: the secret key (generated once, kept in Caddy's storage),
// DEBUG off, the allowed hosts and trusted origins of the sites serving it
// and, for the overlay, STATIC_ROOT when the project has none and the
// secure cookies and HSTS of an HTTPS site. What env or env_file set
// explicitly wins.
func (a *App) prepareSettings() error {
	if a.spec.Settings != SettingsAuto && a.spec.Settings != SettingsOverlay {
		return nil
	}
	key, explicitKey := envValue(a.spec.Env, "SECRET_KEY")
	if !explicitKey || a.keyUse == keyForApp && a.spec.Settings == SettingsAuto {
		var stored string
		var migrated bool
		account := a.keyAccount()                               // (before a command takes the data directory owner's ids)
		err := asDataDirOwner(a.keysOwner, func() (err error) { // (nil but for a command as root beside Caddy's unit)
			stored, migrated, err = a.storedKey(account)
			return err
		})
		var notYours *errKeyNotYours
		switch {
		case a.keyUse == keyForCheck && errors.As(err, &notYours):
			// a check of a block whose code runs as another account than
			// the key's: any key will do to check
			a.throwawayWhy = err
			if stored, err = hearth.NewSecretKey(); err != nil {
				return err
			}
		case err != nil:
			return err
		case migrated:
			a.logger.Info("settings: the secret key stored under the app's name alone is now this app's (name and directory)", zap.String("dir", a.spec.Dir))
		}
		if !explicitKey {
			key = stored
		}
	}
	a.mu.Lock()
	site := a.site
	a.mu.Unlock()
	hosts := make([]string, 0, len(site.Hosts))
	for _, h := range site.Hosts {
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			h = "." + rest // Django's spelling of a subdomain wildcard
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 { // a port-only site: this machine's own names
		hosts = []string{"localhost", "127.0.0.1", "[::1]"}
	}
	if !slices.Contains(a.spec.Explicit, "ALLOWED_HOSTS") {
		a.autoHosts = hosts
	}
	if a.spec.Settings == SettingsOverlay {
		env, err := a.overlayEnv(key, hosts, site)
		if err != nil {
			return err
		}
		a.settingsEnv = env
		return nil
	}
	values := map[string]string{
		"SECRET_KEY":           key,
		"DEBUG":                "False",
		"ALLOWED_HOSTS":        strings.Join(hosts, ","),
		"CSRF_TRUSTED_ORIGINS": strings.Join(site.Origins, ","),
	}
	var env []string
	for _, name := range []string{"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} {
		if !slices.Contains(a.spec.Explicit, name) {
			env = append(env, name+"="+values[name])
		}
	}
	a.settingsEnv = env
	return nil
}

// overlayEnv is the environment of `settings overlay`: Django's settings
// module is Hearth's overlay (beside the runtime, first on PYTHONPATH),
// which imports the project's module and sets the JSON of
// HEARTH_SETTINGS_OVERLAY over it. Values of env and env_file win: they
// are parsed as settings.py would (a comma-separated list of hosts, a
// boolean DEBUG).
func (a *App) overlayEnv(key string, hosts []string, site hearth.Site) ([]string, error) {
	project, err := projectSettingsModule(a.spec)
	if err != nil {
		return nil, err
	}
	set := map[string]any{"DEBUG": false, "ALLOWED_HOSTS": hosts, "CSRF_TRUSTED_ORIGINS": site.Origins}
	if site.Origins == nil {
		set["CSRF_TRUSTED_ORIGINS"] = []string{}
	}
	unset := map[string]any{"STATIC_ROOT": filepath.Join(a.spec.Dir, "staticfiles")}
	if servesHTTPS(site) {
		set["SESSION_COOKIE_SECURE"] = true
		set["CSRF_COOKIE_SECURE"] = true
		if a.spec.HSTSMaxAge > 0 {
			set["SECURE_HSTS_SECONDS"] = a.spec.HSTSMaxAge
		}
	}
	if v, ok := envValue(a.spec.Env, "DEBUG"); ok {
		set["DEBUG"] = truthy(v)
	}
	for _, name := range []string{"ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} {
		if v, ok := envValue(a.spec.Env, name); ok {
			set[name] = splitList(v)
		}
	}
	if v, ok := envValue(a.spec.Env, "STATIC_ROOT"); ok {
		delete(unset, "STATIC_ROOT")
		set["STATIC_ROOT"] = v
	}
	overlay, err := json.Marshal(map[string]any{"set": set, "unset": unset})
	if err != nil {
		return nil, err
	}
	runtimeDir := filepath.Dir(a.runtimePath)
	pythonPath := runtimeDir
	if v, ok := envValue(a.spec.Env, "PYTHONPATH"); ok && v != "" {
		pythonPath += string(os.PathListSeparator) + v
	}
	return []string{
		"DJANGO_SETTINGS_MODULE=" + engine.OverlayModule,
		"HEARTH_PROJECT_SETTINGS=" + project,
		"HEARTH_SETTINGS_OVERLAY=" + string(overlay),
		// the key in a variable of its own, whose name Django's debug
		// pages hide (they hide names with KEY or SECRET: a dev server's
		// request.META holds the environment)
		"HEARTH_SECRET_KEY=" + key,
		"PYTHONPATH=" + pythonPath,
	}, nil
}

// appEnv is the app's environment: the spec's, with what `settings` sets
// replacing variables of the same name.
func (a *App) appEnv() []string {
	env := make([]string, 0, len(a.spec.Env)+len(a.settingsEnv))
	for _, kv := range a.spec.Env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(a.settingsEnv, func(s string) bool { return strings.HasPrefix(s, name+"=") }) {
			env = append(env, kv)
		}
	}
	return append(env, a.settingsEnv...)
}

// envValue is the value of name in env (KEY=value entries; the last wins).
func envValue(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// truthy reads a boolean as a settings.py commonly does.
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// splitList reads a comma-separated list, dropping empty items.
func splitList(v string) []string {
	out := []string{}
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// pythonModule matches a dotted Python module name.
var pythonModule = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// settingsModuleDefault finds the DJANGO_SETTINGS_MODULE a project file
// (wsgi.py, asgi.py, manage.py) sets by default.
var settingsModuleDefault = regexp.MustCompile(`DJANGO_SETTINGS_MODULE["']\s*,\s*["']([A-Za-z0-9_.]+)["']`)

// projectSettingsModule is the Django settings module the overlay loads:
// the one `settings overlay <module>` names; else DJANGO_SETTINGS_MODULE
// from env or env_file; else the default the app's module sets (as
// startproject's wsgi.py and asgi.py do); else <package>.settings.
func projectSettingsModule(spec *poolSpec) (string, error) {
	module := spec.SettingsModule
	if module == "" {
		module, _ = envValue(spec.Env, "DJANGO_SETTINGS_MODULE")
	}
	if module == "" {
		appModule, _, _ := strings.Cut(spec.App, ":")
		base := filepath.Join(append([]string{spec.Dir}, strings.Split(appModule, ".")...)...)
		for _, file := range []string{base + ".py", filepath.Join(base, "__init__.py")} {
			if m := settingsModuleDefault.FindSubmatch(readHead(file, 64<<10)); m != nil {
				module = string(m[1])
				break
			}
		}
	}
	if module == "" {
		appModule, _, _ := strings.Cut(spec.App, ":")
		pkg, _, _ := strings.Cut(appModule, ".")
		module = pkg + ".settings"
	}
	if !pythonModule.MatchString(module) || module == engine.OverlayModule {
		return "", fmt.Errorf("settings overlay: %q is not a Python module name; name the project's settings module, like `settings overlay mysite.settings`", module)
	}
	return module, nil
}

// readHead returns up to limit bytes of the regular file at path (nil if
// it cannot be read or is not a regular file). A device is never opened:
// the path is in an app's directory, and its account could make
// `mysite/wsgi/__init__.py` a link to its own terminal, which Caddy,
// started by systemd without one, took as its controlling terminal (a
// Ctrl-C typed there stopped Caddy), or to a watchdog device.
func readHead(path string, limit int64) []byte {
	f, err := regularfile.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, limit))
	return b
}

// inDataDir reports whether storage is Caddy's default: files in this
// machine's data directory, where storedSecretKey keeps the keys.
func inDataDir(storage certmagic.Storage) bool {
	fsStorage, ok := storage.(*certmagic.FileStorage)
	return storage == nil || ok && filepath.Clean(fsStorage.Path) == filepath.Clean(caddy.AppDataDir())
}

// secretKeyExists reports where the app's key of `settings` is kept and
// whether it is there yet.
func (a *App) secretKeyExists() (string, bool) {
	a.mu.Lock()
	storage := a.storage
	a.mu.Unlock()
	name := keyFileName(a.spec.Name, a.spec.Dir)
	if inDataDir(storage) {
		path := filepath.Join(caddy.AppDataDir(), "hearth", "secrets", name)
		_, err := os.Lstat(path)
		return path, err == nil
	}
	key := path.Join("hearth", "secrets", name)
	return key + " in the config's storage", storage.Exists(a.pool.Context(), key)
}

// secretKey returns the app's secret key from Caddy's storage. With the
// default storage (files in Caddy's data directory on this machine) that
// is storedSecretKey, which also checks the directory. With another
// storage (a shared file system, Redis, Consul, S3…) every instance that
// shares it gets the same key: generated once under the storage's lock,
// or moved there from this machine's files where an earlier run kept it
// (never generated anew).
//
// Only Caddy moves a key (mayMove): a command beside a config that an app's
// account may have written must not carry another app's key from this
// machine's data directory into a storage that config names.
func secretKey(ctx context.Context, storage certmagic.Storage, name, appDir string, mayMove bool) (string, bool, error) {
	if inDataDir(storage) {
		return storedSecretKey(name, appDir, mayMove)
	}
	storeKey := path.Join("hearth", "secrets", keyFileName(name, appDir))
	if err := storage.Lock(ctx, storeKey); err != nil {
		return "", false, fmt.Errorf("settings auto: locking the secret key in Caddy's storage (%s): %w", storeKey, err)
	}
	defer func() { _ = storage.Unlock(context.WithoutCancel(ctx), storeKey) }()
	data, err := storage.Load(ctx, storeKey)
	if err == nil {
		if key := strings.TrimSpace(string(data)); len(key) >= 32 {
			return key, false, nil
		}
		return "", false, fmt.Errorf("settings auto: %s in Caddy's storage holds no usable secret key (fewer than 32 characters); delete it and Hearth generates a new one", storeKey)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("settings auto: reading the secret key from Caddy's storage: %w", err)
	}
	key, local, err := localSecretKey(name, appDir)
	if err != nil {
		return "", false, err
	}
	if key != "" && !mayMove {
		return "", false, errNotMoved(name)
	}
	if key == "" {
		if key, err = hearth.NewSecretKey(); err != nil {
			return "", false, err
		}
	}
	if err := storage.Store(ctx, storeKey, []byte(key+"\n")); err != nil {
		return "", false, fmt.Errorf("settings auto: storing the secret key in Caddy's storage: %w", err)
	}
	for _, f := range local {
		_ = os.Remove(f) // now in the storage: one copy of the secret
	}
	return key, len(local) > 0, nil
}

// errNotMoved is why a command does not take a key from where an earlier
// version or run kept it (see secretKey).
func errNotMoved(name string) error {
	return fmt.Errorf("settings: app %s's secret key is still where an earlier version or run of Hearth kept it; restart Caddy with this config, which moves it, then run this again", name)
}

// localSecretKey reads the key an earlier run kept in this machine's data
// directory for the app, without creating anything; files are the files
// it was read from ("" and none when there is none).
func localSecretKey(name, appDir string) (key string, files []string, err error) {
	dir := filepath.Join(caddy.AppDataDir(), "hearth", "secrets")
	candidates := []string{filepath.Join(dir, keyFileName(name, appDir))}
	if legacy := legacyKeyFile(dir, name); legacy != "" {
		candidates = append(candidates, legacy)
	}
	for _, f := range candidates {
		data, err := safedir.ReadFile(f, 0o600, 4096)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("settings auto: the secret key an earlier run kept: %w", err)
		}
		if k := strings.TrimSpace(string(data)); len(k) >= 32 && key == "" {
			key = k
			files = append(files, f)
		}
	}
	return key, files, nil
}

// storedSecretKey returns the secret key of the app named name in
// directory appDir, generating and storing it on first use. Keys live in
// hearth/secrets in Caddy's data directory (mode 0700, checked before every
// use like the runtime's directory), one file (mode 0600) per app identity,
// name plus directory: <name>-<12 hex digits of a hash of both>.key, so
// two apps that happen to share a name never share a key. A key stored
// by earlier versions under the name alone (<name>.key) is moved to the
// first app of that name that starts: a config never holds two apps of one
// name in different directories (Provision refuses it), so that is the app
// the key was made for. migrated reports that move.
func storedSecretKey(name, appDir string, mayMove bool) (key string, migrated bool, err error) {
	dir, err := safedir.Ensure(filepath.Join(caddy.AppDataDir(), "hearth", "secrets"), 0o700)
	if err != nil {
		return "", false, fmt.Errorf("settings auto: %w", err)
	}
	path := filepath.Join(dir, keyFileName(name, appDir))
	for attempt := 0; attempt < 3; attempt++ {
		data, err := safedir.ReadFile(path, 0o600, 4096)
		if err == nil {
			if key := strings.TrimSpace(string(data)); len(key) >= 32 {
				return key, migrated, nil
			}
			return "", false, fmt.Errorf("settings auto: %s holds no usable secret key (fewer than 32 characters); remove it and Hearth generates a new one", path)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", false, fmt.Errorf("settings auto: reading the secret key: %w", err)
		}
		if legacy := legacyKeyFile(dir, name); legacy != "" {
			_, err := safedir.ReadFile(legacy, 0o600, 4096)
			if err == nil && !mayMove {
				return "", false, errNotMoved(name)
			}
			if err == nil {
				if err := os.Link(legacy, path); err != nil && !errors.Is(err, fs.ErrExist) {
					return "", false, fmt.Errorf("settings auto: moving the secret key %s to %s: %w", legacy, path, err)
				}
				_ = os.Remove(legacy)
				migrated = true
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", false, fmt.Errorf("settings auto: the secret key stored by an earlier version: %w", err)
			}
		}
		key, err := hearth.NewSecretKey()
		if err != nil {
			return "", false, err
		}
		tmp, err := os.CreateTemp(dir, ".new-key.*") // O_EXCL, mode 0600
		if err != nil {
			return "", false, fmt.Errorf("settings auto: storing the secret key: %w", err)
		}
		_, err = tmp.WriteString(key + "\n")
		tmp.Close()
		if err == nil {
			err = os.Link(tmp.Name(), path) // fails if another start was first: then use its key
		}
		os.Remove(tmp.Name())
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return "", false, fmt.Errorf("settings auto: storing the secret key: %w", err)
		}
	}
	return "", false, fmt.Errorf("settings auto: %s keeps changing while Hearth reads it", path)
}

// keyFileName is the file of an app identity's key: the name, made safe
// for a file name, then a hash of name and directory.
func keyFileName(name, appDir string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + appDir))
	return safeFileName(name) + "-" + hex.EncodeToString(sum[:6]) + ".key"
}

// legacyKeyFile is where earlier versions kept the key of the app name
// (by name alone), or "" when that name could not have been a file there.
func legacyKeyFile(dir, name string) string {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return ""
	}
	return filepath.Join(dir, name+".key")
}

// safeFileName keeps letters, digits, '.', '_' and '-' of name (at most
// 64), replacing the rest with '_'.
func safeFileName(name string) string {
	b := []byte(name)
	if len(b) > 64 {
		b = b[:64]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return strings.TrimLeft(string(b), ".")
}
