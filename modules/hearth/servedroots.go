package hearth

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/intercept"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// The served-root analysis: which directories of this machine file_server
// may serve, so that nothing private (a backup, an env_file, an app's
// .git) is put there. It reads one small model of routes (staticRoute),
// made from a loaded config's routes (at Start) or from its JSON (for the
// commands that check a config without loading it): one analysis for both.

// varsRoot and varsFS are the placeholders file_server reads its root and
// file system from when it sets none itself (what the `root` and `fs`
// directives set).
const (
	varsRoot = "{http.vars.root}"
	varsFS   = "{http.vars.fs}"
)

// staticRoute is what the served-root analysis needs of a route.
type staticRoute struct {
	// match identifies the route's matchers: "" for none. Two routes of one
	// list with the same match run for the same requests when it is
	// stable (only path and host matchers: what no handler of the analysis
	// changes) and no handler between them may change the request.
	match  string
	stable bool
	// group: of routes that run only when no earlier route of their
	// group did ("" for none).
	group    string
	handlers []staticHandler
}

// staticHandler is a handler of a staticRoute.
type staticHandler struct {
	kind handlerKind
	// a file_server's root and fs (defaults: varsRoot, varsFS)
	root, fs string
	vars     map[string]any // what a vars handler sets
	routes   []staticRoute  // a subroute's
	// the routes a handler runs for a response (reverse_proxy's and
	// intercept's handle_response), whatever the routes before them set
	responseRoutes [][]staticRoute
}

// handlerKind is what a handler means to the analysis.
type handlerKind int

const (
	// otherHandler may change the request (rewrite, uri, headers …): the
	// analysis no longer takes routes of one match for the same requests.
	otherHandler handlerKind = iota
	fileServerHandler
	varsHandler
	subrouteHandler
	// inertHandler changes nothing of the request for the handlers after
	// it: Hearth's apps, respond.
	inertHandler
)

// rootScope is what every request that reaches a point of the routes has
// had set by the routes before it.
type rootScope struct {
	root bool // a root (vars) that cannot be empty is set
	fs   bool // a file system other than the machine's is set (vars)
	// the same, for the requests a stable match of this route list selects
	rootFor, fsFor map[string]bool
}

// nested is the scope for the routes of a subroute reached from s: what
// is set carries in; matches are those of another route list.
func (s rootScope) nested() rootScope {
	return rootScope{root: s.root, fs: s.fs, rootFor: map[string]bool{}, fsFor: map[string]bool{}}
}

// forget drops what is known per match: a handler may have changed the
// request, or what a root or file system is for some requests.
func (s *rootScope) forget() {
	clear(s.rootFor)
	clear(s.fsFor)
}

// rootScan collects what file_server may serve.
type rootScan struct {
	roots     []string // file_server's own roots
	varsRoots []string // roots vars handlers set
	fromVars  bool     // a file_server serves {http.vars.root}
	cwd       bool     // … and some request may reach it with no root set
	// response routes met, to scan as if nothing was set before them
	responseRoutes [][]staticRoute
}

