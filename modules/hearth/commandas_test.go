package hearth

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
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
		{"a config that does not parse (it may be changing)", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(":80 {\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "syntax error"},
		{"a link, in a directory another account owns, to root's config", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(":80\n"), 0o644)
			theirs := filepath.Join(dir, "theirs")
			os.Mkdir(theirs, 0o755)
			os.Symlink(filepath.Join(dir, "Caddyfile"), filepath.Join(theirs, "Caddyfile"))
			os.Chown(theirs, 65534, 65534)
			return filepath.Join(theirs, "Caddyfile")
		}, "theirs is owned by"},
		{"a link another account made, to root's config", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(":80\n"), 0o644)
			os.Symlink(filepath.Join(dir, "Caddyfile"), filepath.Join(dir, "link"))
			os.Lchown(filepath.Join(dir, "link"), 65534, 65534)
			return filepath.Join(dir, "link")
		}, "link is owned by"},
		{"root's, importing root's, two deep", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "b.caddy"), []byte("respond ok\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "a.caddy"), []byte(":80 {\n\timport b.caddy\n}\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import a.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, ""},
		{"root's, importing, two deep, a file another account owns", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "b.caddy"), []byte("respond ok\n"), 0o644)
			os.Chown(filepath.Join(dir, "b.caddy"), 65534, 65534)
			os.WriteFile(filepath.Join(dir, "a.caddy"), []byte(":80 {\n\timport b.caddy\n}\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import a.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "b.caddy is owned by"},
		{"root's, importing a glob whose directory holds an empty file another account owns", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "sites"), 0o755)
			os.WriteFile(filepath.Join(dir, "sites", "app.caddy"), []byte("# nothing yet\n"), 0o644)
			os.Chown(filepath.Join(dir, "sites", "app.caddy"), 65534, 65534)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import sites/*.caddy\n:80\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "app.caddy is owned by"},
		{"root's, importing a path from a snippet's arguments", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("(s) {\n\timport {args[0]}\n}\nimport s site.caddy\n:80\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "site.caddy"), nil, 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "a path with a placeholder Caddy's parser fills in"},
		{"root's, importing through an environment default a file another account owns", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import {$HEARTH_TEST_UNSET:site}.caddy\n:80\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "site.caddy"), nil, 0o644)
			os.Chown(filepath.Join(dir, "site.caddy"), 65534, 65534)
			return filepath.Join(dir, "Caddyfile")
		}, "site.caddy is owned by"},
		{"another account's, importing a FIFO: judged before it is opened", func(dir string) string {
			syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import fifo\n"), 0o644)
			os.Chown(filepath.Join(dir, "Caddyfile"), 65534, 65534)
			return filepath.Join(dir, "Caddyfile")
		}, "Caddyfile is owned by"},
		{"a JSON config others can write", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "caddy.json"), []byte("{}"), 0o666)
			os.Chmod(filepath.Join(dir, "caddy.json"), 0o666)
			return filepath.Join(dir, "caddy.json")
		}, "is writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			why := configWrittenByOthers(tc.config(dir), "")
			if tc.why == "" && why != nil || tc.why != "" && (why == nil || !strings.Contains(why.Error(), tc.why)) {
				t.Errorf("why: %v, want %q", why, tc.why)
			}
		})
	}
}

// TestCaddyfileFilesReadsOnlyFiles: listing what a Caddyfile is read from
// (as root, for `check`, `manage`, `exec` and `systemd`) opens what it
// imports. A FIFO or a device where an import points, which an app's
// account can put in its own directory, would hang the command (or never
// end): refused, naming the importing file and the import, however it is
// reached; a snippet is no file.
func TestCaddyfileFilesReadsOnlyFiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config func(dir string) string // writes the config, returns its path
		why    string                  // "" when listed
	}{
		{"files, a glob and a snippet", func(dir string) string {
			os.WriteFile(filepath.Join(dir, "site.caddy"), []byte("import conf.d/*\n:80\n"), 0o644)
			os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
			os.WriteFile(filepath.Join(dir, "conf.d", "a.caddy"), []byte(":81\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("(snip) {\n\trespond ok\n}\nimport site.caddy\n:82 {\n\timport snip\n}\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, ""},
		{"a FIFO imported", func(dir string) string {
			syscall.Mkfifo(filepath.Join(dir, "site.caddy"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "site.caddy, which is a FIFO"},
		{"a FIFO a glob matches, in a file imported", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "conf.d"), 0o755)
			syscall.Mkfifo(filepath.Join(dir, "conf.d", "b.caddy"), 0o644)
			os.WriteFile(filepath.Join(dir, "site.caddy"), []byte("import conf.d/*.caddy\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "b.caddy, which is a FIFO"},
		{"a link to a device", func(dir string) string {
			os.Symlink("/dev/zero", filepath.Join(dir, "site.caddy"))
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "which is a device"},
		{"a FIFO through an environment default", func(dir string) string {
			syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
			os.WriteFile(filepath.Join(dir, "site.caddy"), []byte("import {$HEARTH_TEST_UNSET:"+filepath.Join(dir, "fifo")+"}\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "fifo, which is a FIFO"},
		{"a FIFO through a backslash, which the parser's glob reads as an escape", func(dir string) string {
			syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import "+dir+"/\\fifo\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "fifo, which is a FIFO"},
		{"a device through a backslash in a bare name", func(dir string) string {
			os.Symlink("/dev/zero", filepath.Join(dir, "zero"))
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import \\zero\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "which is a device"},
		{"a FIFO through a snippet's arguments", func(dir string) string {
			syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("(s) {\n\timport {args[0]}\n}\nimport s "+filepath.Join(dir, "fifo")+"\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "a path with a placeholder Caddy's parser fills in"},
		{"a FIFO past more imports than are checked", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "many"), 0o755)
			for i := range maxImportEntries + 5 {
				os.WriteFile(filepath.Join(dir, "many", fmt.Sprintf("%05d.caddy", i)), nil, 0o644)
			}
			syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
			os.WriteFile(filepath.Join(dir, "many", "zz.caddy"), []byte("import "+filepath.Join(dir, "fifo")+"\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import many/*\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "imports more than 10000 files"},
		{"a hidden FIFO, which the parser's leading * skips", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "conf.d"), 0o755)
			syscall.Mkfifo(filepath.Join(dir, "conf.d", ".b.caddy.swp"), 0o644)
			os.WriteFile(filepath.Join(dir, "conf.d", "a.caddy"), []byte(":81\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import conf.d/*\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, ""},
		{"a pattern the parser refuses before it globs", func(dir string) string {
			os.MkdirAll(filepath.Join(dir, "conf.d", "a"), 0o755)
			syscall.Mkfifo(filepath.Join(dir, "conf.d", "a", "b.caddy"), 0o644)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import conf.d/*/*\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "may only contain one wildcard"},
		{"a link to a file of the kernel's", func(dir string) string {
			os.Symlink("/proc/self/environ", filepath.Join(dir, "site.caddy")) // (/proc/kmsg would wait)
			os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("import site.caddy\n"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "site.caddy is a file of the kernel's proc file system, not a regular file"},
		{"the config itself a FIFO", func(dir string) string {
			syscall.Mkfifo(filepath.Join(dir, "Caddyfile"), 0o644)
			return filepath.Join(dir, "Caddyfile")
		}, "is a FIFO, not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.config(t.TempDir())
			done := make(chan error, 1)
			go func() {
				_, _, err := caddyfileFiles(path, "caddyfile")
				done <- err
			}()
			select {
			case err := <-done:
				if tc.why == "" && err != nil || tc.why != "" && (err == nil || !strings.Contains(err.Error(), tc.why)) {
					t.Errorf("caddyfileFiles: %v, want %q", err, tc.why)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("caddyfileFiles hung on %s", tc.name) // (a goroutine stays behind, blocked)
			}
			if tc.why == "" {
				return
			}
			// and adapting it, which every command does first (as root
			// for systemd and ports): judged before the parser opens it
			go func() {
				_, err := adaptConfig(path, "caddyfile")
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.why) {
					t.Errorf("adaptConfig: %v, want %q", err, tc.why)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("adaptConfig hung on %s", tc.name)
			}
		})
	}
}

