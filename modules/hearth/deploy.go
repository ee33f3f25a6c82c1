package hearth

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"

	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/internal/regularfile"
	"github.com/hearth-dev/hearth/modules/netinfo"
	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/service"
)

// deployment is what the deployment helpers read from a config.
type deployment struct {
	ports []sitePort
	certs []siteChallenge // how each HTTPS site gets its certificate
	apps  []string        // app names
	dirs  []string        // app directories, written to by the apps
	// more directories written to: backups' `to`, services' and jobs' own
	// `dir` (optional in the unit: a backup directory may not exist yet)
	extraDirs []string
	// configFiles are the files a Caddyfile imports, itself included;
	// importGlobs the directories its import globs search from
	configFiles, importGlobs []string
	// owners are the accounts blocks name for their directories (a
	// block's `user`); the others' are the apps' account
	owners map[string]string
	// directories the config names relative to Caddy's working directory
	relativeDirs []string
	// unprintable says what of the config the unit could not print as it
	// is (an app's name, an account): `systemd` refuses it, `ports`, which
	// prints neither, does not
	unprintable error
	// stops is how long the services and process upstreams may take to
	// stop at Caddy's exit, one after the other (their stop_timeouts)
	stops time.Duration
	// misplaced says of each backup whose copies would go inside its
	// app's directory that they cannot (the app's account could replace
	// them; Caddy refuses the directory)
	misplaced []string
}

// systemdSeconds writes a duration as systemd reads it, in whole seconds
// (rounded up: a bound).
func systemdSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s"
}

// DefaultProcessStopTimeout is a process upstream's stop_timeout when
// its block sets none.
const DefaultProcessStopTimeout = 30 * time.Second

// A Python app's stop_timeout when its block sets none (the python
// package's DefaultStopTimeout, which imports this one), and how long its
// workers then have to end before SIGKILL.
const (
	defaultAppStopTimeout = 30 * time.Second
	appWorkersStop        = 10 * time.Second
)

// unitStopTimeout is the unit's TimeoutStopSec: the time Caddy's own
// stop takes (its jobs killed), then its apps, services and process
// upstreams, which stop one after the other, each within its
// stop_timeout (an app's workers 10 s more); past it systemd kills
// whatever is left.
func (d *deployment) unitStopTimeout() time.Duration {
	return max(60*time.Second, 30*time.Second+d.stops)
}

// sitePort is a port an HTTP server listens on.
type sitePort struct {
	host     string // the listen host ("" for every address)
	port     int
	https    bool
	siteName []string
	redirect bool // only automatic HTTPS's HTTP->HTTPS redirect server
}

// loadDeployment adapts a config file and reads its servers and apps.
func loadDeployment(configFile, adapterName string) (*deployment, error) {
	data, err := adaptConfig(configFile, adapterName)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadConfig(data)
	if err != nil {
		return nil, err
	}
	d := &deployment{owners: map[string]string{}}
	d.configFiles, d.importGlobs, err = caddyfileFiles(configFile, adapterName)
	if err != nil {
		return nil, err
	}
	d.unprintable = envImports(d.configFiles)
	h := cfg.Apps.Hearth
	type placed struct{ dir, user string }
	var extra []placed
	// what the unit prints as it is: an account goes into shell lines and
	// a name into the unit (the config may be another account's work)
	for _, s := range h.Services {
		d.unprintable = cmp.Or(d.unprintable, names.Check("service", s.Name, "service <name> { … }"),
			checkAccount(fmt.Sprintf("service %q", s.Name), s.User))
		extra = append(extra, placed{s.Dir, s.User})
		d.stops += cmp.Or(time.Duration(s.StopTimeout), service.DefaultStopTimeout)
	}
	for _, j := range h.Jobs {
		d.unprintable = cmp.Or(d.unprintable, names.Check("job", j.Name, "job <name> { … }"),
			checkAccount(fmt.Sprintf("job %q", j.Name), j.User))
		extra = append(extra, placed{j.Dir, j.User})
	}
	var redirects []string // host names automatic HTTPS redirects from HTTP
	appsByName := map[string]appRef{}
	for _, srv := range cfg.Apps.HTTP.Servers {
		hosts, apps := scanRoutes(srv.Routes)
		for _, app := range apps {
			d.unprintable = cmp.Or(d.unprintable, app.check())
			if _, seen := appsByName[app.name]; !seen { // one pool, stopped once
				d.stops += app.stopTimeout
			}
			appsByName[app.name] = app
			if !slices.Contains(d.apps, app.name) {
				d.apps = append(d.apps, app.name)
			}
			if app.dir != "" && !slices.Contains(d.dirs, app.dir) {
				d.dirs = append(d.dirs, app.dir)
				d.own(app.dir, app.user)
			}
			if app.relative != "" {
				d.relativeDirs = append(d.relativeDirs, app.relative)
			}
		}
		for _, addr := range srv.Listen {
			host, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(addr, "tcp/"), "tcp4/"))
			if err != nil {
				continue
			}
			p, err := strconv.Atoi(port)
			if err != nil {
				continue // a port range
			}
			// automatic HTTPS serves TLS for a domain name on any port but 80
			https := len(srv.TLSPolicies) > 0
			for _, h := range hosts {
				if p != 80 && !srv.AutoHTTPS.Disable && !slices.Contains(srv.AutoHTTPS.Skip, h) &&
					net.ParseIP(h) == nil && h != "localhost" {
					https = true
				}
			}
			d.ports = append(d.ports, sitePort{host: host, port: p, https: https, siteName: hosts})
			if https && !srv.AutoHTTPS.Disable && !srv.AutoHTTPS.DisableRedirects {
				redirects = append(redirects, hosts...)
			}
		}
	}
	// a backup's copies are written by Caddy's account (the app's only
	// reads the database), in a directory relative to the app's, if any
	for _, b := range h.Backups {
		d.unprintable = cmp.Or(d.unprintable, names.Check("backup", b.Name, "backup <name> { … }"))
		to := b.To
		if name := b.AppName(); name != "" {
			if app, ok := appsByName[name]; ok && app.dir != "" {
				to = b.Destination(app.dir)
			}
		}
		// not inside a directory an app, a service or a job writes: its
		// account could replace it, and Caddy refuses it
		others := slices.Clone(d.dirs)
		for _, e := range extra {
			if e.user != caddysOwn && e.dir != "" {
				others = append(others, e.dir)
			}
		}
		if holder := slices.IndexFunc(others, func(dir string) bool { return filepath.IsAbs(to) && inside(to, dir) }); holder >= 0 {
			if err := unitSafePath(to); err != nil { // (printed in the unit's steps)
				d.unprintable = cmp.Or(d.unprintable, fmt.Errorf("backup %s: `to` %q: %w", b.Name, to, err))
			}
			d.misplaced = append(d.misplaced, fmt.Sprintf("backup %s: its copies cannot go to %s, inside %s, which an app's, a service's or a job's account writes (it could replace them, and Caddy refuses it): give it `to` outside, like /var/backups/%s", b.Name, to, others[holder], b.Name))
			continue
		}
		extra = append(extra, placed{to, caddysOwn})
	}
	for _, e := range extra {
		if e.dir != "" && !filepath.IsAbs(e.dir) {
			d.relativeDirs = append(d.relativeDirs, e.dir)
		} else if e.dir != "" && !slices.Contains(d.extraDirs, e.dir) {
			d.extraDirs = append(d.extraDirs, e.dir)
			d.own(e.dir, e.user)
		}
	}
	// automatic HTTPS also listens on the HTTP port (80 unless http_port
	// says otherwise) for its HTTP->HTTPS redirects and ACME challenges
	if len(redirects) > 0 {
		httpPort := cfg.Apps.HTTP.HTTPPort
		if httpPort == 0 {
			httpPort = 80
		}
		if !slices.ContainsFunc(d.ports, func(p sitePort) bool { return p.port == httpPort }) {
			slices.Sort(redirects)
			d.ports = append(d.ports, sitePort{port: httpPort, siteName: slices.Compact(redirects), redirect: true})
		}
	}
	sort.Slice(d.ports, func(i, j int) bool { return d.ports[i].port < d.ports[j].port })
	d.certs = challenges(cfg, d.ports)
	sort.Strings(d.apps)
	sort.Strings(d.dirs)
	sort.Strings(d.relativeDirs)
	return d, nil
}