// walk scans routes, reached with scope in, and returns the scope after
// them and whether a handler of them may change the request.
func (s *rootScan) walk(routes []staticRoute, in rootScope) (rootScope, bool) {
	out := in.nested()
	changed := false
	groups := map[string]bool{} // the groups of the routes before
	for _, r := range routes {
		// the first route of a group runs for every request it matches
		maybe := r.group != "" && groups[r.group]
		if r.group != "" {
			groups[r.group] = true
		}
		local := rootScope{root: out.root, fs: out.fs}
		if r.stable {
			local.root = local.root || out.rootFor[r.match]
			local.fs = local.fs || out.fsFor[r.match]
		}
		lowered, routeChanged := false, false // the route unset a root or file system; changed the request
		for _, h := range r.handlers {
			switch h.kind {
			case varsHandler:
				if value, ok := h.vars["root"]; ok {
					text, _ := value.(string) // (another type is a relative directory)
					dir, exact := rootDir(text)
					if dir != "" {
						s.varsRoots = append(s.varsRoots, dir)
					}
					// empty, or a placeholder that may be: file_server
					// serves the working directory
					local.root = exact && dir != "" || !exact && !strings.HasPrefix(expand(text), "{")
					lowered = lowered || !local.root
				}
				if value, ok := h.vars["fs"]; ok {
					text, _ := value.(string)
					local.fs = !machineFS(text)
					lowered = lowered || !local.fs
				}
				for name, value := range h.vars {
					if strings.Contains(name, "{") { // it may be root or fs
						local.root, local.fs, lowered = false, false, true
						text, _ := value.(string)
						if dir, _ := rootDir(text); dir != "" {
							s.varsRoots = append(s.varsRoots, dir)
						}
					}
				}
			case fileServerHandler:
				if !machineFS(h.fs) && h.fs != varsFS || h.fs == varsFS && local.fs {
					continue // another file system: nothing of this machine's
				}
				if strings.Contains(h.root, varsRoot) { // what vars set, or "." for none
					s.fromVars = true
					s.cwd = s.cwd || !local.root
				} else {
					dir, _ := rootDir(h.root)
					s.roots = append(s.roots, dir)
				}
			case subrouteHandler:
				inner, innerChanged := s.walk(h.routes, local.nested())
				lowered = lowered || local.root && !inner.root || local.fs && !inner.fs
				local.root, local.fs = inner.root, inner.fs
				routeChanged = routeChanged || innerChanged
			case inertHandler:
			default:
				routeChanged = true
				s.responseRoutes = append(s.responseRoutes, h.responseRoutes...)
			}
		}
		switch {
		case r.match == "" && !maybe:
			out.root, out.fs = local.root, local.fs
		default: // for some requests only
			out.root, out.fs = out.root && local.root, out.fs && local.fs
		}
		if lowered || routeChanged {
			out.forget()
		}
		if r.stable && !maybe && !routeChanged {
			out.rootFor[r.match], out.fsFor[r.match] = local.root, local.fs
		}
		changed = changed || routeChanged
	}
	return out, changed
}

// machineFS reports whether a file system name (of file_server's fs or
// the `fs` directive) is this machine's own: Caddy's default. A
// placeholder may be anything, so it counts as the machine's too.
func machineFS(name string) bool {
	name = strings.TrimSpace(name) // as Caddy looks it up
	return name == "" || name == "default" || strings.Contains(name, "{")
}

// expand replaces the placeholders whose value does not depend on the
// request ({env.*}, {system.*}), as Caddy's replacer will.
func expand(text string) string {
	if !strings.Contains(text, "{") {
		return text
	}
	return caddy.NewReplacer().ReplaceKnown(text, "")
}

// rootDir is the directory a root names, once what does not depend on
// the request is expanded; for a root with a request placeholder left
// ({host}, {query.d}), the directory before it (exact false), which the
// root is inside of.
func rootDir(root string) (dir string, exact bool) {
	root = expand(root)
	if !strings.Contains(root, "{") {
		return root, true
	}
	return placeholderDir(root), false
}

// placeholderDir is the directory of text before its first placeholder:
// "/" when none is written (the placeholder may name any directory).
func placeholderDir(text string) string {
	i := strings.IndexByte(text, '{')
	if i < 0 {
		return text
	}
	j := strings.LastIndexByte(text[:i], '/')
	if j <= 0 {
		return "/"
	}
	return text[:j]
}

// servedRootsOf lists the absolute directories file_server may serve
// under a server's routes, then its error routes and named routes: file_server's own roots,
// and when one serves {http.vars.root}, every root a vars handler (the
// `root` directive) sets, plus Caddy's working directory when a request
// may reach it with no root set. A root with a placeholder that depends
// on the request counts as the directory before it. Error routes, named
// routes and response routes (handle_response) are scanned as if nothing
// was set before them: an error may come before the routes set a root
// (Caddy refuses a bad request before any route), and a route may be
// invoked before its site's root.
func servedRootsOf(routes []staticRoute, later ...[]staticRoute) []string {
	var scan rootScan
	scan.walk(routes, rootScope{}.nested())
	for _, l := range later {
		scan.walk(l, rootScope{}.nested())
	}
	for len(scan.responseRoutes) > 0 { // (which may hold more)
		l := scan.responseRoutes[0]
		scan.responseRoutes = scan.responseRoutes[1:]
		scan.walk(l, rootScope{}.nested())
	}
	candidates := scan.roots
	if scan.fromVars {
		candidates = append(candidates, scan.varsRoots...)
		if scan.cwd {
			candidates = append(candidates, ".")
		}
	}
	var out []string
	for _, root := range candidates {
		if root == "" {
			root = "."
		}
		if abs, err := filepath.Abs(root); err == nil && !slices.Contains(out, abs) {
			out = append(out, abs)
		}
	}
	return out
}

