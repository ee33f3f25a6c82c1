package python

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInitProbesAVenvAsItsOwner: `sudo caddy hearth init` in a project of
// another account runs the project's venv interpreter (to see whether it
// imports the framework) as that account, not as root: the account can put
// any program at .venv/bin/python, or a .pth file in its site-packages.
func TestInitProbesAVenvAsItsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("init as root")
	}
	const appUID = 65534 // nobody
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	project := filepath.Join(base, "project")
	marks := filepath.Join(base, "marks")
	for _, dir := range []string{project, marks, filepath.Join(project, ".venv"), filepath.Join(project, ".venv", "bin")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chown(dir, appUID, appUID)
	}
	os.WriteFile(filepath.Join(project, "app.py"), []byte("from flask import Flask\napp = Flask(__name__)\n"), 0o644)
	mark := filepath.Join(marks, "ran-as")
	python := filepath.Join(project, ".venv", "bin", "python")
	os.WriteFile(python, []byte("#!/bin/sh\nid -u > "+mark+"\nexit 1\n"), 0o755)
	os.Chown(python, appUID, appUID)

	p, err := findProject(project)
	if err != nil {
		t.Fatal(err)
	}
	line, note, err := chooseInterpreter(p)
	if err != nil || line != "venv .venv" || !strings.Contains(note, "cannot import flask") {
		t.Errorf("chooseInterpreter: %q %q %v", line, note, err)
	}
	ran, err := os.ReadFile(mark)
	if err != nil {
		t.Fatalf("the venv's python did not run: %v", err)
	}
	if got := strings.TrimSpace(string(ran)); got != "65534" {
		t.Errorf("the venv's python ran as uid %s, want the project's owner, 65534", got)
	}
}

// TestInitAsAUserRunsNoVenvOfAnotherAccount: init run as a user (not
// root) in a project whose venv another account owns does not run it:
// it would run as the user, and that account could have put any program
// at .venv/bin/python (manage and exec refuse the same); the Caddyfile
// still names the venv, with a note saying why it was not tried.
func TestInitAsAUserRunsNoVenvOfAnotherAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as root, which stands in for a user and sets the owners")
	}
	defer func(f func() int) { initEUID = f }(initEUID)
	initEUID = func() int { return 1000 } // a user's
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755)
	project := filepath.Join(base, "project")
	for _, dir := range []string{project, filepath.Join(project, ".venv"), filepath.Join(project, ".venv", "bin")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chown(dir, 5, 60) // games: another account's
	}
	os.WriteFile(filepath.Join(project, "app.py"), []byte("from flask import Flask\napp = Flask(__name__)\n"), 0o644)
	mark := filepath.Join(base, "ran")
	python := filepath.Join(project, ".venv", "bin", "python")
	os.WriteFile(python, []byte("#!/bin/sh\ntouch "+mark+"\nexit 0\n"), 0o755)
	os.Chown(python, 5, 60)
	os.Chmod(base, 0o777) // (the probe, were it run as games, could leave its mark)
	p, err := findProject(project)
	if err != nil {
		t.Fatal(err)
	}
	line, note, err := chooseInterpreter(p)
	if err != nil || line != "venv .venv" || !strings.Contains(note, "init did not try the venv .venv") || !strings.Contains(note, "belongs to games") {
		t.Errorf("chooseInterpreter: %q %q %v", line, note, err)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Error("the venv's python of another account ran")
	}
}