// adaptConfig reads a config file (a Caddyfile or JSON) as JSON, choosing
// the adapter exactly as `caddy run` and `caddy validate` do (see
// chooseAdapter), without their log lines.
func adaptConfig(configFile, adapterName string) ([]byte, error) {
	file, adapterName, err := chooseAdapter(configFile, adapterName)
	if err != nil {
		return nil, err
	}
	// a regular file of a config's size: a FIFO put where the config or
	// an import of it should be would hang the command (which may be
	// root's), a device such as /dev/zero fill its memory; Caddy's
	// parser opens the imports itself, so they are judged first
	data, err := readPiece(file)
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	if adapterName == "caddyfile" {
		if _, _, err := followImports(abs(file)); err != nil {
			return nil, err
		}
	}
	if adapterName == "" {
		if err := checkJSON(file, data); err != nil {
			return nil, err
		}
		return data, nil
	}
	adapter := caddyconfig.GetAdapter(adapterName)
	if adapter == nil {
		return nil, fmt.Errorf("unknown config adapter %q", adapterName)
	}
	out, _, err := adapter.Adapt(data, map[string]any{"filename": file})
	if err != nil {
		return nil, fmt.Errorf("adapting %s: %w", file, err)
	}
	return out, nil
}

// checkJSON refuses a config file's data that is not JSON, saying how to
// read a Caddyfile instead.
func checkJSON(file string, data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("%s is not valid JSON (%v); if it is a Caddyfile, pass --adapter caddyfile or name it Caddyfile or *.caddyfile", file, err)
	}
	return nil
}

// caddyfileFiles lists the files a Caddyfile config is read from: itself
// and every file it imports, and the directories its import globs search
// (followImports); none for a JSON config.
func caddyfileFiles(configFile, adapterName string) (files, globs []string, err error) {
	file, adapterName, err := chooseAdapter(configFile, adapterName)
	if err != nil || adapterName != "caddyfile" {
		return nil, nil, err
	}
	// Caddy's parser opens what the config imports, as whoever runs this
	// (root, for an app's account's pieces): the imports are followed
	// first, so that a FIFO or a device put where one points cannot hang it
	if files, globs, err = followImports(abs(file)); err != nil {
		return nil, nil, err
	}
	data, err := readPiece(file)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the config: %w", err)
	}
	blocks, err := caddyfile.Parse(file, data)
	if err != nil {
		return nil, nil, fmt.Errorf("adapting %s: %w", file, err)
	}
	// and what the parser imported through a snippet's arguments
	add := func(f string) {
		if f != "" && !slices.Contains(files, abs(f)) {
			files = append(files, abs(f))
		}
	}
	for _, b := range blocks {
		for _, seg := range b.Segments {
			for _, tok := range seg {
				add(tok.File)
			}
		}
		for _, k := range b.Keys {
			add(k.File)
		}
	}
	return files, globs, nil
}

