package hearth

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/hearth-dev/hearth/modules/job"
)

// ConfigServer is an HTTP server of a JSON config, as the commands that
// read a config without loading it (check, ports, systemd) see it.
type ConfigServer struct {
	Listen []string          `json:"listen"`
	Routes []json.RawMessage `json:"routes"`
	Errors struct {
		Routes []json.RawMessage `json:"routes"`
	} `json:"errors"`
	NamedRoutes map[string]json.RawMessage `json:"named_routes"`
	TLSPolicies []json.RawMessage          `json:"tls_connection_policies"`
	AutoHTTPS   struct {
		Disable          bool     `json:"disable"`
		DisableRedirects bool     `json:"disable_redirects"`
		Skip             []string `json:"skip"`
	} `json:"automatic_https"`
}

// ServesHTTPS reports whether the server serves host on port over HTTPS,
// as Caddy decides it: it has TLS connection policies, or automatic HTTPS
// applies (not disabled, host not skipped, port not the HTTP port
// httpPort, 80 when 0, and host qualifies for a certificate, from a public
// CA or Caddy's internal one).
func (srv ConfigServer) ServesHTTPS(host string, port, httpPort int) bool {
	if len(srv.TLSPolicies) > 0 {
		return true
	}
	if httpPort == 0 {
		httpPort = 80
	}
	return !srv.AutoHTTPS.Disable && !slices.Contains(srv.AutoHTTPS.Skip, host) && port != httpPort &&
		host != "" && certmagic.SubjectQualifiesForCert(host)
}

// ServedRoots lists the directories file_server may serve on any server
// of the config (relative roots taken from this process's working
// directory), as Caddy's loaded config would have them (servedroots.go).
func (cfg *ConfigFile) ServedRoots() []string {
	var roots []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, root := range srv.ServedRoots() {
			if !slices.Contains(roots, root) {
				roots = append(roots, root)
			}
		}
	}
	return roots
}

// ServedRoots lists the directories file_server may serve on the server.
func (srv ConfigServer) ServedRoots() []string {
	var later [][]staticRoute
	if len(srv.Errors.Routes) > 0 {
		later = append(later, configRoutes(srv.Errors.Routes))
	}
	for _, r := range srv.NamedRoutes {
		later = append(later, configRoutes([]json.RawMessage{r}))
	}
	return servedRootsOf(configRoutes(srv.Routes), later...)
}

// ConfigFile is the part of a JSON config those commands read.
type ConfigFile struct {
	Admin struct {
		Disabled bool   `json:"disabled"`
		Listen   string `json:"listen"`
	} `json:"admin"`
	Apps struct {
		HTTP struct {
			Servers  map[string]ConfigServer `json:"servers"`
			HTTPPort int                     `json:"http_port"`
		} `json:"http"`
		Hearth struct {
			Guard string `json:"guard"`
			// MaxProcesses is App.MaxProcesses
			MaxProcesses string `json:"max_processes"`
			// where backups, services and jobs of their own write
			Backups  []job.BackupConfig `json:"backups"`
			Services []struct {
				Name        string         `json:"name"`
				Dir         string         `json:"dir"`
				User        string         `json:"user"`
				StopTimeout caddy.Duration `json:"stop_timeout"`
			} `json:"services"`
			Jobs []struct {
				Name string `json:"name"`
				Dir  string `json:"dir"`
				User string `json:"user"`
			} `json:"jobs"`
		} `json:"hearth"`
		DDNS *struct {
			Provider struct {
				Name string `json:"name"`
			} `json:"provider"`
			Domains      map[string][]string `json:"domains"`
			DNSChallenge string              `json:"dns_challenge"`
		} `json:"ddns"`
	} `json:"apps"`
}

// ConfigStorage provisions the storage module a JSON config names (its
// top-level "storage"), for the commands that work beside a config and must
// read what the running Caddy keeps there (the apps' secret keys). It
// returns nil for a config without one (Caddy's default: files in this
// machine's data directory) and a function that releases the module.
func ConfigStorage(config []byte) (certmagic.Storage, func(), error) {
	var cfg struct {
		StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, nil, fmt.Errorf("reading the config: %w", err)
	}
	if len(cfg.StorageRaw) == 0 {
		return nil, func() {}, nil
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	val, err := ctx.LoadModule(&cfg, "StorageRaw")
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("loading the config's storage module: %w", err)
	}
	storage, err := val.(caddy.StorageConverter).CertMagicStorage()
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("opening the config's storage: %w", err)
	}
	return storage, cancel, nil
}

// ReadConfig decodes a JSON config.
func ReadConfig(data []byte) (*ConfigFile, error) {
	var cfg ConfigFile
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	return &cfg, nil
}

// WalkHandlers calls fn for every handler object under JSON routes
// (subroutes included), with the host names the routes leading to it match.
func WalkHandlers(routes []json.RawMessage, hosts []string, fn func(handler map[string]json.RawMessage, hosts []string)) {
	for _, raw := range routes {
		var route struct {
			Match  []map[string]json.RawMessage `json:"match"`
			Handle []map[string]json.RawMessage `json:"handle"`
		}
		if json.Unmarshal(raw, &route) != nil {
			continue
		}
		routeHosts := hosts
		for _, m := range route.Match {
			var hs []string
			if json.Unmarshal(m["host"], &hs) == nil {
				routeHosts = append(slices.Clone(routeHosts), hs...)
			}
		}
		for _, h := range route.Handle {
			var kind string
			_ = json.Unmarshal(h["handler"], &kind)
			if kind == "subroute" {
				var sub []json.RawMessage
				_ = json.Unmarshal(h["routes"], &sub)
				WalkHandlers(sub, routeHosts, fn)
				continue
			}
			fn(h, routeHosts)
		}
	}
}