// TestInitNeverProbesAsRoot: a venv in a project root owns is still run as
// nobody, not root: a name below (bin, site-packages) may be another
// account's.
func TestInitNeverProbesAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("init as root")
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	cred := probeAccount(base, filepath.Join(base, ".venv"))
	if cred == nil || cred.Uid == 0 {
		t.Fatalf("probeAccount of root's project: %+v, want nobody", cred)
	}
	// a project of one account (the operator's), a venv of another (the
	// app's): the venv's code runs as neither
	project, venv := filepath.Join(base, "project"), filepath.Join(base, "project", ".venv")
	os.MkdirAll(venv, 0o755)
	os.Chown(project, 33, 33) // www-data: the operator here
	os.Chown(venv, 1, 1)      // daemon: the app's account
	if cred := probeAccount(project, venv); cred == nil || cred.Uid != 65534 {
		t.Errorf("probeAccount of a project and venv of two accounts: %+v, want nobody", cred)
	}
	os.Chown(venv, 33, 33)
	if cred := probeAccount(project, venv); cred == nil || cred.Uid != 33 {
		t.Errorf("probeAccount of a project and venv of one account: %+v, want its uid 33", cred)
	}
}

// TestInitRefusesPathsTheCaddyfileCannotHold: a project path or site with
// whitespace the Caddyfile's lexer splits on (a carriage return, vertical
// tab or form feed too: `/srv/a\r#x` would have become /srv/a and a
// comment) is refused before anything is written; so is one the
// lexer took apart otherwise (a no-break space split the token, a final
// backslash joined the next line) or that the terminal would act on as
// init prints it (an escape sequence, a C1 control, a bidirectional
// override), or that is not UTF-8.
func TestInitRefusesPathsTheCaddyfileCannotHold(t *testing.T) {
	for _, name := range []string{"a b", "a\tb", "a\rb", "a\vb", "a\fb", "a{b",
		"a\u00a0b", "a\u0085b", "a\u3000b", "a\\", "a\x1b]2;owned\x07b", "a\u009bb", "a\u202eb", "a\xffb"} {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := initProject(io.Discard, dir, ":2929"); err == nil || !strings.Contains(err.Error(), "move the project to a plain path") {
			t.Errorf("%q: %v", dir, err)
		}
	}
	for _, site := range []string{":2929\r", "a.example\f:2929", "\v:2929", "a.example\u00a0:2929", "\x1b[2J:2929"} {
		if err := initProject(io.Discard, t.TempDir(), site); err == nil || !strings.Contains(err.Error(), "is not a site address") {
			t.Errorf("--site %q: %v", site, err)
		}
	}
}

// TestGitignoreThatIsNotAFile: init (often as root) neither blocks on a
// FIFO named .gitignore, nor reads or appends through a link or a hard
// link to a file elsewhere.
func TestGitignoreThatIsNotAFile(t *testing.T) {
	p := &project{framework: "django"}
	for name, create := range map[string]func(path string) error{
		"fifo":      func(path string) error { return syscall.Mkfifo(path, 0o644) },
		"link":      func(path string) error { return os.Symlink("/etc/passwd", path) },
		"hard link": func(path string) error { return os.Link(filepath.Join(filepath.Dir(path), "elsewhere"), path) },
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "elsewhere"), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := create(filepath.Join(dir, ".gitignore")); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		dirRoot, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer dirRoot.Close()
		go func() { _, err := extendGitignore(dirRoot, dir, p); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: .gitignore extended", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: init blocks on .gitignore", name)
		}
		if data, _ := os.ReadFile(filepath.Join(dir, "elsewhere")); string(data) != "x\n" {
			t.Errorf("%s: the file elsewhere was written: %q", name, data)
		}
	}
	// a plain one is extended
	dir := t.TempDir()
	dirRoot, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dirRoot.Close()
	if added, err := extendGitignore(dirRoot, dir, p); err != nil || len(added) != 3 {
		t.Errorf("a new .gitignore: %v %v", added, err)
	}
}

