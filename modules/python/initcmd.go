package python

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/termsafe"
	"github.com/hearth-dev/hearth/modules/python/engine"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

func init() {
	hearth.RegisterCommand(initCommand)
}

// initCommand is `caddy hearth init [<dir>] [--site <address>]`.
func initCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init [<dir>] [--site <address>]",
		Short: "Writes a Caddyfile for the Django, Flask or FastAPI project in <dir>",
		Long: `Finds the Django, Flask or FastAPI project in <dir> (default: this directory)
and writes <dir>/Caddyfile to serve it: the site (default :2929), a wsgi or
asgi block with the app's module, its dir and an interpreter that imports the
framework (a venv in the project first), settings overlay, migrate and
collectstatic before start and the static files route for Django, and the
guard in enforce mode. It never writes over an existing Caddyfile and never
edits the project's code; it adds .env, db.sqlite3 and staticfiles/ to
.gitignore when they are missing, and prints the next steps.`,
		Args: cobra.MaximumNArgs(1),
	}
	site := cmd.Flags().String("site", ":2929", "the site address, like home.example.net:2929 (a domain name gets HTTPS)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir := "."
		if len(args) == 1 {
			dir = args[0]
		}
		return initProject(cmd.OutOrStdout(), dir, *site)
	}
	return cmd
}

// project is what init found in a directory.
type project struct {
	framework string // django, flask or fastapi
	kind      string // wsgi or asgi
	app       string // module:callable
	name      string // the app's name: its package or module
	dir       string // absolute
}

// importName is the module a framework is imported as.
func (p project) importName() string { return p.framework }

// frameworkTitle is how messages name the framework.
func (p project) frameworkTitle() string {
	return map[string]string{"django": "Django", "flask": "Flask", "fastapi": "FastAPI", "starlette": "Starlette"}[p.framework]
}

var (
	flaskApp   = regexp.MustCompile(`(?m)^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:flask\.)?Flask\(`)
	asgiApp    = regexp.MustCompile(`(?m)^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:fastapi\.)?(FastAPI|Starlette)\(`)
	appFactory = regexp.MustCompile(`(?m)^def (create_app|make_app)\(`)
	// an app a factory made: app = create_app()
	factoryApp = regexp.MustCompile(`(?m)^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:[A-Za-z_][A-Za-z0-9_]*\.)?(?:create_app|make_app)\(`)
)

// findProject looks for a Django project (manage.py naming a settings
// module whose package has wsgi.py), else a module that creates a Flask
// or FastAPI app at its top level.
func findProject(dir string) (*project, error) { return findProjectIn(dir, dir) }

// findProjectIn is findProject reading through from (the directory held
// open: /proc/self/fd/N) what is named dir.
func findProjectIn(from, dir string) (*project, error) {
	if m := settingsModuleDefault.FindSubmatch(readHead(filepath.Join(from, "manage.py"), 64<<10)); m != nil {
		pkg, _, _ := strings.Cut(string(m[1]), ".")
		for _, kind := range []string{"wsgi", "asgi"} {
			if _, err := os.Stat(filepath.Join(from, pkg, kind+".py")); err == nil {
				return &project{framework: "django", kind: kind, app: pkg + "." + kind + ":application", name: pkg, dir: dir}, nil
			}
		}
		return nil, fmt.Errorf("manage.py names the settings module %s, but %s has no wsgi.py or asgi.py: is the project complete?", m[1], filepath.Join(dir, pkg))
	}
	files, _ := filepath.Glob(filepath.Join(from, "*.py"))
	// the usual names first, then the rest in order
	rank := func(f string) int {
		if i := slices.Index([]string{"app.py", "main.py", "wsgi.py", "asgi.py", "application.py", "server.py"}, filepath.Base(f)); i >= 0 {
			return i
		}
		return 100
	}
	slices.SortStableFunc(files, func(a, b string) int { return rank(a) - rank(b) })
	var factoryModule, factory string
	for _, f := range files {
		module := strings.TrimSuffix(filepath.Base(f), ".py")
		if !pythonModule.MatchString(module) {
			continue
		}
		head := readHead(f, 256<<10)
		if m := flaskApp.FindSubmatch(head); m != nil {
			return &project{framework: "flask", kind: "wsgi", app: module + ":" + string(m[1]), name: module, dir: dir}, nil
		}
		if m := asgiApp.FindSubmatch(head); m != nil {
			framework := "fastapi"
			if string(m[2]) == "Starlette" {
				framework = "starlette"
			}
			return &project{framework: framework, kind: "asgi", app: module + ":" + string(m[1]), name: module, dir: dir}, nil
		}
		if m := factoryApp.FindSubmatch(head); m != nil {
			if strings.Contains(strings.ToLower(string(head)), "fastapi") {
				return &project{framework: "fastapi", kind: "asgi", app: module + ":" + string(m[1]), name: module, dir: dir}, nil
			}
			return &project{framework: "flask", kind: "wsgi", app: module + ":" + string(m[1]), name: module, dir: dir}, nil
		}
		if m := appFactory.FindSubmatch(head); m != nil && factory == "" {
			factoryModule, factory = module, string(m[1])
		}
	}
	if factory != "" {
		return nil, fmt.Errorf("%s.py defines %s(), an app factory: Hearth serves an app object, so add a module wsgi.py with `from %s import %s` and `app = %s()`, then run init again",
			factoryModule, factory, factoryModule, factory, factory)
	}
	return nil, fmt.Errorf("no Django, Flask or FastAPI project in %s: init looks for manage.py (Django), and for `app = Flask(...)` or `app = FastAPI(...)` at the top level of a .py file there; run it in your project's directory, or write the Caddyfile by hand (see the README)", dir)
}

