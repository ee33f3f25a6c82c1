package supervisor

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestEnvBuild(t *testing.T) {
	t.Setenv("HEARTH_UNIT_PLACEHOLDER", "placeholder value")
	caddyEnv := []string{
		"PATH=/caddy/bin:/usr/bin", "LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8", "LC_ALL=C.UTF-8", "TZ=Europe/Paris",
		"TMPDIR=/caddy/tmp", "HOME=/var/lib/caddy", "USER=caddy", "LOGNAME=caddy",
		"DDNS_TSIG_KEY=tsig-secret", "CF_API_TOKEN=cf-secret", "NOTIFY_SOCKET=/run/systemd/notify",
		"PYTHONPATH=/caddy/py", "PYTHONHOME=/caddy/home", "HTTPS_PROXY=http://proxy:3128", "SHELL=/bin/bash",
	}
	accounts := map[string]account{
		"":     {home: "/home/owner", name: "owner"},
		"1001": {home: "/srv/app", name: "app"},
	}
	lookup := func(name string) (account, error) {
		a, ok := accounts[name]
		if !ok {
			return account{}, errors.New("unknown user")
		}
		return a, nil
	}
	envFile := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(envFile, []byte("FROM_FILE=file\nOVERRIDE=file\nLANG=de_DE.UTF-8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reservedFile := filepath.Join(t.TempDir(), "reserved.env")
	if err := os.WriteFile(reservedFile, []byte("OK=1\nHEARTH_SETTINGS_OVERLAY={}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"HOME=/var/lib/caddy", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "LC_TIME=en_GB.UTF-8", "LOGNAME=caddy",
		"PATH=/caddy/bin:/usr/bin", "TMPDIR=/caddy/tmp", "TZ=Europe/Paris", "USER=caddy"}
	with := func(list []string, kv ...string) []string {
		out := slices.Clone(list)
		for _, x := range kv {
			k, _, _ := strings.Cut(x, "=")
			out = slices.DeleteFunc(out, func(y string) bool { return strings.HasPrefix(y, k+"=") })
			out = append(out, x)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name   string
		parent []string
		env    Env
		want   []string
		err    string
	}{
		{name: "the base only: no secret, no NOTIFY_SOCKET, no PYTHONPATH", parent: caddyEnv, want: base},
		{name: "inherit passes named variables", parent: caddyEnv, env: Env{Inherit: []string{"HTTPS_PROXY", "PYTHONPATH", "ABSENT"}},
			want: with(base, "HTTPS_PROXY=http://proxy:3128", "PYTHONPATH=/caddy/py")},
		{name: "another account's HOME, USER and LOGNAME", parent: caddyEnv, env: Env{Credential: &syscall.Credential{Uid: 1001, Gid: 1001}},
			want: with(base, "HOME=/srv/app", "USER=app", "LOGNAME=app")},
		{name: "Caddy's own account, looked up where Caddy's environment lacks it", parent: []string{"PATH=/bin", "HOME=/h"},
			want: []string{"HOME=/h", "LOGNAME=owner", "PATH=/bin", "USER=owner"}},
		{name: "no PATH in Caddy's environment", parent: []string{"HOME=/h", "USER=u", "LOGNAME=u"},
			want: []string{"HOME=/h", "LOGNAME=u", "PATH=" + DefaultPath, "USER=u"}},
		{name: "adjust after inherit, then env_file, then env", parent: caddyEnv, env: Env{
			Inherit: []string{"PYTHONHOME", "HTTPS_PROXY"},
			Adjust: func(v map[string]string) {
				v["VIRTUAL_ENV"] = "/venv"
				v["PATH"] = "/venv/bin:" + v["PATH"]
				delete(v, "PYTHONHOME")
			},
			File: envFile,
			Vars: map[string]string{"OVERRIDE": "env", "HTTPS_PROXY": "none"},
		}, want: with(base, "VIRTUAL_ENV=/venv", "PATH=/venv/bin:/caddy/bin:/usr/bin", "FROM_FILE=file", "OVERRIDE=env",
			"LANG=de_DE.UTF-8", "HTTPS_PROXY=none")},
		{name: "env values take global placeholders (of Caddy's real environment)", parent: caddyEnv,
			env: Env{Vars: map[string]string{"X": "{env.HEARTH_UNIT_PLACEHOLDER}"}}, want: with(base, "X=placeholder value")},
		{name: "a bad inherit name", parent: caddyEnv, env: Env{Inherit: []string{"OK", "NOT-OK"}}, err: `env_inherit: "NOT-OK" is not a variable name`},
		{name: "an inherit name with =", parent: caddyEnv, env: Env{Inherit: []string{"A=B"}}, err: `env_inherit: "A=B" is not a variable name`},
		{name: "an account without a passwd entry", parent: caddyEnv, env: Env{Credential: &syscall.Credential{Uid: 4242}}, err: `the account of uid 4242`},
		{name: "a bad env name", parent: caddyEnv, env: Env{Vars: map[string]string{"1X": "y"}}, err: `env: "1X" is not a valid variable name`},
		{name: "env may not set Hearth's own names", parent: caddyEnv, env: Env{Vars: map[string]string{"HEARTH_APP": "evil:app"}},
			err: "env: HEARTH_APP: names starting with HEARTH_ are Hearth's own"},
		{name: "nor may env_inherit", parent: append(caddyEnv, "HEARTH_PORT=1"), env: Env{Inherit: []string{"HEARTH_PORT"}},
			err: "env_inherit: HEARTH_PORT: names starting with HEARTH_ are Hearth's own"},
		{name: "nor may env_file", parent: caddyEnv, env: Env{File: reservedFile},
			err: "env_file " + reservedFile + ": HEARTH_SETTINGS_OVERLAY: names starting with HEARTH_ are Hearth's own"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.env.build(tc.parent, lookup)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n  %v\nwant\n  %v", got, tc.want)
			}
		})
	}
}

func TestEnvBuildStartsClean(t *testing.T) {
	t.Setenv("APP_UNIT_SECRET", "must-not-pass")
	got, err := Env{}.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range got {
		if strings.HasPrefix(kv, "APP_UNIT_SECRET=") {
			t.Errorf("Caddy's environment leaks into the child's: %s", kv)
		}
	}
	got, err = Env{Inherit: []string{"APP_UNIT_SECRET"}}.Build()
	if err != nil || !slices.Contains(got, "APP_UNIT_SECRET=must-not-pass") {
		t.Errorf("env_inherit does not pass the variable: %v %v", got, err)
	}
	if names := Inherited([]string{"APP_UNIT_SECRET", "APP_UNIT_ABSENT"}); !slices.Equal(names, []string{"APP_UNIT_SECRET"}) {
		t.Errorf("Inherited: %v", names)
	}
}

func TestLastOfEach(t *testing.T) {
	for _, tc := range []struct{ env, want []string }{
		{nil, []string{}},
		{[]string{"A=1", "B=2"}, []string{"A=1", "B=2"}},
		{[]string{"PYTHONUNBUFFERED=", "A=1", "PYTHONUNBUFFERED=1"}, []string{"A=1", "PYTHONUNBUFFERED=1"}},
		{[]string{"A=1", "A=2", "A=3=x", "B"}, []string{"A=3=x", "B"}},
	} {
		if got := lastOfEach(tc.env); !slices.Equal(got, tc.want) {
			t.Errorf("lastOfEach(%q) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		err  string
	}{
		{[]string{"python", "manage.py", "migrate"}, ""},
		{[]string{"python\x00", "x"}, "before_start command 1: the program's name holds a NUL byte"},
		{[]string{"python", "ok", "a\x00b"}, "before_start command 1: argument 2 holds a NUL byte"},
	} {
		err := CheckCommand("before_start command 1", tc.argv)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: %v, want %q", tc.argv, err, tc.err)
		}
	}
}

func TestDescends(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	self, child := os.Getpid(), cmd.Process.Pid
	for _, tc := range []struct {
		pid, ancestor int
		want          bool
	}{
		{self, self, true},
		{child, self, true},
		{child, os.Getppid(), true},
		{self, child, false},
		{1, self, false},
		{1 << 30, self, false},
	} {
		if got := Descends(tc.pid, tc.ancestor); got != tc.want {
			t.Errorf("Descends(%d, %d) = %v, want %v", tc.pid, tc.ancestor, got, tc.want)
		}
	}
}
