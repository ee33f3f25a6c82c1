package hearth

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
)

func TestServedRootOf(t *testing.T) {
	dir := t.TempDir()
	public := filepath.Join(dir, "public")
	elsewhere := filepath.Join(dir, "elsewhere")
	for _, d := range []string{public, elsewhere} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link") // elsewhere/… reached through a link into public
	if err := os.Symlink(filepath.Join(public), link); err != nil {
		t.Fatal(err)
	}
	rootLink := filepath.Join(dir, "root-link") // a served root that is a link to elsewhere
	if err := os.Symlink(elsewhere, rootLink); err != nil {
		t.Fatal(err)
	}
	roots := []string{public, rootLink}
	for _, tc := range []struct {
		path, want string
	}{
		{public, public},
		{filepath.Join(public, "backups"), public},
		{filepath.Join(public, "a", "b", "c"), public},
		{public + "2", ""},                              // a sibling that shares the prefix
		{dir, ""},                                       // the parent of a root
		{filepath.Join(dir, "private", "backups"), ""},  // elsewhere
		{link, public},                                  // a link into a root
		{filepath.Join(link, "new", "backups"), public}, // below it, not made yet
		{filepath.Join(elsewhere, "x"), rootLink},       // inside a root that is a link
		{filepath.Join(public, "..", "private"), ""},    // .. leaves the root
	} {
		if got := ServedRootOf(tc.path, roots); got != tc.want {
			t.Errorf("ServedRootOf(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := ServedRootOf(public, nil); got != "" {
		t.Errorf("no roots: %q", got)
	}
}

func TestAllServedRoots(t *testing.T) {
	route := func(hs ...caddyhttp.MiddlewareHandler) caddyhttp.Route { return caddyhttp.Route{Handlers: hs} }
	vars := func(root string) caddyhttp.VarsMiddleware { return caddyhttp.VarsMiddleware{"root": root} }
	fromVars := &fileserver.FileServer{Root: "{http.vars.root}"} // file_server without its own root
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		srv  *caddyhttp.Server
		want []string
	}{
		"root and file_server":                   {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("/srv/public"), fromVars)}}, []string{"/srv/public"}},
		"file_server's own root":                 {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(&fileserver.FileServer{Root: "/srv/files"})}}, []string{"/srv/files"}},
		"root without file_server is not served": {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("/srv/app"))}}, nil},
		"in a subroute":                          {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(&caddyhttp.Subroute{Routes: caddyhttp.RouteList{route(vars("/srv/sub"), fromVars)}})}}, []string{"/srv/sub"}},
		"in handle_errors":                       {&caddyhttp.Server{Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{route(vars("/srv/errors"), fromVars)}}}, []string{"/srv/errors"}},
		"in a named route":                       {&caddyhttp.Server{NamedRoutes: map[string]*caddyhttp.Route{"static": {Handlers: []caddyhttp.MiddlewareHandler{vars("/srv/named"), fromVars}}}}, []string{"/srv/named"}},
		"a placeholder root is skipped":          {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("/srv/{host}"), fromVars)}}, nil},
		"no root at all: the working directory":  {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(fromVars)}}, []string{cwd}},
	} {
		got := allServedRoots(&caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": tc.srv}})
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

type testPool string

func (p testPool) PoolKey() string { return string(p) }

func (testPool) ServeHTTP(http.ResponseWriter, *http.Request, caddyhttp.Handler) error { return nil }

// TestSiteRoots: a site's static roots, which the pre-launch checks compare
// with the app's directory and env_file, include those its error routes
// serve.
func TestSiteRoots(t *testing.T) {
	route := func(hs ...caddyhttp.MiddlewareHandler) caddyhttp.Route { return caddyhttp.Route{Handlers: hs} }
	srv := &caddyhttp.Server{
		Routes: caddyhttp.RouteList{route(testPool("app"))},
		Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{
			route(caddyhttp.VarsMiddleware{"root": "/srv/app"}, &fileserver.FileServer{Root: "{http.vars.root}"}),
		}},
	}
	sites := discoverSites(&caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": srv}})
	if site := sites["app"]; site == nil || !slices.Equal(site.Roots, []string{"/srv/app"}) {
		t.Errorf("the site's roots: %+v, want /srv/app (served by handle_errors)", site)
	}
}