// afterOpen, set by a test, runs once init holds the project's directory
// (where another account could swap it).
var afterOpen func()

// initEUID is init's effective uid (a test runs as root what it would do
// as another account).
var initEUID = os.Geteuid

// venvDirs are where a project's virtual environment usually is.
var venvDirs = []string{".venv", "venv", "env", ".env"}

// chooseInterpreter returns the Caddyfile line that names the project's
// interpreter: a venv in the project first, else a system Python that
// imports the framework; and a note when the choice may not work.
func chooseInterpreter(p *project) (line, note string, err error) {
	for _, v := range venvDirs {
		python := filepath.Join(p.dir, v, "bin", "python")
		if info, err := os.Stat(python); err == nil && !info.IsDir() {
			// not root: the venv's python would run as you; one another
			// account can change is not run (as manage and exec refuse to)
			if initEUID() != 0 {
				if err := codeOfOthers(&poolSpec{Options: engine.Options{Name: p.name, Dir: p.dir, Python: python}}); err != nil {
					return "venv " + v, fmt.Sprintf("init did not try the venv %s: %v", v, err), nil
				}
			}
			as := probeAccount(p.dir, filepath.Join(p.dir, v))
			if !imports(python, p.importName(), as) {
				note = fmt.Sprintf("the venv %s cannot import %s yet: install it there (%s/bin/pip install %s)", v, p.importName(), v, p.importName())
				if as != nil {
					note += fmt.Sprintf(", or, if it is installed, let %s read the project and the venv (init, as root, runs a venv's python as their owner, never as root: here %s)", accountName(as.Uid), accountName(as.Uid))
				}
			}
			return "venv " + v, note, nil
		}
	}
	var tried []string
	for _, candidate := range []string{"python3", "/usr/bin/python3", "/usr/local/bin/python3"} {
		path, err := exec.LookPath(candidate)
		if err != nil {
			continue
		}
		if abs, err := filepath.EvalSymlinks(path); err == nil && slices.Contains(tried, abs) {
			continue
		} else if err == nil {
			tried = append(tried, abs)
		}
		if imports(path, p.importName(), nil) {
			abs, _ := filepath.Abs(path)
			return "python " + abs, "", nil
		}
	}
	return "", "", fmt.Errorf("no Python here imports %s, and the project has no venv (%s): make one with `python3 -m venv .venv && .venv/bin/pip install %s` (or on Debian `apt install python3-%s`) and run init again",
		p.importName(), strings.Join(venvDirs, ", "), p.importName(), p.importName())
}

// imports reports whether python can import module, run as the account as
// (nil: this process's own). It runs as every process Hearth starts does
// (supervisor.Run): without the terminal init runs in (a venv's python is
// its owner's program: with root's terminal it could type into root's
// shell), with a session keyring of its own, with probeEnv for its whole
// environment (not root's tokens), and whatever it leaves running is
// killed.
func imports(python, module string, as *syscall.Credential) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// in an empty directory of its own: the current directory is first on
	// sys.path, and a django.py someone put in /tmp must not run
	dir, err := os.MkdirTemp("", "hearth-init-*")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	if as != nil && os.Chown(dir, int(as.Uid), int(as.Gid)) != nil {
		return false
	}
	_, err = supervisor.Run(ctx, supervisor.Command{
		Path: python, Args: []string{"-c", "import " + module}, Dir: dir, Env: probeEnv, Credential: as,
	}, zap.NewNop())
	return err == nil
}

// probeEnv is the whole environment of imports' python.
var probeEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8"}