// serverServedRoots lists the directories file_server may serve on a
// loaded server.
func serverServedRoots(srv *caddyhttp.Server) []string {
	var later [][]staticRoute
	if srv.Errors != nil {
		later = append(later, loadedRoutes(srv.Errors.Routes))
	}
	for _, r := range srv.NamedRoutes {
		if r != nil {
			later = append(later, loadedRoutes(caddyhttp.RouteList{*r}))
		}
	}
	return servedRootsOf(loadedRoutes(srv.Routes), later...)
}

// allServedRoots lists the static roots of every server of app.
func allServedRoots(app *caddyhttp.App) []string {
	var roots []string
	for _, srv := range app.Servers {
		for _, root := range serverServedRoots(srv) {
			if !slices.Contains(roots, root) {
				roots = append(roots, root)
			}
		}
	}
	return roots
}

// loadedRoutes models provisioned routes.
func loadedRoutes(routes caddyhttp.RouteList) []staticRoute {
	out := make([]staticRoute, 0, len(routes))
	for _, route := range routes {
		r := staticRoute{group: route.Group}
		r.match, r.stable = loadedMatch(route.MatcherSets)
		for _, h := range route.Handlers {
			r.handlers = append(r.handlers, loadedHandler(h))
		}
		out = append(out, r)
	}
	return out
}

// loadedMatch identifies provisioned matchers by their types and JSON;
// stable when they are all path and host matchers.
func loadedMatch(sets caddyhttp.MatcherSets) (match string, stable bool) {
	if len(sets) == 0 {
		return "", false
	}
	var b strings.Builder
	stable = true
	for _, set := range sets {
		b.WriteString("[")
		for _, m := range set {
			switch m.(type) {
			case caddyhttp.MatchPath, *caddyhttp.MatchPath, caddyhttp.MatchHost, *caddyhttp.MatchHost:
			default:
				stable = false // (a `not` matcher's JSON, for one, is gone once loaded)
			}
			text, _ := json.Marshal(m)
			fmt.Fprintf(&b, "%T:%s;", m, text)
		}
		b.WriteString("]")
	}
	return b.String(), stable
}

func loadedHandler(h caddyhttp.MiddlewareHandler) staticHandler {
	switch handler := h.(type) {
	case *fileserver.FileServer:
		return fileServer(handler.Root, handler.FileSystem)
	case caddyhttp.VarsMiddleware:
		return staticHandler{kind: varsHandler, vars: handler}
	case *caddyhttp.VarsMiddleware:
		return staticHandler{kind: varsHandler, vars: *handler}
	case *caddyhttp.Subroute:
		return staticHandler{kind: subrouteHandler, routes: loadedRoutes(handler.Routes)}
	case PoolHandler, caddyhttp.StaticResponse, *caddyhttp.StaticResponse:
		return staticHandler{kind: inertHandler}
	case *reverseproxy.Handler:
		return staticHandler{responseRoutes: loadedResponseRoutes(handler.HandleResponse)}
	case *intercept.Intercept:
		return staticHandler{responseRoutes: loadedResponseRoutes(handler.HandleResponse)}
	}
	return staticHandler{}
}

func loadedResponseRoutes(handlers []caddyhttp.ResponseHandler) [][]staticRoute {
	var out [][]staticRoute
	for _, rh := range handlers {
		out = append(out, loadedRoutes(rh.Routes))
	}
	return out
}

