package hearth

import (
	"net"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
)

// Site describes where a pool is served: the host names of the routes that
// lead to its handlers, and the origins (scheme://host[:port]) clients use.
type Site struct {
	Hosts   []string
	Origins []string
	// Roots are the directories file_server may serve on any server of
	// the config (servedroots.go).
	Roots []string
	// ServerPorts are the ports every HTTP server of the config listens on.
	ServerPorts []string
	// Mounts are the path prefixes that rewrites (handle_path, uri
	// strip_prefix) strip on the servers that lead to the pool: the only
	// values SCRIPT_NAME may take.
	Mounts []string
}

// PoolHandler is an HTTP handler that serves requests from a pool.
type PoolHandler interface {
	PoolKey() string
}

// SiteAware pools are told where they are served before they start (a
// pool a reload keeps is told too, and told again what it had when that
// config is refused: Site is what it was told last).
type SiteAware interface {
	SetSite(Site)
	Site() Site
}

// SettingsFromSite pools made settings from their site when they started
// (`settings auto` or `overlay`: ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS),
// which a reload that keeps them running does not make again.
type SettingsFromSite interface {
	SettingsFromSite() bool
}

// StorageAware pools are given the config's storage (Caddy's `storage`,
// files in its data directory by default) before they start: state that
// instances sharing a storage must share lives there. Storage is what it
// was given last.
type StorageAware interface {
	SetStorage(certmagic.Storage)
	Storage() certmagic.Storage
}

// discoverSites walks the HTTP app's routes and returns, per pool key, the
// hosts and origins of the sites whose routes lead to it.
func discoverSites(app *caddyhttp.App) map[string]*Site {
	sites := map[string]*Site{}
	if app == nil {
		return sites
	}
	var allPorts []string
	for _, srv := range app.Servers {
		for _, addr := range srv.Listen {
			if i := strings.LastIndexByte(addr, ':'); i >= 0 {
				allPorts = append(allPorts, addr[i+1:])
			}
		}
	}
	// what any server serves can be downloaded, whichever serves the app
	roots := allServedRoots(app)
	defer func() {
		for _, site := range sites {
			site.ServerPorts = allPorts
			site.Roots = roots
		}
	}()
	for _, srv := range app.Servers {
		scheme := "http"
		if len(srv.TLSConnPolicies) > 0 {
			scheme = "https"
		}
		var ports []string
		for _, addr := range srv.Listen {
			if i := strings.LastIndexByte(addr, ':'); i >= 0 {
				ports = append(ports, addr[i+1:])
			}
		}
		mounts := strippedPrefixes(srv.Routes)
		walkRoutes(srv.Routes, nil, func(key string, hosts []string) {
			site := sites[key]
			if site == nil {
				site = &Site{}
				sites[key] = site
			}
			for _, m := range mounts {
				if !slices.Contains(site.Mounts, m) {
					site.Mounts = append(site.Mounts, m)
				}
			}
			for _, h := range hosts {
				if !slices.Contains(site.Hosts, h) {
					site.Hosts = append(site.Hosts, h)
				}
				if strings.Contains(h, "*") {
					continue
				}
				for _, port := range ports {
					origin := scheme + "://" + h
					if !(scheme == "http" && port == "80" || scheme == "https" && port == "443") {
						origin = scheme + "://" + net.JoinHostPort(h, port)
					}
					if !slices.Contains(site.Origins, origin) {
						site.Origins = append(site.Origins, origin)
					}
				}
			}
		})
	}
	return sites
}

// strippedPrefixes lists the path prefixes rewrites under routes strip
// (without a trailing slash), as handle_path and uri strip_prefix write
// them; prefixes with placeholders are left out (they are not known).
func strippedPrefixes(routes caddyhttp.RouteList) []string {
	var out []string
	eachHandler(routes, nil, func(h caddyhttp.MiddlewareHandler, _ []string) {
		if handler, ok := h.(*rewrite.Rewrite); ok {
			if p := strings.TrimSuffix(handler.StripPathPrefix, "/"); p != "" && !strings.Contains(p, "{") {
				out = append(out, p)
			}
		}
	})
	return out
}

// walkRoutes calls found for every pool handler under routes, with the
// host names the route's host matchers (or its parents') require.
func walkRoutes(routes caddyhttp.RouteList, hosts []string, found func(key string, hosts []string)) {
	eachHandler(routes, hosts, func(h caddyhttp.MiddlewareHandler, routeHosts []string) {
		switch handler := h.(type) {
		case PoolHandler:
			found(handler.PoolKey(), routeHosts)
		case *reverseproxy.Handler:
			if source, ok := handler.DynamicUpstreams.(PoolHandler); ok {
				found(source.PoolKey(), routeHosts)
			}
		}
	})
}

// eachHandler calls fn for every handler of provisioned routes, subroutes
// included (the subroute itself is not passed), with the host names the
// route's host matchers, and its parents', require. It is the typed twin
// of WalkHandlers, which reads a config's JSON for the commands that load
// no config.
func eachHandler(routes caddyhttp.RouteList, hosts []string, fn func(h caddyhttp.MiddlewareHandler, hosts []string)) {
	for _, route := range routes {
		routeHosts := hosts
		for _, set := range route.MatcherSets {
			for _, m := range set {
				switch mh := m.(type) {
				case caddyhttp.MatchHost:
					routeHosts = append(slices.Clone(routeHosts), mh...)
				case *caddyhttp.MatchHost:
					routeHosts = append(slices.Clone(routeHosts), (*mh)...)
				}
			}
		}
		for _, h := range route.Handlers {
			if sub, ok := h.(*caddyhttp.Subroute); ok {
				eachHandler(sub.Routes, routeHosts, fn)
				continue
			}
			fn(h, routeHosts)
		}
	}
}