// probeAccount is the account init, run as root, runs a venv's
// interpreter as: never root. The owner of the first of paths (the
// project, then the venv) that root does not own, with that account's
// group; nobody when root owns them all, or when two accounts own them (a name below them may still be
// another account's: a venv's bin or site-packages). Whoever can change
// the venv (its python, a .pth file in site-packages) would have root run
// its code. nil when init does not run as root.
func probeAccount(paths ...string) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	uid := uint32(65534) // nobody
	if u, err := user.Lookup("nobody"); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uid = uint32(n)
		}
	}
	var owners []uint32
	for _, path := range paths {
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err == nil && st.Uid != 0 && !slices.Contains(owners, st.Uid) {
			owners = append(owners, st.Uid)
		}
	}
	if len(owners) == 1 {
		uid = owners[0]
	}
	// owned by two accounts (a project of yours, a venv of the app's):
	// the code one of them can change must not run as the other
	// (your ~/.bashrc, your next sudo): nobody runs it
	gid := uint32(65534) // nogroup, for an owner without an account
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(g)
		}
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
}

// plainPath says a path can be written in a Caddyfile as one token, and
// printed to a terminal, as it is: no space of any script (U+00A0 split
// the token), quote, brace, backslash (one at the end joined the next
// line), control or bidirectional control character (an escape sequence
// in a directory's name reached the terminal with init's output).
func plainPath(path string) bool {
	return !strings.ContainsFunc(path, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) ||
			strings.ContainsRune("\"{}\\", r) || r == utf8.RuneError
	})
}

// sameDirectory checks that path still names the directory dirRoot holds
// (the Caddyfile init writes there names it by path).
func sameDirectory(dirRoot *os.Root, path string) error {
	held, err := dirRoot.Stat(".")
	if err != nil {
		return err
	}
	now, err := os.Stat(path)
	if err != nil || !os.SameFile(held, now) {
		return fmt.Errorf("%s is no longer the directory init started in (it was moved or replaced while init ran): nothing was written; run init again", path)
	}
	return nil
}

// initProject writes dir/Caddyfile for the project found there.
func initProject(out io.Writer, dir, site string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if !plainPath(abs) {
		return fmt.Errorf("the project's path %q has a space, quote, brace, backslash or control character: move the project to a plain path (the Caddyfile names it)", abs)
	}
	if site == "" || !plainPath(site) {
		return fmt.Errorf("--site %q is not a site address; examples: :2929, home.example.net:2929", site)
	}
	// The project's directory is held from here on, and every file init
	// writes is written in it through that descriptor: as root, a path
	// would be followed again at each write, and whoever owns the
	// directory above the project can swap the project for a link
	// meanwhile (its venv's python runs, as them, in the interpreter
	// probe): root then wrote a Caddyfile and a .gitignore into any
	// directory the link named (/etc/apt/apt.conf.d: apt stopped).
	// The project is read through that directory too (/proc/self/fd/N
	// leads to it whatever its path leads to by then): what init finds is
	// what is in the directory it writes in.
	held, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("opening the project's directory: %w", err)
	}
	defer held.Close()
	from := fmt.Sprintf("/proc/self/fd/%d", held.Fd())
	if _, err := os.Stat(from); err != nil {
		from = abs // no /proc (a chroot): by path, checked again below
	}
	dirRoot, err := os.OpenRoot(from)
	if err != nil {
		return fmt.Errorf("opening the project's directory: %w", err)
	}
	defer dirRoot.Close()
	if afterOpen != nil {
		afterOpen()
	}
	p, err := findProjectIn(from, abs)
	if err != nil {
		return err
	}
	interpreter, note, err := chooseInterpreter(p)
	if err != nil {
		return err
	}
	if err := sameDirectory(dirRoot, abs); err != nil {
		return err
	}
	caddyfile := filepath.Join(abs, "Caddyfile")
	text := caddyfileFor(p, site, interpreter)
	f, err := dirRoot.OpenFile("Caddyfile", os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; init never writes over it: remove or rename it to start again", caddyfile)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "Wrote %s for the %s app %s (%s %s, %s).\n", caddyfile, p.frameworkTitle(), p.name, p.kind, p.app, interpreter)
	// the Caddyfile is written: a .gitignore init cannot extend is a note,
	// not a failure that would leave it without the next steps
	if added, err := extendGitignore(dirRoot, abs, p); err != nil {
		fmt.Fprintf(out, "Note: .gitignore was left as it is (%s): keep .env and the database out of git yourself.\n", termsafe.Line(err.Error()))
	} else if len(added) > 0 {
		fmt.Fprintf(out, "Added %s to .gitignore.\n", strings.Join(added, ", "))
	}
	if note != "" {
		fmt.Fprintf(out, "Note: %s.\n", note)
	}
	url := "https://" + site
	switch {
	case strings.HasPrefix(site, ":"):
		url = "http://localhost" + site
	case strings.HasPrefix(site, "http://"), strings.HasPrefix(site, "https://"):
		url = site
	}
	fmt.Fprintf(out, "\nNext, in %s:\n", abs)
	fmt.Fprintf(out, "  caddy hearth check                 what the guard finds, with the fixes\n")
	fmt.Fprintf(out, "  caddy run                          serves it on %s (Ctrl-C stops it)\n", url)
	if p.framework == "django" {
		fmt.Fprintf(out, "  caddy hearth manage %s createsuperuser\n", p.name)
	}
	if os.Geteuid() == 0 {
		fmt.Fprintf(out, "As root, check, manage and exec ask which account runs the app's code: add --user <account> (or --user root).\n")
	}
	fmt.Fprintf(out, "After changing the code: caddy hearth restart %s. After changing the Caddyfile: caddy reload.\n", p.name)
	if strings.HasPrefix(site, ":") {
		fmt.Fprintf(out, "To go online, put your domain name in the site address (like home.example.net%s): Caddy then serves HTTPS.\n", site)
	}
	return nil
}