// TestInitAsRootWritesOnlyInTheProject: init run as root writes its
// Caddyfile and .gitignore only into the project's directory as it was when
// init started. The account that owns the directory above the project ran
// code during init (its venv's python, in the interpreter probe), swapped
// the project for a link to a directory of root's, and root wrote both
// files there.
func TestInitAsRootWritesOnlyInTheProject(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attack is on init run as root")
	}
	const nobody = 65534
	base := t.TempDir()
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(base, "home") // the account's
	roots := filepath.Join(base, "roots")
	project := filepath.Join(home, "proj")
	for _, d := range []string{home, roots, project, project + "/.venv", project + "/.venv/bin"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if d != roots {
			if err := os.Chown(d, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(project+"/app.py", []byte("from flask import Flask\napp = Flask(__name__)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	python := project + "/.venv/bin/python"
	swap := "#!/bin/sh\nmv " + project + " " + home + "/old && ln -s " + roots + " " + project + "\nexit 0\n"
	if err := os.WriteFile(python, []byte(swap), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(python, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	err := initProject(io.Discard, project, ":2929")
	if target, lerr := os.Readlink(project); lerr != nil || target != roots {
		t.Fatalf("the probe did not swap the project (%v): the test proves nothing", lerr)
	}
	for _, name := range []string{"Caddyfile", ".gitignore"} {
		if _, serr := os.Lstat(filepath.Join(roots, name)); serr == nil {
			t.Errorf("init as root wrote %s into the directory the project was swapped for (init: %v)", name, err)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "no longer the directory init started in") {
		t.Errorf("init: %v, want it to say the project was replaced", err)
	}
}

// TestInitFinishesWithAGitignoreItCannotExtend: a .gitignore init cannot
// extend (a link, as dotfile managers make) is a note once the Caddyfile
// is written, not a failure that leaves it without the next steps (run
// again, init said "Caddyfile exists"); and an http:// site is shown as
// it is.
func TestInitFinishesWithAGitignoreItCannotExtend(t *testing.T) {
	project := t.TempDir()
	os.WriteFile(filepath.Join(project, "app.py"), []byte("from flask import Flask\napp = Flask(__name__)\n"), 0o644)
	os.MkdirAll(filepath.Join(project, ".venv", "bin"), 0o755)
	os.WriteFile(filepath.Join(project, ".venv", "bin", "python"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	if err := os.Symlink(filepath.Join(t.TempDir(), "dotfiles-gitignore"), filepath.Join(project, ".gitignore")); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := initProject(&out, project, "http://home.example.net:8080"); err != nil {
		t.Fatalf("init: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(project, "Caddyfile")); err != nil {
		t.Errorf("no Caddyfile: %v", err)
	}
	for _, want := range []string{"Note: .gitignore was left as it is", "Next, in ", "serves it on http://home.example.net:8080 "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("init's output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "https://http://") {
		t.Errorf("the site's URL is mangled:\n%s", out.String())
	}
}

// TestInitReadsTheDirectoryItWritesIn: init reads the project through the
// directory it holds and writes in: the project swapped for another
// directory once init held it (by whoever owns the directory above) is
// not what init finds, and init refuses rather than write a Caddyfile
// for one directory into another.
func TestInitReadsTheDirectoryItWritesIn(t *testing.T) {
	base := t.TempDir()
	project := filepath.Join(base, "project")
	os.Mkdir(project, 0o755)
	os.WriteFile(filepath.Join(project, "app.py"), []byte("from flask import Flask\napp = Flask(__name__)\n"), 0o644)
	os.MkdirAll(filepath.Join(project, ".venv", "bin"), 0o755)
	os.WriteFile(filepath.Join(project, ".venv", "bin", "python"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	defer func() { afterOpen = nil }()
	afterOpen = func() {
		// the project moved away, another directory in its place
		if err := os.Rename(project, filepath.Join(base, "moved")); err != nil {
			t.Fatal(err)
		}
		os.Mkdir(project, 0o755)
	}
	err := initProject(io.Discard, project, ":2929")
	if err == nil || !strings.Contains(err.Error(), "is no longer the directory init started in") {
		t.Errorf("init of a project swapped once held: %v", err)
	}
	for _, dir := range []string{project, filepath.Join(base, "moved")} {
		if _, err := os.Stat(filepath.Join(dir, "Caddyfile")); err == nil {
			t.Errorf("a Caddyfile was written in %s", dir)
		}
	}
}
