package python

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/safedir"
)

func init() {
	hearth.RegisterChecker(checkConfig)
}

// checkConfig runs the pre-launch checks of every wsgi app of a JSON
// config without starting anything (for `caddy hearth check`).
func checkConfig(config []byte, account string) ([]hearth.CheckedApp, error) {
	pools, err := configuredPools(config, account)
	if err != nil {
		return nil, err
	}
	var out []hearth.CheckedApp
	for _, c := range pools {
		checked := hearth.CheckedApp{Name: c.name}
		if c.err != nil {
			checked.Error = c.err.Error()
		} else {
			checked.Dir = c.app.spec.Dir
			if err := c.app.checkOnly(&checked); err != nil {
				checked.Error = err.Error()
			}
		}
		out = append(out, checked)
	}
	slices.SortFunc(out, func(a, b hearth.CheckedApp) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// configuredPool is an app of a JSON config, as a pool that is not started
// (or why its config is refused).
type configuredPool struct {
	name string
	app  *App
	err  error
}

// configuredPools reads every wsgi and asgi app of a JSON config into a
// pool that is not started, with the site that serves it, the config's
// storage and the account its code runs as here (commandCredential, with
// account from --user): what the commands that work beside a config
// (check, manage, exec) need. The storage is never released: these
// commands end soon.
func configuredPools(config []byte, account string) ([]configuredPool, error) {
	cfg, err := hearth.ReadConfig(config)
	if err != nil {
		return nil, err
	}
	hearth.SetAdminEndpoint(cfg.Admin.Listen, cfg.Admin.Disabled)
	// the config's storage, where the running apps' secret keys are
	storage, _, err := hearth.ConfigStorage(config)
	if err != nil {
		return nil, err
	}
	if files, ok := storage.(*certmagic.FileStorage); ok && !inDataDir(storage) {
		// a config an app's account can edit may name a directory of
		// theirs, with a link where a key's file goes: this process (root,
		// often) would read any file through it, or write one there. The
		// storage is used by the path checked, links resolved, and the
		// directory of the keys is checked too where it exists.
		real, err := safedir.Trusted(files.Path)
		if err == nil {
			_, err = safedir.Trusted(filepath.Join(real, "hearth", "secrets"))
		}
		if err != nil {
			return nil, fmt.Errorf("the config's storage, %s, cannot be trusted with the apps' secret keys: %w", files.Path, err)
		}
		storage = &certmagic.FileStorage{Path: real}
	}
	var out []configuredPool
	seen := map[string]bool{}
	roots := cfg.ServedRoots() // for HG-FILE-03/04, as a load has them
	var serverPorts []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, addr := range srv.Listen {
			if _, port, err := net.SplitHostPort(addr); err == nil && !slices.Contains(serverPorts, port) {
				serverPorts = append(serverPorts, port)
			}
		}
	}
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, found := range findHandlers(srv.Routes, nil) {
			var h WSGI
			if err := json.Unmarshal(found.handler, &h); err != nil {
				return nil, fmt.Errorf("reading a %s handler: %w", found.kind, err)
			}
			if found.kind == "asgi" {
				h.PoolConfig.kind = "asgi"
			}
			if h.Guard == nil {
				h.Guard = &GuardConfig{Mode: cfg.Apps.Hearth.Guard}
			} else if h.Guard.Mode == "" {
				h.Guard.Mode = cfg.Apps.Hearth.Guard
			}
			h.PoolConfig.forCommand = true
			spec, err := h.PoolConfig.resolve(h.App)
			if err != nil {
				out = append(out, configuredPool{name: h.App, err: err})
				continue
			}
			if seen[spec.key()] {
				continue
			}
			seen[spec.key()] = true
			if spec.Credential, err = commandCredential(spec, account); err != nil {
				out = append(out, configuredPool{name: spec.Name, err: err})
				continue
			}
			// the environment of the account the command runs as (--user
			// when the block names none): its env_file read with that
			// account's rights, its HOME, USER and LOGNAME
			if err := h.PoolConfig.reresolveAs(spec); err != nil {
				out = append(out, configuredPool{name: spec.Name, err: err})
				continue
			}
			a := newApp(spec, zap.NewNop(), keyForCommand)
			a.site = siteOf(found.hosts, srv, cfg.Apps.HTTP.HTTPPort)
			a.site.ServerPorts = serverPorts
			a.site.Roots = roots
			a.storage = storage
			out = append(out, configuredPool{name: spec.Name, app: a})
		}
	}
	return out, nil
}