// followImports lists file and what it imports, and what those import,
// as Caddy's parser resolves an import (a path relative to the importing
// file's directory, or a glob; a bare name that is no file beside it is a
// snippet's), whether it brings anything today or not: a file not there
// yet, or a glob that matches nothing, adds to the config at the next
// reload whoever may write there. Files are listed in files, each glob's
// directory up to its first glob character in globs. A file found is read
// as readPiece does, and an import of a FIFO, a socket or a device is
// refused, saying which file imports it. Environment placeholders
// ({$VAR}, {$VAR:default}) are replaced first, as the parser does with
// this process's environment; an import path with a placeholder left (a
// snippet's {args[0]}, which the parser fills in where the snippet is
// used) is refused: what it opens cannot be known before the parser opens
// it. A directory is listed, not followed (the parser refuses it without
// reading), and so is more than maxImportEntries files in all.
func followImports(file string) (files, globs []string, err error) {
	files = []string{file}
	for i := 0; i < len(files); i++ {
		if i == maxImportEntries {
			return nil, nil, fmt.Errorf("%s imports more than %d files: not checked further; import fewer", file, maxImportEntries)
		}
		f := files[i]
		if info, err := os.Stat(f); i > 0 && (err != nil || info.IsDir()) {
			continue
		}
		text, err := readPiece(f)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the config: %w", err)
		}
		tokens, err := caddyfile.Tokenize(expandEnv(text), f)
		if err != nil {
			continue // the parser says what is wrong
		}
		for j := 0; j+1 < len(tokens); j++ {
			if tokens[j].Text != "import" || tokens[j+1].Line != tokens[j].Line {
				continue
			}
			pattern := tokens[j+1].Text
			if strings.Contains(pattern, "{") {
				return nil, nil, fmt.Errorf("%s imports %q, a path with a placeholder Caddy's parser fills in (a snippet's arguments) as it opens the file: what it opens cannot be checked before; write the path itself", f, pattern)
			}
			bare := !strings.Contains(pattern, "/") // a snippet's name, or a file beside
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join(filepath.Dir(f), pattern)
			}
			// every import path is a glob pattern to the parser, and Go's
			// reads a backslash as an escape (`/dev/\zero` is /dev/zero)
			wild := strings.IndexAny(pattern, `*?[\`)
			if wild >= 0 {
				if prefix := filepath.Dir(pattern[:wild] + "x"); !slices.Contains(globs, prefix) {
					globs = append(globs, prefix)
				}
			}
			if strings.Count(pattern, "*") > 1 || strings.Count(pattern, "?") > 1 || strings.Contains(pattern, "[") && strings.Contains(pattern, "]") {
				continue // the parser refuses the pattern before it globs (a glob over many directories would take long)
			}
			matches, err := filepath.Glob(pattern)
			if err != nil {
				continue // the parser refuses the pattern
			}
			if strings.HasPrefix(filepath.Base(pattern), "*") {
				// the parser skips hidden files a leading * matches
				matches = slices.DeleteFunc(matches, func(m string) bool { return strings.HasPrefix(filepath.Base(m), ".") })
			}
			if len(matches) == 0 && wild < 0 {
				if bare {
					continue // a snippet's
				}
				matches = []string{pattern} // a file not there yet (read at the next reload)
			}
			for _, m := range matches {
				info, err := os.Stat(m)
				switch {
				case err == nil && info.IsDir() && m != pattern:
					continue // a directory a glob matched
				case err == nil && !info.IsDir() && !info.Mode().IsRegular():
					return nil, nil, fmt.Errorf("%s imports %s, which is %s, not a Caddyfile: reading it would hang or never end; remove it, or fix the import", f, m, fileKind(info.Mode()))
				}
				if m = abs(m); !slices.Contains(files, m) {
					files = append(files, m)
				}
			}
		}
	}
	return files, globs, nil
}

// envImports refuses, for the unit, an import path made of environment
// placeholders in files: the unit's Caddy takes its environment from its
// EnvironmentFile, not from the shell of the command that checks what the
// config imports (the files a glob there reaches, say).
func envImports(files []string) error {
	for _, f := range files {
		text, err := readPiece(f)
		if err != nil {
			continue // (listed, not there yet)
		}
		tokens, err := caddyfile.Tokenize(text, f)
		if err != nil {
			continue
		}
		for j := 0; j+1 < len(tokens); j++ {
			if tokens[j].Text == "import" && tokens[j+1].Line == tokens[j].Line && strings.Contains(tokens[j+1].Text, "{$") {
				return fmt.Errorf("%s imports %q, a path made of environment variables: the unit's Caddy takes them from its environment file, not from this shell, so what it would import cannot be checked here; write the path itself", f, tokens[j+1].Text)
			}
		}
	}
	return nil
}

// expandEnv replaces a Caddyfile's environment placeholders as Caddy's
// parser does before it reads the tokens: {$NAME} becomes the variable's
// value, {$NAME:default} the default when the variable is not set (set
// but empty, it is empty), and the text is read on after each value (a
// value is not expanded again).
func expandEnv(text []byte) []byte {
	var out []byte
	for {
		begin := bytes.Index(text, []byte("{$"))
		if begin < 0 {
			return append(out, text...)
		}
		end := bytes.IndexByte(text[begin+2:], '}')
		if end < 0 {
			return append(out, text...)
		}
		spec := string(text[begin+2 : begin+2+end])
		out = append(out, text[:begin]...)
		if spec == "" {
			out = append(out, "{$}"...)
		} else {
			name, def, hasDefault := strings.Cut(spec, ":")
			value, set := os.LookupEnv(name)
			if !set && hasDefault {
				value = def
			}
			out = append(out, value...)
		}
		text = text[begin+2+end+1:]
	}
}

// maxPiece bounds a file a Caddyfile is read from.
const maxPiece = 16 << 20

// readPiece reads a file a Caddyfile is read from: a regular file (a FIFO
// or a device would hang the reader, never end, or act when opened, so
// regularfile opens nothing else) of at most maxPiece.
func readPiece(path string) ([]byte, error) {
	f, err := regularfile.Open(path)
	if notRegular := (*regularfile.NotRegularError)(nil); errors.As(err, &notRegular) {
		kind := notRegular.Kind
		if info, err := os.Stat(path); err == nil && !info.Mode().IsRegular() {
			kind = fileKind(info.Mode()) // (the commands' shorter words)
		}
		return nil, fmt.Errorf("%s is %s, not a regular file: remove it, or import the file it should be", path, kind)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPiece+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPiece {
		return nil, fmt.Errorf("%s is larger than %d MiB: not a Caddyfile", path, maxPiece>>20)
	}
	return data, nil
}

// fileKind names what a non-regular file is, for messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	}
	return "not a regular file"
}

// chooseAdapter is Caddy's rule (cmd.LoadConfig) for which file and
// adapter a command uses: without --config, ./Caddyfile with the caddyfile
// adapter; a file whose name starts with "caddyfile" or ends in
// ".caddyfile" (any case), unless it ends in ".json", is a Caddyfile;
// anything else is JSON unless --adapter says otherwise.
func chooseAdapter(configFile, adapterName string) (string, string, error) {
	if configFile == "" {
		if adapterName != "" {
			return "", "", fmt.Errorf("--adapter needs --config: the file to adapt")
		}
		if _, err := os.Stat("Caddyfile"); err != nil {
			return "", "", fmt.Errorf("no config: pass --config <your Caddyfile>, or run this in the directory of a file named Caddyfile")
		}
		return "Caddyfile", "caddyfile", nil
	}
	if adapterName == "" {
		base := strings.ToLower(filepath.Base(configFile))
		if filepath.Ext(base) != ".json" && (strings.HasPrefix(base, "caddyfile") || strings.HasSuffix(base, ".caddyfile")) {
			adapterName = "caddyfile"
		}
	}
	return configFile, adapterName, nil
}

// appRef is an app found in a config's routes.
type appRef struct {
	name, dir string
	user      string // the block's `user` ("": the apps' account)
	kind      string // "python" or "process"
	source    string // the module or program the name comes from
	named     bool   // the block gives the name (not its source)
	relative  string // dir as the config wrote it, when relative ("": absolute)
	// stopTimeout is how long it may take to stop at Caddy's exit: a
	// process upstream's stop_timeout; a Python app's, for what is still
	// in flight then (a WebSocket), and its workers' own stop
	stopTimeout time.Duration
}

// scanRoutes collects the host names of JSON routes and the apps (wsgi
// and asgi handlers, process upstreams) under them.
func scanRoutes(routes []json.RawMessage) (hosts []string, apps []appRef) {
	WalkHandlers(routes, nil, func(h map[string]json.RawMessage, routeHosts []string) {
		for _, host := range routeHosts {
			if !slices.Contains(hosts, host) {
				hosts = append(hosts, host)
			}
		}
		var kind string
		_ = json.Unmarshal(h["handler"], &kind)
		switch kind {
		case "wsgi", "asgi":
			app := appFrom(h["name"], "python", h["app"], h["dir"], h["user"])
			var stop caddy.Duration
			_ = json.Unmarshal(h["stop_timeout"], &stop)
			app.stopTimeout = time.Duration(stop)
			if app.stopTimeout <= 0 {
				app.stopTimeout = defaultAppStopTimeout
			}
			app.stopTimeout += appWorkersStop
			apps = append(apps, app)
		case "reverse_proxy":
			var dyn map[string]json.RawMessage
			if json.Unmarshal(h["dynamic_upstreams"], &dyn) == nil {
				var cmd []string
				_ = json.Unmarshal(dyn["command"], &cmd)
				if len(cmd) > 0 {
					b, _ := json.Marshal(cmd[0])
					app := appFrom(dyn["name"], "process", b, dyn["dir"], dyn["user"])
					var stop caddy.Duration
					_ = json.Unmarshal(dyn["stop_timeout"], &stop)
					app.stopTimeout = time.Duration(stop)
					if app.stopTimeout <= 0 { // as the process upstream takes it
						app.stopTimeout = DefaultProcessStopTimeout
					}
					apps = append(apps, app)
				}
			}
		}
	})
	return hosts, apps
}

func appFrom(nameRaw json.RawMessage, kind string, sourceRaw, dirRaw, userRaw json.RawMessage) appRef {
	var name, source, dir, user string
	json.Unmarshal(userRaw, &user)
	json.Unmarshal(nameRaw, &name)
	json.Unmarshal(sourceRaw, &source)
	json.Unmarshal(dirRaw, &dir)
	named := name != ""
	name = AppName(name, kind, source)
	relative := ""
	if dir != "" && !filepath.IsAbs(dir) {
		relative = dir
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	return appRef{name: name, kind: kind, source: source, named: named, dir: dir, relative: relative, user: user}
}

// check refuses what the unit cannot print as it is, as Provision
// refuses the name (a Python app's, or a process upstream's when its block
// gives one): it goes into the unit (a line break there would start a
// line of the unit's, run as root), the user into shell lines. A process
// upstream named after its program is shown as unitName writes it.
func (a appRef) check() error {
	if a.kind != "process" || a.named {
		kind := "app"
		if a.kind == "process" {
			kind = "process"
		}
		if err := names.Check(kind, a.name, "name <name>"); err != nil {
			if !a.named {
				return fmt.Errorf("%w: it comes from %s; give the app one with `name <name>` in its block", err, a.source)
			}
			return err
		}
	}
	return checkAccount("app "+unitName(a.name), a.user)
}

// unitName is an app's name as the unit shows it: a name Provision takes
// as it is, other characters (of a process upstream's program) as '_'.
func unitName(name string) string {
	if names.Check("app", name, "") == nil {
		return name
	}
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r == '.' || r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return '_'
	}, name)
}

// checkAccount is names.CheckAccount for a block's `user` ("": none).
func checkAccount(block, user string) error {
	if user == "" {
		return nil
	}
	return names.CheckAccount(block+": user", user)
}

// lanAddress is this machine's address on its local network, for the
// router's port forwarding: the first private IPv4 of an interface that is
// up, else the first non-loopback one.
func lanAddress() string {
	ifaces, _ := net.Interfaces()
	var fallback string
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			prefix, err := netip.ParsePrefix(a.String())
			if err != nil || !prefix.Addr().Is4() {
				continue
			}
			if prefix.Addr().IsPrivate() {
				return prefix.Addr().String()
			}
			if fallback == "" {
				fallback = prefix.Addr().String()
			}
		}
	}
	if fallback == "" {
		return "<this machine's LAN address>"
	}
	return fallback
}

// deploymentCommand is a command that reads the config named by its
// --config and --adapter flags and runs run on the deployment it
// describes; configHelp explains --config.
func deploymentCommand(use, short, configHelp string, run func(cmd *cobra.Command, d *deployment, configFile, adapter string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
	}
	configFile := cmd.Flags().String("config", "", configHelp)
	adapter := cmd.Flags().String("adapter", "", "the config adapter")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		d, err := loadDeployment(*configFile, *adapter)
		if err != nil {
			return err
		}
		return run(cmd, d, *configFile, *adapter)
	}
	return cmd
}

func portsCommand() *cobra.Command {
	return deploymentCommand("ports --config <file>",
		"Prints the router port forwarding and firewall rules the config needs (changes nothing)",
		"the config (a Caddyfile or JSON)",
		func(cmd *cobra.Command, d *deployment, _, _ string) error {
			return printPorts(cmd.OutOrStdout(), d, lanAddress(), netinfo.Listeners())
		})
}

// printPorts writes the forwarding rules, firewall commands and conflicts.
func printPorts(out io.Writer, d *deployment, lan string, listening []netinfo.Listener) error {
	// host names come from the config, which may quote anything: no escape
	// sequence reaches the terminal (maybe root's), and each stays on its
	// line, so that none can pass for a command to paste
	out = terminalWriter{out}
	var public, local []sitePort
	for _, p := range d.ports {
		if ip := net.ParseIP(p.host); ip != nil && ip.IsLoopback() || p.host == "localhost" {
			local = append(local, p)
		} else {
			public = append(public, p)
		}
	}
	fmt.Fprintf(out, "Router port forwarding (to this machine, %s):\n", lan)
	if len(public) == 0 {
		fmt.Fprintln(out, "  none: every site listens on loopback only")
	}
	var tcp, udp []string
	for _, p := range public {
		sites := printable(strings.Join(p.siteName, ", "))
		if sites == "" {
			sites = "any host name"
		}
		fmt.Fprintf(out, "  external port %d TCP -> %s:%d TCP   (%s)\n", p.port, lan, p.port, sites)
		tcp = append(tcp, strconv.Itoa(p.port))
		if p.https {
			fmt.Fprintf(out, "  external port %d UDP -> %s:%d UDP   (HTTP/3 for %s)\n", p.port, lan, p.port, sites)
			udp = append(udp, strconv.Itoa(p.port))
		}
	}
	if len(tcp) > 0 {
		fmt.Fprintln(out, "\nFirewall, ufw:")
		for _, p := range tcp {
			fmt.Fprintf(out, "  sudo ufw allow %s/tcp\n", p)
		}
		for _, p := range udp {
			fmt.Fprintf(out, "  sudo ufw allow %s/udp\n", p)
		}
		fmt.Fprintln(out, "\nFirewall, nftables (in a table inet filter with an input chain):")
		fmt.Fprintf(out, "  sudo nft add rule inet filter input tcp dport { %s } accept\n", strings.Join(tcp, ", "))
		if len(udp) > 0 {
			fmt.Fprintf(out, "  sudo nft add rule inet filter input udp dport { %s } accept\n", strings.Join(udp, ", "))
		}
	}
	if len(local) > 0 {
		fmt.Fprintln(out, "\nNot forwarded (loopback only):")
		for _, p := range local {
			fmt.Fprintf(out, "  %s\n", printable(net.JoinHostPort(p.host, strconv.Itoa(p.port))))
		}
	}
	for _, p := range d.ports {
		if p.redirect {
			fmt.Fprintf(out, "\nPort %d is only automatic HTTPS's redirect server (http:// to https://). If you do not forward it,\n"+
				"add `auto_https disable_redirects` to the global options: Caddy then does not bind it (a privileged port,\n"+
				"which `caddy hearth systemd` would otherwise grant CAP_NET_BIND_SERVICE for).\n", p.port)
		}
	}
	if len(d.certs) > 0 {
		fmt.Fprintln(out, "\nCertificates (ACME challenge per HTTPS site, unless the site sets its own tls):")
		for _, c := range d.certs {
			fmt.Fprintf(out, "  %s:%d  %s\n", printable(c.host), c.port, printable(c.how))
		}
	}
	var conflicts []string
	for _, p := range d.ports {
		for _, l := range listening {
			if l.Port != p.port {
				continue
			}
			who := l.Process
			if who == "" {
				who = "a process"
			}
			note := ""
			if strings.HasPrefix(who, "caddy ") {
				note = " (Caddy: this config may already be running)"
			}
			conflicts = append(conflicts, fmt.Sprintf("  port %d: %s already listens on %s%s", p.port, who, net.JoinHostPort(l.Addr.String(), strconv.Itoa(l.Port)), note))
		}
	}
	if len(conflicts) > 0 {
		fmt.Fprintln(out, "\nPorts already in use:")
		fmt.Fprintln(out, strings.Join(slices.Compact(conflicts), "\n"))
	}
	return nil
}

func systemdCommand() *cobra.Command {
	var user, appsUser, binary, dataDir, envFile *string
	cmd := deploymentCommand("systemd --config <file>",
		"Prints a hardened systemd unit running Caddy (and every app) for the config (changes nothing)",
		"the config (a Caddyfile or JSON), as the unit will use it",
		func(cmd *cobra.Command, d *deployment, configFile, adapter string) error {
			bin := *binary
			if bin == "" {
				var err error
				if bin, err = os.Executable(); err != nil {
					return err
				}
			}
			config, err := filepath.Abs(configFile)
			if err != nil {
				return err
			}
			for _, f := range []struct{ flag, account string }{{"--user", *user}, {"--apps-user", *appsUser}} {
				if err := names.CheckAccount(f.flag, f.account); err != nil {
					return err
				}
			}
			if *user == *appsUser || *appsUser == "" || *appsUser == "root" {
				return fmt.Errorf("--apps-user %q: the apps need an account of their own, neither Caddy's (%s) nor root", *appsUser, *user)
			}
			var unit bytes.Buffer
			if err := writeUnit(&unit, d, unitOptions{binary: bin, config: config, adapter: adapter, user: *user,
				appsUser: *appsUser, dataDir: filepath.Clean(*dataDir), envFile: *envFile}); err != nil {
				return err
			}
			// the unit's Caddy may start processes as any account, root's
			// too: whoever may rewrite the config may run anything as root
			// (after writeUnit's checks, whose errors say more of an app's
			// directory)
			if why := configWrittenByOthers(configFile, adapter); why != nil {
				return fmt.Errorf("--config %s: an account other than root (and the one running this command; under sudo, root) could have written it or could rewrite it (%s), and the unit's Caddy, which may start processes as any account, root too, would run what it says: whoever has that account could run anything as root. Copy it where only root writes (`sudo install -D -m 0644 -o root -g root %s /etc/caddy/Caddyfile`, with what it imports) and pass --config /etc/caddy/Caddyfile",
					printable(configFile), printable(why.Error()), printable(config))
			}
			// so the binary the unit runs, and the environment file it
			// reads (which could set CADDY_ADMIN or HEARTH_DEFAULT_USER)
			for _, f := range []struct{ flag, path, install string }{
				{"--binary", bin, "sudo install -D -m 0755 -o root -g root " + printable(bin) + " /usr/local/bin/caddy` and pass --binary /usr/local/bin/caddy"},
				{"--env-file", *envFile, "sudo chown root:root " + printable(*envFile) + " && sudo chmod 0600 " + printable(*envFile) + "`, in a directory only root writes"},
			} {
				if _, err := os.Lstat(f.path); err != nil {
					continue // (the steps make the environment file as root)
				}
				if why := safedir.TrustedFile(f.path); why != nil {
					return fmt.Errorf("%s %s: an account other than root (and the one running this command; under sudo, root) could rewrite it (%s), and the unit runs Caddy from it with the right to start processes as any account, root too: `%s",
						f.flag, printable(f.path), printable(why.Error()), f.install)
				}
			}
			_, err = unit.WriteTo(cmd.OutOrStdout())
			return err
		})
	user = cmd.Flags().String("user", "caddy", "the user Caddy runs as (create it with `useradd --system --home /var/lib/caddy caddy`)")
	appsUser = cmd.Flags().String("apps-user", "hearth-apps", "the account of every app whose block sets no `user` (HEARTH_DEFAULT_USER)")
	binary = cmd.Flags().String("binary", "", "the caddy binary (default: this one)")
	dataDir = cmd.Flags().String("data-dir", UnitDataDir, "Caddy's data directory (certificates, Hearth's secrets); its last element must be caddy")
	envFile = cmd.Flags().String("env-file", "/etc/caddy/caddy.env", "the file of provider credentials (KEY=value lines, mode 0600) the unit passes to Caddy's environment")
	return cmd
}