// fileServer models a file_server with its root and fs ("" for its
// defaults).
func fileServer(root, fs string) staticHandler {
	if root == "" {
		root = varsRoot
	}
	if fs == "" {
		fs = varsFS
	}
	return staticHandler{kind: fileServerHandler, root: root, fs: fs}
}

// configRoutes models the routes of a JSON config. A route that cannot be
// read is left out: Caddy refuses such a config when it loads it.
func configRoutes(routes []json.RawMessage) []staticRoute {
	out := make([]staticRoute, 0, len(routes))
	for _, raw := range routes {
		var route struct {
			Group  string                       `json:"group"`
			Match  []map[string]any             `json:"match"`
			Handle []map[string]json.RawMessage `json:"handle"`
		}
		if json.Unmarshal(raw, &route) != nil {
			continue
		}
		r := staticRoute{group: route.Group}
		if len(route.Match) > 0 {
			text, _ := json.Marshal(route.Match) // map keys sorted: equal matchers, equal text
			r.match, r.stable = string(text), true
			for _, set := range route.Match {
				for name := range set {
					r.stable = r.stable && (name == "path" || name == "host")
				}
			}
		}
		for _, h := range route.Handle {
			r.handlers = append(r.handlers, configHandler(h))
		}
		out = append(out, r)
	}
	return out
}

func configHandler(h map[string]json.RawMessage) staticHandler {
	var kind string
	_ = json.Unmarshal(h["handler"], &kind)
	switch kind {
	case "file_server":
		var root, fs string
		_ = json.Unmarshal(h["root"], &root)
		_ = json.Unmarshal(h["fs"], &fs)
		return fileServer(root, fs)
	case "vars":
		values := map[string]any{}
		for name, raw := range h {
			var value any
			if name != "handler" && json.Unmarshal(raw, &value) == nil {
				values[name] = value
			}
		}
		return staticHandler{kind: varsHandler, vars: values}
	case "subroute":
		var sub []json.RawMessage
		_ = json.Unmarshal(h["routes"], &sub)
		return staticHandler{kind: subrouteHandler, routes: configRoutes(sub)}
	case "wsgi", "asgi", "static_response":
		return staticHandler{kind: inertHandler}
	}
	// any other handler: the routes of its handle_response (reverse_proxy,
	// intercept)
	var responses []struct {
		Routes []json.RawMessage `json:"routes"`
	}
	_ = json.Unmarshal(h["handle_response"], &responses)
	var out staticHandler
	for _, rh := range responses {
		out.responseRoutes = append(out.responseRoutes, configRoutes(rh.Routes))
	}
	return out
}

// backupServed refuses a backup whose copies would go to to, inside one
// of roots (what file_server serves).
func backupServed(name, to string, roots []string) error {
	root := ServedRootOf(to, roots)
	if root == "" {
		return nil
	}
	if real := resolveExisting(to); real != to {
		to += " (" + real + " once its links are followed)"
	}
	return fmt.Errorf("backup %s: its copies would go to %s, which is inside %s, a directory file_server serves: anyone could download the database; set `to` to a directory outside every root Caddy serves", name, to, root)
}

// ServedRootOf returns the root among roots (absolute directories that
// file_server serves) that path is or is inside, or "": whatever is there
// can be downloaded. Symbolic links are followed as far as the path
// exists, so a link into a served root (or a root that is a link) is seen
// through, even when the directory below it is yet to be made.
func ServedRootOf(path string, roots []string) string {
	paths := []string{path}
	if real := resolveExisting(path); real != path {
		paths = append(paths, real)
	}
	for _, root := range roots {
		tops := []string{root}
		if real, err := filepath.EvalSymlinks(root); err == nil && real != root {
			tops = append(tops, real)
		}
		for _, top := range tops {
			for _, p := range paths {
				if rel, err := filepath.Rel(top, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
					return root
				}
			}
		}
	}
	return ""
}

// resolveExisting resolves the symbolic links of the longest part of path
// that exists and appends the rest.
func resolveExisting(path string) string {
	rest := ""
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest)
		}
		if filepath.Dir(p) == p {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}
