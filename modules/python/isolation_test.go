package python

import (
	"slices"
	"strings"
	"testing"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestResolveIsolation: a pool's environment starts clean (env_inherit
// passes named variables, which then win over settings auto like env
// does), and its umask is the default or the configured one; both are
// part of the pool's identity.
func TestResolveIsolation(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("APP_UNIT_SECRET", "caddy-only")
	t.Setenv("SECRET_KEY", "inherited-key")
	t.Setenv("PYTHONPATH", "/caddy/python")
	spec, err := PoolConfig{Dir: dir, Python: "/usr/bin/python3"}.resolve("a:b")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range spec.Env {
		if strings.HasPrefix(kv, "APP_UNIT_SECRET=") || strings.HasPrefix(kv, "SECRET_KEY=") || strings.HasPrefix(kv, "PYTHONPATH=") {
			t.Errorf("Caddy's environment reaches the workers: %s", kv)
		}
	}
	if !slices.Contains(spec.Env, "PYTHONUNBUFFERED=1") || !slices.ContainsFunc(spec.Env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		t.Errorf("Hearth's own variables are missing: %v", spec.Env)
	}
	if spec.Umask != supervisor.DefaultUmask {
		t.Errorf("default umask %04o", spec.Umask)
	}
	inherited, err := PoolConfig{Dir: dir, Python: "/usr/bin/python3", EnvInherit: []string{"APP_UNIT_SECRET", "SECRET_KEY"}, Umask: "0077"}.resolve("a:b")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(inherited.Env, "APP_UNIT_SECRET=caddy-only") || !slices.Contains(inherited.Env, "SECRET_KEY=inherited-key") {
		t.Errorf("env_inherit does not pass the variables: %v", inherited.Env)
	}
	if !slices.Contains(inherited.Explicit, "SECRET_KEY") {
		t.Errorf("an inherited SECRET_KEY would be overridden by settings auto: explicit %v", inherited.Explicit)
	}
	if inherited.Umask != 0o077 {
		t.Errorf("umask 0077 gave %04o", inherited.Umask)
	}
	if inherited.key() == spec.key() {
		t.Errorf("env_inherit and umask do not change the pool's key")
	}
	for _, tc := range []struct {
		cfg  PoolConfig
		want string
	}{
		{PoolConfig{Dir: dir, Python: "/usr/bin/python3", EnvInherit: []string{"BAD NAME"}}, `env_inherit: "BAD NAME" is not a variable name`},
		{PoolConfig{Dir: dir, Python: "/usr/bin/python3", Umask: "0000"}, "would let every account"},
		{PoolConfig{Dir: dir, Python: "/usr/bin/python3", Umask: "abc"}, "not an octal"},
	} {
		if _, err := tc.cfg.resolve("a:b"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