// UnitDataDir is the data directory of the unit's Caddy by default
// (systemd's StateDirectory, owned by Caddy's user): XDG_DATA_HOME=/var/lib.
const UnitDataDir = "/var/lib/caddy"

// unitOptions are the deployment choices of the unit.
type unitOptions struct{ binary, config, adapter, user, appsUser, dataDir, envFile string }

// unitCapabilities are the capabilities Caddy keeps: CAP_SETUID and
// CAP_SETGID start the apps as their account, CAP_KILL signals them,
// CAP_NET_BIND_SERVICE binds ports below 1024 (only when the config has
// one). Hearth clears them from the inheritable and ambient sets at start,
// so that no child receives any.
func unitCapabilities(d *deployment) string {
	caps := "CAP_SETUID CAP_SETGID CAP_KILL"
	for _, p := range d.ports {
		if p.port < 1024 {
			return caps + " CAP_NET_BIND_SERVICE"
		}
	}
	return caps
}

// caddysOwn, as a directory's owner, is Caddy's own account.
const caddysOwn = "\x00caddy"

// own records that dir is written by the account user ("": the apps';
// caddysOwn: Caddy's).
func (d *deployment) own(dir, user string) {
	if _, ok := d.owners[dir]; !ok {
		d.owners[dir] = user
	}
}

