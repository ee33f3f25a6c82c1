package hearth

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
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
	matched := func(m any, hs ...caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: caddyhttp.MatcherSets{{m}}, Handlers: hs}
	}
	path := func(p string) any { return caddyhttp.MatchPath{p} }
	host := func(h string) any { return caddyhttp.MatchHost{h} }
	grouped := func(r caddyhttp.Route) caddyhttp.Route { r.Group = "g"; return r }
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
		"a root with a request's placeholder":    {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("/srv/{host}"), fromVars)}}, []string{"/srv"}},
		"a root that is a placeholder":           {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("{query.d}"), fromVars)}}, []string{"/", cwd}},
		"no root at all: the working directory":  {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(fromVars)}}, []string{cwd}},
		"a root for some paths only":             {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(path("/static/*"), vars("/srv/a")), route(fromVars)}}, []string{"/srv/a", cwd}},
		"a root for the file_server's paths":     {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(path("/static/*"), vars("/srv/a")), matched(path("/static/*"), fromVars)}}, []string{"/srv/a"}},
		"the same paths of another matcher":      {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(path("/static/*"), vars("/srv/a")), matched(host("/static/*"), fromVars)}}, []string{"/srv/a", cwd}},
		"not the first of its group":             {&caddyhttp.Server{Routes: caddyhttp.RouteList{grouped(route(fromVars)), grouped(route(vars("/srv/a"))), route(fromVars)}}, []string{"/srv/a", cwd}},
		"error routes start with no root":        {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(host("a.example"), &caddyhttp.Subroute{Routes: caddyhttp.RouteList{route(vars("/srv/a"))}})}, Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{matched(host("a.example"), fromVars)}}}, []string{"/srv/a", cwd}},
		"a not matcher is not a path":            {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(&caddyhttp.MatchNot{}, vars("/srv/a")), matched(&caddyhttp.MatchNot{}, fromVars)}}, []string{"/srv/a", cwd}},
		"a handler between may change the path":  {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(path("/static/*"), vars("/srv/a")), route(&rewrite.Rewrite{StripPathPrefix: "/v1"}), matched(path("/static/*"), fromVars)}}, []string{"/srv/a", cwd}},
		"an app between does not":                {&caddyhttp.Server{Routes: caddyhttp.RouteList{matched(path("/static/*"), vars("/srv/a")), matched(path("/api/*"), testPool("x")), matched(path("/static/*"), fromVars)}}, []string{"/srv/a"}},
		"a root unset for some paths":            {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("/srv/a")), matched(path("/x/*"), vars("")), route(fromVars)}}, []string{"/srv/a", cwd}},
		"back to this machine's files for some":  {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(caddyhttp.VarsMiddleware{"fs": "assets"}, vars("/srv/a")), matched(path("/x/*"), caddyhttp.VarsMiddleware{"fs": "default "}), route(fromVars)}}, []string{"/srv/a"}},
		"reverse_proxy's handle_response":        {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(vars("/srv/a"), &reverseproxy.Handler{HandleResponse: []caddyhttp.ResponseHandler{{Routes: caddyhttp.RouteList{route(fromVars)}}}})}}, []string{"/srv/a", cwd}},
		"another file system":                    {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(caddyhttp.VarsMiddleware{"fs": "assets"}, fromVars)}}, nil},
		"file_server's own file system":          {&caddyhttp.Server{Routes: caddyhttp.RouteList{route(&fileserver.FileServer{Root: "/x", FileSystem: "assets"})}}, nil},
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
// serve and those of every other server (whatever any serves can be
// downloaded).
func TestSiteRoots(t *testing.T) {
	route := func(hs ...caddyhttp.MiddlewareHandler) caddyhttp.Route { return caddyhttp.Route{Handlers: hs} }
	srv := &caddyhttp.Server{
		Routes: caddyhttp.RouteList{route(testPool("app"))},
		Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{
			route(caddyhttp.VarsMiddleware{"root": "/srv/app"}, &fileserver.FileServer{Root: "{http.vars.root}"}),
		}},
	}
	other := &caddyhttp.Server{Routes: caddyhttp.RouteList{route(&fileserver.FileServer{Root: "/srv/other"})}}
	sites := discoverSites(&caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": srv, "srv1": other}})
	site := sites["app"]
	if site == nil {
		t.Fatal("no site for the app")
	}
	got := slices.Sorted(slices.Values(site.Roots))
	if !slices.Equal(got, []string{"/srv/app", "/srv/other"}) {
		t.Errorf("the site's roots: %v, want /srv/app (served by handle_errors) and /srv/other (by another server)", got)
	}
}

