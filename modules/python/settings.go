package python

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// SetSite records where the pool is served (hearth.SiteAware).
func (p *Pool) SetSite(site hearth.Site) {
	p.mu.Lock()
	p.site = site
	p.mu.Unlock()
	mounts := slices.Clone(site.Mounts)
	p.mounts.Store(&mounts)
}

// Mounts are the path prefixes the config strips before the pool's
// handlers: the values SCRIPT_NAME may take.
func (p *Pool) Mounts() []string {
	if m := p.mounts.Load(); m != nil {
		return *m
	}
	return nil
}

// prepareAutoSettings computes the environment of `settings auto`:
// SECRET_KEY (generated once, stored 0600 in Caddy's data directory),
// DEBUG=False, and ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS from the site's
// addresses. Variables the app's env or env_file set explicitly win.
func (p *Pool) prepareAutoSettings() error {
	if p.spec.Settings != "auto" {
		return nil
	}
	p.mu.Lock()
	storage := p.storage
	p.mu.Unlock()
	key, migrated, err := secretKey(p.ctx, storage, p.spec.Name, p.spec.Dir)
	if err != nil {
		return err
	}
	if migrated {
		p.logger.Info("settings auto: the secret key stored under the app's name alone is now this app's (name and directory)", zap.String("dir", p.spec.Dir))
	}
	p.mu.Lock()
	site := p.site
	p.mu.Unlock()
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
	values := map[string]string{
		"SECRET_KEY":           key,
		"DEBUG":                "False",
		"ALLOWED_HOSTS":        strings.Join(hosts, ","),
		"CSRF_TRUSTED_ORIGINS": strings.Join(site.Origins, ","),
	}
	if !slices.Contains(p.spec.Explicit, "ALLOWED_HOSTS") {
		p.autoHosts = hosts
	}
	var env []string
	for _, name := range []string{"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} {
		if !slices.Contains(p.spec.Explicit, name) {
			env = append(env, name+"="+values[name])
		}
	}
	p.autoEnv = env
	return nil
}

// SetStorage gives the pool the config's storage (hearth.StorageAware),
// where `settings auto` keeps the app's secret key.
func (p *Pool) SetStorage(storage certmagic.Storage) {
	p.mu.Lock()
	p.storage = storage
	p.mu.Unlock()
}

// secretKey returns the app's secret key from Caddy's storage. With the
// default storage (files in Caddy's data directory on this machine) that
// is storedSecretKey, which also checks the directory. With another
// storage (a shared file system, Redis, Consul, S3…) every instance that
// shares it gets the same key: generated once under the storage's lock,
// or moved there from this machine's files where an earlier run kept it
// (never generated anew).
func secretKey(ctx context.Context, storage certmagic.Storage, name, appDir string) (string, bool, error) {
	if fsStorage, ok := storage.(*certmagic.FileStorage); storage == nil || ok && filepath.Clean(fsStorage.Path) == filepath.Clean(caddy.AppDataDir()) {
		return storedSecretKey(name, appDir)
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
func storedSecretKey(name, appDir string) (key string, migrated bool, err error) {
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

// AppHosts returns the hosts the app allows, once the pre-launch checks
// have read them (nil before, or when it allows any host): the HTTP guard
// of a site without `hosts` answers 421 to the others.
func (p *Pool) AppHosts() *guard.AppHosts { return p.appHosts.Load() }
