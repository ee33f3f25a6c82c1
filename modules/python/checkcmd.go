package python

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
)

func init() {
	hearth.RegisterChecker(checkConfig)
}

// checkConfig runs the pre-launch checks of every wsgi app of a JSON
// config without starting anything (for `caddy hearth check`).
func checkConfig(config []byte) ([]hearth.CheckedApp, error) {
	cfg, err := hearth.ReadConfig(config)
	if err != nil {
		return nil, err
	}
	hearth.SetAdminEndpoint(cfg.Admin.Listen, cfg.Admin.Disabled)
	var out []hearth.CheckedApp
	seen := map[string]bool{}
	for _, srv := range cfg.Apps.HTTP.Servers {
		scheme := "http"
		if len(srv.TLSPolicies) > 0 {
			scheme = "https"
		}
		for _, found := range findHandlers(srv.Routes, nil) {
			var h WSGI
			if err := json.Unmarshal(found.handler, &h); err != nil {
				return nil, fmt.Errorf("reading a wsgi handler: %w", err)
			}
			if found.kind == "asgi" {
				h.PoolConfig.kind = "asgi"
			}
			if h.Guard == nil {
				h.Guard = &GuardConfig{Mode: cfg.Apps.Hearth.Guard}
			} else if h.Guard.Mode == "" {
				h.Guard.Mode = cfg.Apps.Hearth.Guard
			}
			checked := hearth.CheckedApp{Name: h.App}
			spec, err := h.PoolConfig.resolve(h.App)
			if err != nil {
				checked.Error = err.Error()
				out = append(out, checked)
				continue
			}
			checked.Name = spec.Name
			if seen[spec.key()] {
				continue
			}
			seen[spec.key()] = true
			p := newPool(spec, zap.NewNop())
			p.site = siteOf(found.hosts, scheme, srv.Listen)
			checked.Findings, err = p.checkOnly()
			if err != nil {
				checked.Error = err.Error()
			}
			out = append(out, checked)
		}
	}
	slices.SortFunc(out, func(a, b hearth.CheckedApp) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// checkOnly runs the checks of a pool that is not started.
func (p *Pool) checkOnly() ([]hearth.CheckFinding, error) {
	if p.spec.GuardMode == GuardOff {
		return nil, nil
	}
	path, err := writeRuntime(p.spec.credential != nil)
	if err != nil {
		return nil, err
	}
	p.runtimePath = path
	if err := p.prepareAutoSettings(); err != nil {
		return nil, err
	}
	findings, err := p.collectFindings()
	if err != nil {
		return nil, err
	}
	var out []hearth.CheckFinding
	for _, f := range findings {
		severity := "warning"
		switch {
		case p.blocks(f):
			severity = "blocking"
		case f.Blocking && slices.Contains(p.spec.GuardAllow, f.ID):
			severity = "allowed"
		case f.Blocking:
			severity = "blocking (warn mode)"
		}
		out = append(out, hearth.CheckFinding{ID: f.ID, Severity: severity, Blocks: p.blocks(f), Problem: f.Problem, Fix: f.Fix})
	}
	return out, nil
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

// siteOf builds the site of hosts served by a server listening on listen.
func siteOf(hosts []string, scheme string, listen []string) hearth.Site {
	site := hearth.Site{Hosts: hosts}
	for _, h := range hosts {
		if strings.Contains(h, "*") {
			continue
		}
		for _, addr := range listen {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				continue
			}
			if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
				site.Origins = append(site.Origins, scheme+"://"+h)
			} else {
				site.Origins = append(site.Origins, scheme+"://"+net.JoinHostPort(h, port))
			}
		}
	}
	return site
}