// caddyfileFor is the Caddyfile init writes.
func caddyfileFor(p *project, site, interpreter string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `caddy hearth init` for the %s app %s. Run it with `caddy run` here.\n", p.frameworkTitle(), p.name)
	b.WriteString("{\n\tservers {\n")
	b.WriteString("\t\t# clients' connections read and written for less CPU per request (README: Connections)\n")
	b.WriteString("\t\tlistener_wrappers {\n\t\t\thearth_io\n\t\t\ttls\n\t\t}\n\t}\n}\n")
	fmt.Fprintf(&b, "%s {\n", site)
	if p.framework == "django" {
		b.WriteString("\t# static files, collected by collectstatic below, served by Caddy\n")
		fmt.Fprintf(&b, "\thandle_path /static/* {\n\t\troot * %s\n\t\tfile_server\n\t}\n", filepath.Join(p.dir, "staticfiles"))
	}
	fmt.Fprintf(&b, "\t%s %s {\n", p.kind, p.app)
	fmt.Fprintf(&b, "\t\tdir %s\n", p.dir)
	fmt.Fprintf(&b, "\t\t%s\n", interpreter)
	switch p.framework {
	case "django":
		b.WriteString("\t\t# SECRET_KEY, DEBUG off, ALLOWED_HOSTS, STATIC_ROOT… over your settings.py, which stays as it is\n")
		b.WriteString("\t\tsettings overlay\n")
		b.WriteString("\t\tbefore_start python manage.py migrate --noinput\n")
		b.WriteString("\t\tbefore_start python manage.py collectstatic --noinput\n")
	default:
		b.WriteString("\t\t# SECRET_KEY, DEBUG=False, ALLOWED_HOSTS as environment variables (read them with os.environ)\n")
		b.WriteString("\t\tsettings auto\n")
	}
	b.WriteString("\t\t# production checks before start; a blocking finding refuses to start\n")
	b.WriteString("\t\tguard enforce\n")
	b.WriteString("\t}\n}\n")
	return b.String()
}

// extendGitignore adds the entries a deployment must never commit to
// dir/.gitignore (created if missing), returning those it added.
func extendGitignore(dirRoot *os.Root, dir string, p *project) ([]string, error) {
	want := []string{".env", "db.sqlite3"}
	if p.framework == "django" {
		want = append(want, "staticfiles/")
	}
	path := filepath.Join(dir, ".gitignore")
	// opened once, never through a link, without blocking (a FIFO or a
	// device put there by the project's owner would hold or feed init, as
	// root): read and appended through the same descriptor, a regular file
	// of one name and of reasonable size
	f, err := dirRoot.OpenFile(".gitignore", os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening .gitignore (a link is not followed): %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st, ok := info.Sys().(*syscall.Stat_t); !info.Mode().IsRegular() || ok && st.Nlink > 1 || info.Size() > 1<<20 {
		return nil, fmt.Errorf("%s is not a plain file of the project (a special file, one with another name elsewhere, or over 1 MiB): add .env, db.sqlite3 and staticfiles/ to your .gitignore yourself", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading .gitignore: %w", err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		have[strings.TrimPrefix(line, "/")] = true
		have[strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/")+"/"] = true
	}
	var added []string
	for _, w := range want {
		if !have[w] && !have[strings.TrimSuffix(w, "/")] {
			added = append(added, w)
		}
	}
	if len(added) == 0 {
		return nil, nil
	}
	text := ""
	if len(data) > 0 && !strings.HasSuffix(string(data), "\n") {
		text = "\n"
	}
	text += "# added by caddy hearth init: never commit these\n" + strings.Join(added, "\n") + "\n"
	if _, err := f.WriteString(text); err != nil {
		return nil, fmt.Errorf("adding to .gitignore: %w", err)
	}
	return added, f.Close()
}