// checkOnly runs the checks of a pool that is not started, into checked.
func (a *App) checkOnly(checked *hearth.CheckedApp) error {
	if a.spec.GuardMode == GuardOff {
		return nil
	}
	path, err := a.pool.Runtime()
	if err != nil {
		return err
	}
	a.runtimePath = path
	a.keyUse = keyForCheck // another account's code is checked with a throwaway key
	if err := a.prepareSettingsSaying(os.Stderr); err != nil {
		return err
	}
	findings, err := a.collectFindings()
	checked.Settings = a.settingsReport()
	if err != nil {
		return err
	}
	for _, f := range findings {
		severity := "warning"
		switch {
		case a.blocks(f):
			severity = "blocking"
		case f.Blocking && slices.Contains(a.spec.GuardAllow, f.ID):
			severity = "allowed"
		case f.Blocking:
			severity = "blocking (warn mode)"
		}
		checked.Findings = append(checked.Findings, hearth.CheckFinding{ID: f.ID, Severity: severity, Blocks: a.blocks(f), Problem: f.Problem, Fix: f.Fix})
	}
	return nil
}

// settingsReport is what the app's settings option set: for auto, the
// environment variables; for overlay, the settings the overlay reported
// (nil before the checks ran).
func (a *App) settingsReport() *hearth.AppSettings {
	switch a.spec.Settings {
	case SettingsAuto:
		set := map[string]any{}
		for _, kv := range a.settingsEnv {
			name, value, _ := strings.Cut(kv, "=")
			if name == "SECRET_KEY" {
				value = hearth.HiddenValue
			}
			set[name] = value
		}
		return &hearth.AppSettings{Mode: SettingsAuto, Set: set}
	case SettingsOverlay:
		a.mu.Lock()
		overlay := a.overlay
		a.mu.Unlock()
		if overlay == nil {
			return nil
		}
		return &hearth.AppSettings{Mode: SettingsOverlay, Module: overlay.Module, Set: overlay.Applied}
	}
	return nil
}

// foundHandler is a Python handler in a JSON config, with the hosts its
// routes match.
type foundHandler struct {
	kind    string
	handler json.RawMessage
	hosts   []string
}

// findHandlers lists the wsgi and asgi handlers under JSON routes.
func findHandlers(routes []json.RawMessage, hosts []string) []foundHandler {
	var out []foundHandler
	hearth.WalkHandlers(routes, hosts, func(h map[string]json.RawMessage, routeHosts []string) {
		var kind string
		_ = json.Unmarshal(h["handler"], &kind)
		if kind == "wsgi" || kind == "asgi" {
			raw, _ := json.Marshal(h)
			out = append(out, foundHandler{kind: kind, handler: raw, hosts: routeHosts})
		}
	})
	return out
}

// siteOf builds the site of hosts served by srv, each origin's scheme as
// Caddy serves it.
func siteOf(hosts []string, srv hearth.ConfigServer, httpPort int) hearth.Site {
	site := hearth.Site{Hosts: hosts}
	for _, h := range hosts {
		if strings.Contains(h, "*") {
			continue
		}
		for _, addr := range srv.Listen {
			_, portText, err := net.SplitHostPort(addr)
			if err != nil {
				continue
			}
			port, err := strconv.Atoi(portText)
			if err != nil {
				continue // a range
			}
			scheme := "http"
			if srv.ServesHTTPS(h, port, httpPort) {
				scheme = "https"
			}
			if scheme == "http" && port == 80 || scheme == "https" && port == 443 {
				site.Origins = append(site.Origins, scheme+"://"+h)
			} else {
				site.Origins = append(site.Origins, scheme+"://"+net.JoinHostPort(h, portText))
			}
		}
	}
	return site
}
