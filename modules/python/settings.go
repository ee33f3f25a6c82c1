package python

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
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
	key, err := storedSecretKey(p.spec.Name)
	if err != nil {
		return err
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

// storedSecretKey returns the app's secret key, generating and storing it
// on first use.
func storedSecretKey(app string) (string, error) {
	dir := filepath.Join(caddy.AppDataDir(), "hearth", "secrets")
	path := filepath.Join(dir, app+".key")
	if data, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(data))) >= 32 {
		return strings.TrimSpace(string(data)), nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("settings auto: reading the secret key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("settings auto: %w", err)
	}
	key, err := hearth.NewSecretKey()
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, app+".key.*")
	if err != nil {
		return "", fmt.Errorf("settings auto: storing the secret key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(key + "\n"); err != nil {
		tmp.Close()
		return "", fmt.Errorf("settings auto: storing the secret key: %w", err)
	}
	tmp.Close() // CreateTemp made it 0600
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another instance was first: use its key
			return storedSecretKey(app)
		}
		return "", fmt.Errorf("settings auto: storing the secret key: %w", err)
	}
	return key, nil
}

// AppHosts returns the hosts the app allows, once the pre-launch checks
// have read them (nil before, or when it allows any host): the HTTP guard
// of a site without `hosts` answers 421 to the others.
func (p *Pool) AppHosts() *guard.AppHosts { return p.appHosts.Load() }
