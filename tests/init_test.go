package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestInitFlaskAndFastAPI: init finds a Flask app and a FastAPI app, picks
// an interpreter that imports the framework (the first python3 in PATH
// here may not), writes a Caddyfile that `caddy run` serves as it is, and
// says what to do when it finds nothing or only an app factory.
func TestInitFlaskAndFastAPI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, file, source, block, want string }{
		{"flask", "app.py", `import os
from flask import Flask

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]


@app.route("/")
def index():
    return "hello from flask"
`, "wsgi app:app", "hello from flask"},
		{"fastapi", "main.py", `from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root():
    return {"hello": "fastapi"}
`, "asgi main:app", `{"hello":"fastapi"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, data, port := t.TempDir(), t.TempDir(), freePort(t)
			writeFile(t, filepath.Join(dir, tc.file), tc.source)
			code, out := hearthCLI(t, dir, data, "init", "--site", fmt.Sprintf(":%d", port))
			if code != 0 {
				t.Fatalf("init: %d\n%s", code, out)
			}
			caddyfile, _ := os.ReadFile(filepath.Join(dir, "Caddyfile"))
			if !strings.Contains(string(caddyfile), tc.block) || !strings.Contains(string(caddyfile), "settings auto") || strings.Contains(string(caddyfile), "staticfiles") {
				t.Fatalf("the Caddyfile:\n%s", caddyfile)
			}
			python := ""
			for _, line := range strings.Split(string(caddyfile), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "python" {
					python = f[1]
				}
			}
			if python == "" || exec.Command(python, "-c", "import "+tc.name).Run() != nil {
				t.Fatalf("init chose %q, which cannot import %s:\n%s", python, tc.name, caddyfile)
			}
			c := launchCaddyIn(t, dir, data)
			c.waitRunning()
			if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); resp.StatusCode != 200 || body != tc.want {
				t.Errorf("GET /: %d %q", resp.StatusCode, body)
			}
		})
	}
	t.Run("nothing to serve", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "notes.py"), "print('hello')\n")
		code, out := hearthCLI(t, dir, t.TempDir(), "init")
		if code == 0 || !strings.Contains(out, "manage.py") || !strings.Contains(out, "Flask(...)") {
			t.Errorf("init without a project: %d\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "Caddyfile")); err == nil {
			t.Errorf("a Caddyfile was written")
		}
	})
	t.Run("app factory", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "factory.py"), "from flask import Flask\n\ndef create_app():\n    return Flask(__name__)\n")
		code, out := hearthCLI(t, dir, t.TempDir(), "init")
		if code == 0 || !strings.Contains(out, "app = create_app()") {
			t.Errorf("init with an app factory: %d\n%s", code, out)
		}
		writeFile(t, filepath.Join(dir, "wsgi.py"), "from factory import create_app\n\napp = create_app()\n")
		if code, out := hearthCLI(t, dir, t.TempDir(), "init"); code != 0 || !strings.Contains(out, "wsgi wsgi:app") {
			t.Errorf("init with the factory's app in wsgi.py: %d\n%s", code, out)
		}
	})
}

// ptyDriver runs a command in a new pseudo-terminal and answers its
// prompts in order (argv: the answers file, then the command); it prints
// the session and exits with the command's code.
const ptyDriver = `import json, os, pty, select, sys, time
answers = json.load(open(sys.argv[1]))
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen = b''
deadline = time.time() + 60
def read():
    global seen
    r, _, _ = select.select([fd], [], [], 1)
    if not r:
        return True
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    seen += chunk
    return bool(chunk)
for prompt, answer in answers:
    prompt = prompt.encode()
    while prompt not in seen and time.time() < deadline:
        if not read():
            break
    if prompt not in seen:
        sys.stdout.write(seen.decode(errors='replace') + '\n[no prompt %r]\n' % prompt)
        os.kill(pid, 9)
        sys.exit(99)
    seen = seen[seen.index(prompt) + len(prompt):]
    os.write(fd, answer.encode() + b'\n')
while time.time() < deadline and read():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`

// TestManageInteractive: `caddy hearth manage … createsuperuser` asks its
// questions on the terminal (a real pty), password prompts included, and
// the user it creates logs in.
func TestManageInteractive(t *testing.T) {
	t.Parallel()
	dir, data := startproject(t, "mysite"), t.TempDir()
	if code, out := hearthCLI(t, dir, data, "init", "--site", fmt.Sprintf(":%d", freePort(t))); code != 0 {
		t.Fatalf("init: %s", out)
	}
	if code, out := hearthCLI(t, dir, data, "manage", "mysite", "migrate", "-v0"); code != 0 {
		t.Fatalf("manage migrate: %d\n%s", code, out)
	}
	driver, answers := filepath.Join(t.TempDir(), "drive.py"), filepath.Join(t.TempDir(), "answers.json")
	writeFile(t, driver, ptyDriver)
	writeFile(t, answers, `[["Username", "alice"], ["Email address", "alice@example.invalid"], ["Password:", "Ho9-secret-PASS-42"], ["Password (again)", "Ho9-secret-PASS-42"]]`)
	cmd := exec.Command(pythonPath(), append(append([]string{driver, answers, caddyBinary(t), "hearth", "manage"}, asAppUser()...), "mysite", "createsuperuser")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data, "TERM=dumb")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Superuser created successfully") {
		t.Fatalf("interactive createsuperuser: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Ho9-secret-PASS-42") {
		t.Errorf("the password was echoed on the terminal:\n%s", out)
	}
	code, check := hearthCLI(t, dir, data, "manage", "mysite", "shell", "-c",
		"from django.contrib.auth.models import User; u = User.objects.get(username='alice'); print('ok', u.is_superuser, u.check_password('Ho9-secret-PASS-42'))")
	if code != 0 || !strings.Contains(check, "ok True True") {
		t.Errorf("the user: %d\n%s", code, check)
	}
}

// TestInitProbeAsRootKeepsRootsSession: `caddy hearth init` run as root in
// a project another account owns runs the project's venv python (to see
// whether it imports the framework) as that account, and only with what
// that needs: without the terminal init runs in (it could type commands
// into root's shell), without root's environment, and with nothing it
// starts left running afterwards.
func TestInitProbeAsRootKeepsRootsSession(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("init runs the probe as another account only as root")
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app.py"), "from flask import Flask\n\napp = Flask(__name__)\n")
	if err := os.MkdirAll(filepath.Join(dir, ".venv", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "probe.out")
	// the venv's python, as its owner may have written it
	writeFile(t, filepath.Join(dir, ".venv", "bin", "python"), fmt.Sprintf(`#!/bin/sh
{ echo "uid $(id -u)"; echo "pid $$"; echo "tty $(cut -d' ' -f7 /proc/$$/stat)"; env | sed 's/^/env /'; } > %[1]s
sleep 300 &
echo "child $!" >> %[1]s
exit 1
`, report))
	for _, path := range []string{dir, filepath.Join(dir, ".venv"), filepath.Join(dir, ".venv", "bin"), filepath.Join(dir, ".venv", "bin", "python"), filepath.Join(dir, "app.py")} {
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, ".venv", "bin", "python"), 0o755)
	openToAll(t, dir)
	// init in a terminal, as an admin runs it
	driver, answers := filepath.Join(t.TempDir(), "drive.py"), filepath.Join(t.TempDir(), "answers.json")
	writeFile(t, driver, ptyDriver)
	writeFile(t, answers, "[]")
	cmd := exec.Command(pythonPath(), driver, answers, caddyBinary(t), "hearth", "init")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "HEARTH_TEST_ROOTS_TOKEN=do-not-pass")
	out, _ := cmd.CombinedOutput()
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("the venv's python did not run (%v):\n%s", err, out)
	}
	fields := map[string]string{}
	var env []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		key, value, _ := strings.Cut(line, " ")
		if key == "env" {
			env = append(env, value)
		} else {
			fields[key] = value
		}
	}
	if child, err := strconv.Atoi(fields["child"]); err == nil && alive(child) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the probe's background child %d outlived init", child)
	}
	if fields["uid"] != "65534" {
		t.Errorf("the probe ran as uid %q, want the project owner's, 65534", fields["uid"])
	}
	if fields["tty"] != "0" {
		t.Errorf("the probe has init's terminal (device %s): it could type into root's shell", fields["tty"])
	}
	if joined := strings.Join(env, "\n"); strings.Contains(joined, "HEARTH_TEST_ROOTS_TOKEN") || strings.Contains(joined, "XDG_DATA_HOME") {
		t.Errorf("the probe got root's environment:\n%s", joined)
	}
	if !strings.Contains(string(out), "cannot import flask") {
		t.Errorf("init does not say the venv cannot import flask:\n%s", out)
	}
}

// alive reports whether pid is a process that has not ended (a zombie,
// ended but not yet reaped by whoever adopted it, is not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