// TestConfigServedRoots: the directories file_server may serve, from a
// Caddyfile's JSON as `caddy hearth check` reads it. A root the `root`
// directive sets only for some paths leaves the others on Caddy's working
// directory; a file_server on another file system serves nothing of this
// machine.
func TestConfigServedRoots(t *testing.T) {
	t.Setenv("HEARTH_TEST_SITE_ROOT", "/srv/env")
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, caddyfile string
		want            []string
	}{
		{"root for every path", ":8080 {\n root * /srv/a\n file_server\n}", []string{"/srv/a"}},
		{"root for some paths: the others serve the working directory", ":8080 {\n root /static/* /srv/a\n file_server\n}", []string{"/srv/a", cwd}},
		{"root and file_server for the same paths", ":8080 {\n root /static/* /srv/a\n file_server /static/*\n}", []string{"/srv/a"}},
		{"the paths of a second root are not those of file_server", ":8080 {\n root /a/* /srv/a\n root /b/* /srv/b\n file_server /a/*\n}", []string{"/srv/a", "/srv/b"}},
		{"handle_path with its own root", ":8080 {\n handle_path /static/* {\n  root * /srv/a\n  file_server\n }\n handle {\n  respond ok\n }\n}", []string{"/srv/a"}},
		{"a root inside handle does not reach a file_server outside it", ":8080 {\n handle /static/* {\n  root * /srv/a\n }\n file_server\n}", []string{"/srv/a", cwd}},
		{"a site root reaches file_server in handle", ":8080 {\n root * /srv/a\n handle /static/* {\n  file_server\n }\n}", []string{"/srv/a"}},
		{"one site's root is not another's", "a.example {\n root * /srv/a\n file_server\n}\nb.example {\n file_server\n}", []string{"/srv/a", cwd}},
		{"handle_errors starts with no root (a bad request fails before any route)", "a.example {\n root * /srv/a\n file_server\n handle_errors {\n  rewrite * /error.html\n  file_server\n }\n}", []string{"/srv/a", cwd}},
		{"handle_errors with its own root", "a.example {\n root * /srv/a\n file_server\n handle_errors {\n  root * /srv/errors\n  rewrite * /error.html\n  file_server\n }\n}", []string{"/srv/a", "/srv/errors"}},
		{"a response between root and file_server of the same paths", ":8080 {\n root /static/* /srv/a\n respond /api/* \"from the app\"\n file_server /static/*\n}", []string{"/srv/a"}},
		{"a rewrite between root and file_server of the same paths", ":8080 {\n root /static/* /srv/a\n uri strip_prefix /v1\n file_server /static/*\n}", []string{"/srv/a", cwd}},
		{"not matchers", ":8080 {\n @a not path /api/*\n @s not path /static/*\n root @a /srv/a\n file_server @s\n}", []string{"/srv/a", cwd}},
		{"an error before the root", ":8080 {\n route {\n  error /api/* 502\n  root * /srv/a\n  file_server\n }\n handle_errors {\n  file_server\n }\n}", []string{"/srv/a", cwd}},
		{"back to this machine's files for some paths", ":8080 {\n route {\n  fs assets\n  fs /api/* default\n  root * /srv/a\n  file_server\n }\n}", []string{"/srv/a"}},
		{"a root from the environment", ":8080 {\n root * {env.HEARTH_TEST_SITE_ROOT}\n file_server\n}", []string{"/srv/env"}},
		{"a root from an unset variable", ":8080 {\n root * {env.HEARTH_TEST_UNSET}\n file_server\n}", []string{cwd}},
		{"a root from the request", ":8080 {\n root * /srv/{host}\n file_server\n}", []string{"/srv"}},
		{"a root the request names", ":8080 {\n root * {query.d}\n file_server\n}", []string{"/", cwd}},
		{"handle_errors of a site with no root", "a.example {\n respond ok\n handle_errors {\n  file_server\n }\n}", []string{cwd}},
		{"a named route", "&(static) {\n route {\n  root * /srv/n\n  file_server\n }\n}\n:8080 {\n invoke static\n}", []string{"/srv/n"}},
		{"reverse_proxy's handle_response", ":8080 {\n root * /srv/a\n reverse_proxy 127.0.0.1:9 {\n  @404 status 404\n  handle_response @404 {\n   file_server\n  }\n }\n}", []string{"/srv/a", cwd}},
		{"intercept's handle_response with its own root", ":8080 {\n intercept {\n  @404 status 404\n  handle_response @404 {\n   root * /srv/errors\n   file_server\n  }\n }\n respond ok\n}", []string{"/srv/errors"}},
		{"file_server's own root", ":8080 {\n file_server {\n  root /srv/own\n }\n}", []string{"/srv/own"}},
		{"another file system", ":8080 {\n fs assets\n file_server\n}", nil},
		{"another file system of file_server's own", ":8080 {\n file_server {\n  fs assets\n  root /x\n }\n}", nil},
		{"no root at all", ":8080 {\n file_server\n}", []string{cwd}},
		{"no file_server", ":8080 {\n root * /srv/a\n respond ok\n}", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.caddyfile), nil)
			if err != nil {
				t.Fatalf("adapting:\n%s\n%v %v", tc.caddyfile, err, warnings)
			}
			cfg, err := ReadConfig(adapted)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, srv := range cfg.Apps.HTTP.Servers {
				got = append(got, srv.ServedRoots()...)
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%v, want %v\n%s", got, want, adapted)
			}
		})
	}
}

// FuzzConfigServedRoots: no JSON makes the served-root analysis of the
// commands that read a config panic, and what it lists is absolute.
func FuzzConfigServedRoots(f *testing.F) {
	f.Add([]byte(`{"apps":{"http":{"servers":{"s":{"routes":[{"match":[{"path":["/a/*"]}],"handle":[{"handler":"vars","root":"/srv"}]},{"handle":[{"handler":"subroute","routes":[{"group":"g","handle":[{"handler":"file_server","fs":"{http.vars.fs}"}]}]}]}],"errors":{"routes":[{"handle":[{"handler":"file_server","root":"rel"}]}]},"named_routes":{"n":{"handle":[{"handler":"vars","fs":"x","root":7}]}}}}}}}`))
	f.Add([]byte(`{"apps":{"http":{"servers":{"s":{"routes":[{"handle":[{"handler":"subroute","routes":[{"handle":[{"handler":"subroute","routes":null}]}]}]},"x",1,null]}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ReadConfig(data)
		if err != nil {
			return
		}
		for _, srv := range cfg.Apps.HTTP.Servers {
			for _, root := range srv.ServedRoots() {
				if !filepath.IsAbs(root) {
					t.Errorf("root %q is not absolute", root)
				}
			}
		}
	})
}
