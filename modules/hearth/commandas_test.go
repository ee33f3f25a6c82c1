package hearth

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCommandEnvDropped: as root for code that is not root's, a command
// beside a config keeps only what it needs of its environment; for root's
// code it keeps everything.
func TestCommandEnvDropped(t *testing.T) {
	environ := []string{"PATH=/usr/bin", "HOME=/root", "LC_ALL=C", "XDG_DATA_HOME=/var/lib/caddy", "TERM=xterm",
		"CLOUDFLARE_API_TOKEN=secret", "AWS_SECRET_ACCESS_KEY=secret", "DATABASE_URL=postgres://x",
		"SUDO_COMMAND=/usr/bin/env TOKEN=secret caddy hearth check", "_=/usr/bin/env", "CLOUDFLARE_API_TOKEN=again", "=odd", "NOVALUE"}
	dropped := []string{"AWS_SECRET_ACCESS_KEY", "CLOUDFLARE_API_TOKEN", "DATABASE_URL", "NOVALUE", "SUDO_COMMAND", "_"}
	for _, tc := range []struct {
		account string
		want    []string
	}{
		{"nobody", dropped},
		{"hearth-apps:caddy", dropped},
		{"", dropped}, // refused later, but the config's storage is read
		{"root", nil},
		{"root:adm", nil},
	} {
		t.Run(tc.account, func(t *testing.T) {
			if got := commandEnvDropped(environ, tc.account); !slices.Equal(got, tc.want) {
				t.Errorf("dropped %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadableBy: a file a config imports must be one the account the
// command runs the app's code as could read itself: the file's read bit
// and every directory's search bit, for its owner, its group or others.
func TestReadableBy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files of other accounts")
	}
	const uid, gid = 61001, 61001
	for _, tc := range []struct {
		name          string
		dirMode       os.FileMode
		mode          os.FileMode
		fileUID, fGID int
		err           string
	}{
		{"root's, readable by all", 0o755, 0o644, 0, 0, ""},
		{"root's alone", 0o755, 0o600, 0, 0, "may not read"},
		{"in a directory it may not enter", 0o700, 0o644, 0, 0, "may not enter"},
		{"its own", 0o755, 0o400, uid, 0, ""},
		{"its own, but not for its owner", 0o755, 0o044, uid, 0, "may not read"},
		{"its group's", 0o755, 0o640, 0, gid, ""},
		{"another group's", 0o755, 0o640, 0, 0, "may not read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			os.Mkdir(dir, 0o700)
			for d := filepath.Dir(dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
				os.Chmod(d, 0o755) // t.TempDir's
			}
			os.Chmod(dir, tc.dirMode)
			file := filepath.Join(dir, "import.caddy")
			os.WriteFile(file, nil, 0o600)
			os.Chown(file, tc.fileUID, tc.fGID)
			os.Chmod(file, tc.mode)
			err := readableBy(file, uid, gid)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("readableBy: %v, want %q", err, tc.err)
			}
		})
	}
}

// TestConfigWrittenByOthers: a config is root's alone when every file it
// is read from, and every directory its import globs search, is; else the
// reason names what another account could have written.
func TestConfigWrittenByOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files of other accounts")
	}
	for _, tc := range []struct {
		name   string
		config func(dir string) string // writes the config, returns its path
		why    string                  // "" when root's alone
	}{
		{"root's, importing root's", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "site.caddy"), []byte(":80\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, ""},
		{"root's, importing a file another account owns", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "site.caddy"), []byte(":80\n"), 0o644)
			os.Chown(filepath.Join(dir, "site.caddy"), 65534, 65534)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "site.caddy is owned by"},
		{"root's, importing a glob from a directory others can write", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "sites"), 0o777)
			os.Chmod(filepath.Join(dir, "sites"), 0o777)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import sites/*.caddy\n:80\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "is writable by group or others"},
		{"a JSON config others can write", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "caddy.json"), []byte("{}"), 0o666)
			os.Chmod(filepath.Join(dir, "caddy.json"), 0o666)
			return filepath.Join(dir, "caddy.json")
		}, "is writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, why := configWrittenByOthers(tc.config(dir), "")
			if tc.why == "" && why != nil || tc.why != "" && (why == nil || !strings.Contains(why.Error(), tc.why)) {
				t.Errorf("why: %v, want %q", why, tc.why)
			}
		})
	}
}