// ownershipSteps are the commands, as unit comments, that give each
// directory the config writes in to the account that writes there: a
// block's own `user`, or the apps' account. A directory no app's account
// should own (a home, a system directory, one holding other directories
// of the config, Caddy's data) gets none, with the reason.
func (d *deployment) ownershipSteps(o unitOptions) string {
	if len(d.dirs)+len(d.extraDirs) == 0 {
		return "#   (no app directory in the config)\n"
	}
	all := d.allDirs()
	var b strings.Builder
	var kept []string
	step := func(dirs []string, command, note string) {
		byAccount := map[string][]string{}
		for _, dir := range dirs {
			if why := d.riskyToGive(dir, o.dataDir, d.accountOf(dir, o)); why != "" {
				kept = append(kept, dir+" ("+why+")")
				continue
			}
			account := d.accountOf(dir, o)
			byAccount[account] = append(byAccount[account], dir)
		}
		for _, account := range slices.Sorted(maps.Keys(byAccount)) {
			line := command
			if account == o.user { // Caddy's own (the backups'): the apps, in its group, list nothing there
				line = strings.Replace(line, "-m 0750", "-m 0700", 1)
			}
			fmt.Fprintf(&b, line, account, o.user, strings.Join(byAccount[account], " "), note)
		}
	}
	step(d.dirs, "#   sudo chown -R %s:%s %s%s\n", "   (or only what the apps write: databases, media, static files)")
	if len(d.extraDirs) > 0 {
		b.WriteString("# and the backups', services' and jobs' directories:\n")
		// install -d follows a link where the directory should be: one
		// inside another directory of the config (an app's account owns
		// that) is made by its own account, which a link gives nothing
		var outside []string
		for _, dir := range d.extraDirs {
			if holder := slices.IndexFunc(all, func(o string) bool { return o != dir && inside(dir, o) }); holder >= 0 && d.riskyToGive(dir, o.dataDir, d.accountOf(dir, o)) == "" {
				fmt.Fprintf(&b, "#   sudo -u %s mkdir -p -m 0750 %s   (inside %s: made by the account that writes there)\n", d.accountOf(dir, o), dir, all[holder])
				continue
			}
			outside = append(outside, dir)
		}
		step(outside, "#   sudo install -d -o %s -g %s -m 0750 %s%s\n", "")
	}
	for _, k := range kept {
		fmt.Fprintf(&b, "# Not to be given to an app's account: %s; give the apps only the directories they write.\n", k)
	}
	for _, m := range d.misplaced {
		fmt.Fprintf(&b, "# Change the config: %s.\n", m)
	}
	return b.String()
}

