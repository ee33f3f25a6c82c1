package hearth

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
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
	// match identifies the route's matchers: routes with the same match
	// run for the same requests; "" for none.
	match string
	// group: of routes that run only when no earlier route of their
	// group did ("" for none).
	group    string
	handlers []staticHandler
}

// staticHandler is a handler of a staticRoute.
type staticHandler struct {
	kind handlerKind
	// root and fs: a file_server's own (defaults: varsRoot, varsFS), or
	// what a vars handler sets (with setsRoot, setsFS).
	root, fs         string
	setsRoot, setsFS bool
	routes           []staticRoute // a subroute's
}

// handlerKind is what a handler means to the analysis.
type handlerKind int

const (
	otherHandler handlerKind = iota
	fileServerHandler
	varsHandler
	subrouteHandler
)

// rootScope is what every request that reaches a point of the routes has
// had set by the routes before it.
type rootScope struct {
	root bool // a root (vars) is set
	fs   bool // a file system other than the machine's is set (vars)
	// the same, set for the requests a match of this route list selects
	rootFor, fsFor map[string]bool
}

// nested is the scope for the routes of a subroute reached from s: what
// is set carries in; matches are those of another route list.
func (s rootScope) nested() rootScope {
	return rootScope{root: s.root, fs: s.fs, rootFor: map[string]bool{}, fsFor: map[string]bool{}}
}

// clone is a copy of s to go on from.
func (s rootScope) clone() rootScope {
	return rootScope{root: s.root, fs: s.fs, rootFor: maps.Clone(s.rootFor), fsFor: maps.Clone(s.fsFor)}
}

// rootScan collects what file_server may serve.
type rootScan struct {
	roots     []string // file_server's own roots
	varsRoots []string // roots vars handlers set
	fromVars  bool     // a file_server serves {http.vars.root}
	cwd       bool     // … and some request may reach it with no root set
}

// walk scans routes, reached with scope in, and returns the scope after
// them.
func (s *rootScan) walk(routes []staticRoute, in rootScope) rootScope {
	out := in.clone()
	groups := map[string]bool{} // the groups of the routes before
	for _, r := range routes {
		// the first route of a group runs for every request it matches
		grouped := r.group != "" && groups[r.group]
		if r.group != "" {
			groups[r.group] = true
		}
		// within the route, handlers run in order for every request it
		// runs for; routes before with the same match ran for it too
		local := rootScope{root: out.root || r.match != "" && out.rootFor[r.match], fs: out.fs || r.match != "" && out.fsFor[r.match]}
		for _, h := range r.handlers {
			switch h.kind {
			case varsHandler:
				if h.setsRoot {
					local.root = true // a placeholder too: its directory is not known here
					s.varsRoots = append(s.varsRoots, h.root)
				}
				if h.setsFS {
					local.fs = !machineFS(h.fs)
				}
			case fileServerHandler:
				if h.fs != varsFS && !machineFS(h.fs) || h.fs == varsFS && local.fs {
					continue // another file system: nothing of this machine's
				}
				if strings.Contains(h.root, varsRoot) {
					s.fromVars = true
					s.cwd = s.cwd || !local.root // {http.vars.root} empty: "."
				}
				if h.root != varsRoot {
					s.roots = append(s.roots, h.root)
				}
			case subrouteHandler:
				inner := s.walk(h.routes, local.nested())
				local.root, local.fs = inner.root, inner.fs
			}
		}
		switch {
		case r.match == "" && !grouped:
			out.root, out.fs = local.root, local.fs
		case !grouped: // ran for every request of its match
			out.rootFor[r.match] = out.rootFor[r.match] || local.root
			out.fsFor[r.match] = out.fsFor[r.match] || local.fs
		}
	}
	return out
}

// machineFS reports whether a file system name (of file_server's fs or
// the `fs` directive) is this machine's own: Caddy's default. A
// placeholder may be anything, so it counts as the machine's too.
func machineFS(name string) bool {
	return name == "" || name == "default" || strings.Contains(name, "{")
}

// servedRootsOf lists the absolute directories file_server may serve
// under a server's routes (then its error routes and named routes, which
// a request reaches with what the routes set): file_server's own roots,
// and when one serves {http.vars.root}, every root a vars handler (the
// `root` directive) sets, plus Caddy's working directory when a request
// may reach it with no root set. Placeholders are skipped (their value is
// not known here).
func servedRootsOf(routes []staticRoute, later ...[]staticRoute) []string {
	var scan rootScan
	top := scan.walk(routes, rootScope{}.nested())
	for _, l := range later {
		scan.walk(l, top)
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
		if root == "" || strings.Contains(root, "{") {
			continue
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
		roots = append(roots, serverServedRoots(srv)...)
	}
	return roots
}

// loadedRoutes models provisioned routes.
func loadedRoutes(routes caddyhttp.RouteList) []staticRoute {
	out := make([]staticRoute, 0, len(routes))
	for _, route := range routes {
		r := staticRoute{match: loadedMatch(route.MatcherSets), group: route.Group}
		for _, h := range route.Handlers {
			r.handlers = append(r.handlers, loadedHandler(h))
		}
		out = append(out, r)
	}
	return out
}

// loadedMatch identifies provisioned matchers by their types and JSON.
func loadedMatch(sets caddyhttp.MatcherSets) string {
	if len(sets) == 0 {
		return ""
	}
	var b strings.Builder
	for _, set := range sets {
		b.WriteString("[")
		for _, m := range set {
			text, err := json.Marshal(m)
			if err != nil {
				text = []byte(fmt.Sprintf("%p", m)) // unique: matches nothing else
			}
			fmt.Fprintf(&b, "%T:%s;", m, text)
		}
		b.WriteString("]")
	}
	return b.String()
}

func loadedHandler(h caddyhttp.MiddlewareHandler) staticHandler {
	switch handler := h.(type) {
	case *fileserver.FileServer:
		return fileServer(handler.Root, handler.FileSystem)
	case caddyhttp.VarsMiddleware:
		return vars(handler)
	case *caddyhttp.VarsMiddleware:
		return vars(*handler)
	case *caddyhttp.Subroute:
		return staticHandler{kind: subrouteHandler, routes: loadedRoutes(handler.Routes)}
	}
	return staticHandler{}
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

// vars models a vars handler.
func vars(values map[string]any) staticHandler {
	h := staticHandler{kind: varsHandler}
	h.root, h.setsRoot = values["root"].(string)
	h.setsRoot = h.setsRoot && h.root != ""
	h.fs, h.setsFS = values["fs"].(string)
	return h
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
			r.match = string(text)
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
		for _, name := range []string{"root", "fs"} {
			var value any
			if json.Unmarshal(h[name], &value) == nil {
				values[name] = value
			}
		}
		return vars(values)
	case "subroute":
		var sub []json.RawMessage
		_ = json.Unmarshal(h["routes"], &sub)
		return staticHandler{kind: subrouteHandler, routes: configRoutes(sub)}
	}
	return staticHandler{}
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