// TestExpandEnvAsCaddysParser: followImports replaces environment
// placeholders as Caddy's parser does before it opens any import, so that
// what it judges is what the parser opens: each case is checked against
// the parser itself (a site's directive, whose tokens the parser keeps).
func TestExpandEnvAsCaddysParser(t *testing.T) {
	t.Setenv("HEARTH_TEST_SET", "/srv/site.caddy")
	t.Setenv("HEARTH_TEST_EMPTY", "")
	t.Setenv("HEARTH_TEST_NESTED", "{$HEARTH_TEST_SET}")
	for _, tc := range []struct{ in, want string }{
		{"{$HEARTH_TEST_SET}", "/srv/site.caddy"},
		{"{$HEARTH_TEST_UNSET:/tmp/x}", "/tmp/x"},
		{"{$HEARTH_TEST_UNSET:a:b}", "a:b"},
		{"{$HEARTH_TEST_EMPTY:/tmp/x}x", "x"},
		{"{$HEARTH_TEST_UNSET}x", "x"},
		{"{$HEARTH_TEST_NESTED}", "{$HEARTH_TEST_SET}"}, // one level: a value is not expanded again
		{"a{$HEARTH_TEST_SET}b{$HEARTH_TEST_UNSET:c}d", "a/srv/site.caddybcd"},
		{"{$}x", "{$}x"},
	} {
		if got := string(expandEnv([]byte(tc.in))); got != tc.want {
			t.Errorf("expandEnv(%q) = %q, want %q", tc.in, got, tc.want)
		}
		blocks, err := caddyfile.Parse("Caddyfile", []byte(":80 {\n\trespond "+tc.in+"\n}\n"))
		if err != nil || len(blocks) != 1 || len(blocks[0].Segments) != 1 || len(blocks[0].Segments[0]) != 2 {
			t.Errorf("%q: Caddy's parser: %v %v", tc.in, err, blocks)
			continue
		}
		if parsed := blocks[0].Segments[0][1].Text; parsed != tc.want {
			t.Errorf("%q: Caddy's parser reads %q, expandEnv %q", tc.in, parsed, tc.want)
		}
	}
}