// allDirs are the directories the config writes in: the apps', then the
// backups', services' and jobs'.
func (d *deployment) allDirs() []string { return append(slices.Clone(d.dirs), d.extraDirs...) }

// accountOf is the account that writes in dir.
func (d *deployment) accountOf(dir string, o unitOptions) string {
	switch owner := d.owners[dir]; owner {
	case "":
		return o.appsUser
	case caddysOwn:
		return o.user
	default:
		return owner
	}
}

// riskyToGive says why dir must not be given to an app's account, or "":
// whoever owns it can replace what is in it, for everyone who uses it.
// account is the one the steps would give it to.
func (d *deployment) riskyToGive(dir, dataDir, account string) string {
	clean := filepath.Clean(dir)
	if clean == "/" || strings.Count(clean, "/") < 2 {
		return "a top-level directory"
	}
	for _, system := range []string{"/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/dev", "/proc", "/sys", "/run", "/root",
		"/var/spool", "/var/mail", "/var/log", "/var/cache", "/var/lib/dpkg", "/var/lib/apt", "/var/lib/systemd", "/var/lib/private", "/var/lib/sudo"} {
		if inside(clean, system) {
			return "a system directory"
		}
	}
	if filepath.Dir(clean) == "/home" {
		return "a home directory"
	}
	if rest, ok := strings.CutPrefix(clean, "/home/"); ok && strings.Contains(rest, "/.") {
		return "a hidden directory of a home (its owner's settings and keys: .ssh, .gnupg, .config)"
	}
	if owner := otherOwner(clean, account); owner != "" {
		return "it belongs to " + owner + ", a system account (a service's data): give the app a directory of its own"
	}
	if filepath.Dir(clean) == "/var" { // /var/backups, /var/cache, /var/tmp, /var/www…: root's jobs write there
		return "a system directory"
	}
	if home, err := os.UserHomeDir(); err == nil && clean == filepath.Clean(home) {
		return "your home directory"
	}
	if inside(dataDir, clean) || inside(clean, dataDir) {
		return "Caddy's data directory, or one holding it"
	}
	for _, other := range d.allDirs() {
		if other != dir && inside(other, clean) && d.owners[other] != d.owners[dir] {
			return "it holds " + other + ", which another account writes"
		}
	}
	return ""
}

// otherOwner names the owner of dir when it exists and belongs to a
// system account (a uid under 1000, postgres or www-data, or nobody) other than
// account (the one it would be given to) and the operator (who runs this
// command, or sudo's caller): a service's data. A person's account's
// directory (1000 and above) may be the operator's project, given from a
// root login without sudo: "" for it, as for root's and the others.
func otherOwner(dir, account string) string {
	info, err := os.Stat(dir)
	if err != nil {
		return ""
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 || st.Uid >= firstPersonUID && st.Uid <= lastPersonUID || int(st.Uid) == os.Geteuid() || strconv.FormatUint(uint64(st.Uid), 10) == os.Getenv("SUDO_UID") {
		return ""
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); err == nil && u.Username == account {
		return ""
	}
	return safedir.Owner(st.Uid)
}

// firstPersonUID and lastPersonUID bound people's accounts (Debian's
// UID_MIN and UID_MAX); outside are the system's and services' (nobody is
// 65534).
const firstPersonUID, lastPersonUID = 1000, 60000

// inside reports whether path is dir or under it.
func inside(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unitSafePath refuses a path the unit (where spaces separate paths, and
// % and $ are expanded) or the shell commands printed with it would need
// quoted: letters, digits and / . _ - + , : @ = only. Quoting each for
// systemd and the shell is easy to get wrong; a path that needs none
// cannot be split, expanded, or end a comment line.
func unitSafePath(path string) error {
	for _, r := range path {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("/._-+,:@=", r) {
			return fmt.Errorf("it holds %q, which the unit and the commands printed with it would need quoted (systemd splits paths at spaces and expands %% and $): rename it to letters, digits and / . _ - + , : @ =, or write the unit by hand", r)
		}
	}
	return nil
}

func abs(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return path
}

// writeUnit writes the systemd unit.
func writeUnit(out io.Writer, d *deployment, o unitOptions) error {
	if d.unprintable != nil {
		return d.unprintable
	}
	adapterFlag := ""
	if o.adapter != "" {
		adapterFlag = " --adapter " + o.adapter
	}
	shown := make([]string, len(d.apps))
	for i, a := range d.apps {
		shown[i] = unitName(a)
	}
	apps := strings.Join(shown, ", ")
	if apps == "" {
		apps = "no Python apps"
	}
	if filepath.Base(o.dataDir) != "caddy" {
		return fmt.Errorf("--data-dir %s: Caddy keeps its data in $XDG_DATA_HOME/caddy, so the directory must be named caddy", o.dataDir)
	}
	if len(d.relativeDirs) > 0 {
		dir := d.relativeDirs[0]
		return fmt.Errorf("the config names the directory %q relative to Caddy's working directory, which under systemd is /: Caddy would use %s, not the %s it means here; write the absolute path in the config", dir, filepath.Join("/", dir), abs(dir))
	}
	for _, f := range []struct{ what, path string }{{"--config", o.config}, {"--binary", o.binary}, {"--data-dir", o.dataDir}, {"--env-file", o.envFile}} {
		if err := unitSafePath(f.path); err != nil {
			return fmt.Errorf("%s %s: %w", f.what, f.path, err)
		}
	}
	for _, dir := range d.allDirs() {
		if err := unitSafePath(dir); err != nil {
			return fmt.Errorf("the config's directory %q: %w", dir, err)
		}
	}
	// the unit has the operator give the apps' directories to the apps'
	// account: a config or binary in one, an app could rewrite, and run
	// anything as any account Caddy may switch to at the next reload
	appDirs := d.allDirs()
	for _, prefix := range d.importGlobs {
		// a glob reaches into any directory under where it searches from
		for _, dir := range appDirs {
			if inside(dir, prefix) || inside(prefix, dir) {
				return fmt.Errorf("the config imports %s*…, a glob that can reach into %s, which the unit has the apps' account (%s) own: whatever an app puts there would run as any account Caddy may switch to at the next reload or start; keep what the Caddyfile imports where only root writes (/etc/caddy)",
					prefix+string(filepath.Separator), dir, o.appsUser)
			}
		}
	}
	for _, imported := range d.configFiles {
		if dir := ServedRootOf(imported, appDirs); dir != "" && imported != abs(o.config) {
			return fmt.Errorf("the config imports %s, which is inside %s, which the unit has the apps' account (%s) own: an app could rewrite it and run anything as any account Caddy may switch to at the next reload or start; keep what the Caddyfile imports where only root writes (/etc/caddy)",
				imported, dir, o.appsUser)
		}
	}
	for _, f := range []struct{ flag, path, fix string }{
		{"--config", o.config, "/etc/caddy/Caddyfile"},
		{"--binary", o.binary, "/usr/local/bin/caddy"},
	} {
		if dir := ServedRootOf(f.path, appDirs); dir != "" {
			return fmt.Errorf("%s %s is inside %s, which the unit has the apps' account (%s) own: an app could rewrite it and run anything as any account Caddy may switch to at the next reload or start; copy it where only root writes (`sudo install -D -m 0755 -o root -g root %s %s`) and pass %s %s",
				f.flag, f.path, dir, o.appsUser, f.path, f.fix, f.flag, f.fix)
		}
	}
	// the data directory: systemd creates /var/lib/caddy (StateDirectory,
	// mode 0700, owned by Caddy's user); another one is the operator's
	state := "StateDirectory=caddy\nStateDirectoryMode=0700\n"
	rw := d.dirs
	if o.dataDir != UnitDataDir {
		state = ""
		rw = append([]string{o.dataDir}, rw...)
	}
	for _, dir := range d.extraDirs {
		if !slices.Contains(rw, dir) {
			rw = append(rw, "-"+dir) // "-": the unit starts even before the directory exists
		}
	}
	rwLine := ""
	if len(rw) > 0 {
		rwLine = "ReadWritePaths=" + strings.Join(rw, " ") + "\n"
	}
	chown := d.ownershipSteps(o)
	caps := unitCapabilities(d)
	var unit bytes.Buffer
	fmt.Fprintf(&unit, `# Generated by "caddy hearth systemd" for %[1]s.
#
# Accounts. Caddy runs as %[3]s; every app whose block sets no `+"`user`"+` runs as
# %[9]s with group %[3]s (HEARTH_DEFAULT_USER), so that Caddy can serve the
# files apps write (their umask is 0027), yet they can neither open Caddy's
# admin socket nor read its data directory %[4]s (certificates' keys, the
# apps' secrets): those are 0700, and Caddy's own files 0600 (UMask=0077).
# Apps that share %[9]s are not kept apart (each can read the others'
# environment, files and databases): give an app its own `+"`user`"+` for that.
#   sudo useradd --system --home-dir %[4]s --no-create-home --shell /usr/sbin/nologin %[3]s
#   sudo useradd --system --no-create-home --shell /usr/sbin/nologin %[9]s
# The apps' directories must be readable by %[9]s, and writable where they write:
%[12]s#
# Credentials (DDNS TSIG keys, DNS provider tokens) go in %[10]s, KEY=value
# lines readable by root only; systemd reads it before starting Caddy, which
# uses them as {env.KEY} in the Caddyfile. Nothing prints them:
#   sudo install -d -m 0755 %[11]s
#   sudo test -e %[10]s || sudo install -m 0600 -o root -g root /dev/null %[10]s
#   sudoedit %[10]s      # e.g. DDNS_TSIG_KEY=...
#
# The admin API is the unix socket /run/caddy/admin.sock (directory mode 0700):
# `+"`caddy reload`"+` and `+"`caddy hearth status`"+` run as root or %[3]s find it without flags.
#
# Commands that run an app's code (manage, exec, check) run as root, with
# Caddy's data directory, so that the code gets the secret key Caddy serves
# the app with (they handle the keys as %[3]s), e.g.:
#   sudo env XDG_DATA_HOME=%[5]s caddy hearth manage --config %[1]s --user %[9]s:%[3]s <app> migrate
#
# Install:
#   sudo cp caddy.service /etc/systemd/system/caddy.service
#   sudo systemctl daemon-reload && sudo systemctl enable --now caddy
[Unit]
Description=Caddy with Hearth (%[2]s)
Documentation=https://caddyserver.com/docs/
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
User=%[3]s
Group=%[3]s
Environment=XDG_DATA_HOME=%[5]s XDG_CONFIG_HOME=%[6]s
# WebSockets over HTTP/2 (RFC 8441 extended CONNECT)
Environment=GODEBUG=http2xconnect=1
Environment="CADDY_ADMIN=unix//run/caddy/admin.sock|0600"
Environment=HEARTH_DEFAULT_USER=%[9]s:%[3]s
EnvironmentFile=-%[10]s
# a reload binds new sockets and closes the old ones: the kernel hands the
# connections waiting on the old ones to the new instead of resetting them
# (Linux 5.14 and later; the setting is the network namespace's, harmless to others)
ExecStartPre=-+/bin/sh -c 'echo 1 > /proc/sys/net/ipv4/tcp_migrate_req'
ExecStart=%[7]s run --config %[1]s%[8]s
ExecReload=%[7]s reload --config %[1]s%[8]s --force
TimeoutStopSec=%[16]s
# the stop signal to Caddy alone: it drains the apps and stops every process
# it started its own way (stop_signal, stop_timeout; the apps, services and
# process upstreams one after the other: 30s and their stop_timeouts, an
# app's 10s more, at least 60s);
# whatever is left at the timeout is killed
KillMode=mixed
Restart=always
RestartSec=2s
# an app the kernel kills for memory is Hearth's to restart; systemd's own
# default (stop) would take every site down with it, on an app's demand
OOMPolicy=continue
LimitNOFILE=1048576
RuntimeDirectory=caddy
RuntimeDirectoryMode=0700
# kept across stops and restarts (until a reboot), as the admin socket's
# directory that caddy reload and caddy hearth look for
RuntimeDirectoryPreserve=yes
%[13]sUMask=0077
# CAP_SETUID and CAP_SETGID start the apps as their account, CAP_KILL signals
# them, CAP_NET_BIND_SERVICE (when a port is below 1024) binds the ports.
# Caddy clears them from its inheritable and ambient sets at start, so that
# no app, before_start command or process upstream receives any.
AmbientCapabilities=%[14]s
CapabilityBoundingSet=%[14]s
NoNewPrivileges=true
PrivateTmp=true
PrivateDevices=true
DevicePolicy=closed
PrivateMounts=true
ProtectSystem=strict
ProtectHome=read-only
# CAP_SETUID can make uid 0, which reads what root owns by its owner bits
# (no CAP_DAC_OVERRIDE needed): not the system's password hashes and keys
InaccessiblePaths=-/etc/shadow -/etc/gshadow -/etc/ssh -/etc/sudoers -/etc/sudoers.d -/root
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
ProtectProc=invisible
ProcSubset=pid
RestrictSUIDSGID=true
RestrictRealtime=true
RestrictNamespaces=true
LockPersonality=true
RemoveIPC=true
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@resources
# back from @resources: the workers' cpu_policy (SCHED_BATCH); RestrictRealtime=
# and the keeper's RLIMIT_NICE of 0 keep any policy from raising a priority
SystemCallFilter=sched_setscheduler
SystemCallErrorNumber=EPERM
# AF_NETLINK: network interfaces (UPnP and interface IP sources)
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# not set: MemoryDenyWriteExecute (Node's and other JITs need writable code),
# PrivateUsers (the apps' account must exist), IPAddressDeny (a web server)
%[15]s
[Install]
WantedBy=multi-user.target
`, o.config, apps, o.user, o.dataDir, filepath.Dir(o.dataDir), filepath.Join(o.dataDir, "config"), o.binary, adapterFlag,
		o.appsUser, o.envFile, filepath.Dir(o.envFile), chown, state, caps, strings.TrimSuffix(rwLine, "\n"), systemdSeconds(d.unitStopTimeout()))
	if err := checkUnitText(unit.String(), chown, o.config, apps, o.user, o.dataDir, o.binary, adapterFlag, o.appsUser, o.envFile, caps, strings.TrimSuffix(rwLine, "\n")); err != nil {
		return err
	}
	_, err := out.Write(unit.Bytes())
	return err
}

// checkUnitText refuses a unit in which something the config or a flag
// names (checked where it is read, each by its own rule) would still
// start a line of its own: a control character anywhere, a line break in
// one of values (each goes into one line of the unit), or a line of the
// steps (comments) that is not a comment. The unit runs as root what its
// lines say; this is the last look before it is written.
func checkUnitText(unit, steps string, values ...string) error {
	const fix = "rename it to letters, digits and / . _ - (or write the unit by hand)"
	for i, c := range []byte(unit) {
		if c < 0x20 && c != '\n' || c == 0x7f {
			return fmt.Errorf("the unit would hold the control character %q (at byte %d), from a name or path in the config: %s", c, i, fix)
		}
	}
	for _, v := range values {
		if strings.ContainsAny(v, "\n\r") {
			return fmt.Errorf("the unit would hold %q, a name or path with a line break: %s", v, fix)
		}
	}
	for line := range strings.SplitSeq(strings.TrimSuffix(steps, "\n"), "\n") {
		if !strings.HasPrefix(line, "#") {
			return fmt.Errorf("the unit's comments would hold the line %q, from a name or path in the config: %s", line, fix)
		}
	}
	return nil
}

// siteChallenge says how an HTTPS site's certificate is obtained.
type siteChallenge struct {
	host string
	port int
	how  string
}

// challenges tells, for each HTTPS site name, which ACME challenge Caddy
// will use and what that needs forwarded: DNS-01 through the ddns provider
// for its names (when the provider can set TXT records), otherwise
// TLS-ALPN-01 on 443 or HTTP-01 on port 80 — the only ports a CA checks.
func challenges(cfg *ConfigFile, ports []sitePort) []siteChallenge {
	ddnsNames, provider, dnsCapable := map[string]bool{}, "", false
	if dd := cfg.Apps.DDNS; dd != nil {
		provider = dd.Provider.Name
		if mod, err := caddy.GetModule("dns.providers." + provider); err == nil {
			dnsCapable = SolvesDNSChallenge(mod.New())
		}
		dnsCapable = dnsCapable && dd.DNSChallenge != "off"
		for zone, names := range dd.Domains {
			zone = strings.TrimSuffix(strings.ToLower(zone), ".")
			for _, n := range names {
				n = strings.ToLower(n)
				switch {
				case n == "@":
					n = zone
				case strings.HasSuffix(n, "."):
					n = strings.TrimSuffix(n, ".")
				default:
					n += "." + zone
				}
				ddnsNames[n] = true
			}
		}
	}
	httpPort := cfg.Apps.HTTP.HTTPPort
	if httpPort == 0 {
		httpPort = 80
	}
	var out []siteChallenge
	for _, p := range ports {
		if !p.https {
			continue
		}
		for _, h := range p.siteName {
			if net.ParseIP(h) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost") {
				continue // a locally trusted certificate, no CA
			}
			c := siteChallenge{host: h, port: p.port}
			switch {
			case ddnsNames[strings.ToLower(h)] && dnsCapable:
				c.how = fmt.Sprintf("DNS-01 through the ddns provider (%s): no port needs forwarding for it", provider)
			case p.port == 443:
				c.how = fmt.Sprintf("TLS-ALPN-01 on port 443 (forwarded above), or HTTP-01 on port %d", httpPort)
			default:
				c.how = fmt.Sprintf("HTTP-01: forward external port 80 to this machine's port %d (the CA checks ports 80 and 443 only), or add %s to a ddns block whose provider can set TXT records (rfc2136, cloudflare, duckdns)", httpPort, h)
			}
			out = append(out, c)
		}
	}
	return out
}

// SolvesDNSChallenge reports whether a DNS provider module can solve the
// ACME DNS challenge: it creates and deletes records (certmagic's
// DNSProvider) and does not say it cannot (dyndns2 has the methods, to
// refuse with a reason rather than make Caddy panic).
func SolvesDNSChallenge(provider any) bool {
	if _, ok := provider.(certmagic.DNSProvider); !ok {
		return false
	}
	c, ok := provider.(interface{ SolvesDNSChallenge() bool })
	return !ok || c.SolvesDNSChallenge()
}
