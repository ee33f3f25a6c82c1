package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseEnv(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]string
		err      string
	}{
		{"plain", "A=1\nB = two words \n", map[string]string{"A": "1", "B": "two words"}, ""},
		{"comments and blanks", "# c\n\nA=1 # trailing\n  # indented\n", map[string]string{"A": "1"}, ""},
		{"export", "export SECRET_KEY=abc\n", map[string]string{"SECRET_KEY": "abc"}, ""},
		{"single quotes literal", `A='x # y \n'`, map[string]string{"A": `x # y \n`}, ""},
		{"double quotes escapes", `A="line\nnext \"q\" \\"`, map[string]string{"A": "line\nnext \"q\" \\"}, ""},
		{"empty value", "A=\n", map[string]string{"A": ""}, ""},
		{"crlf", "A=1\r\nB=2\r\n", map[string]string{"A": "1", "B": "2"}, ""},
		{"equals in value", "URL=postgres://u:p@h/db?x=1", map[string]string{"URL": "postgres://u:p@h/db?x=1"}, ""},
		{"no equals", "A=1\nJUSTAWORD\n", nil, "line 2: expected KEY=value"},
		{"bad name", "1A=x", nil, "line 1: the name before \"=\" is not a variable name: a digit at column 1"},
		{"unterminated double", `A="abc`, nil, "line 1: A: unterminated double quote"},
		{"unterminated single", `A='abc`, nil, "line 1: A: unterminated single quote"},
		{"a NUL in a value", "A=1\nB=x\x00y\n", nil, "line 2: B: the value holds a NUL byte"},
		{"an escaped NUL is no NUL", `A="x\0y"`, map[string]string{"A": "x0y"}, ""},
		// what would have been lost without a word
		{"two on a line, single", "A='x' B='y'", nil, "line 1: A: text after the closing quote"},
		{"two on a line, double", `A="x" B="y"`, nil, "line 1: A: text after the closing quote"},
		{"a comment after a quote", "A='x' # note\nB=\"y\"\t# note", map[string]string{"A": "x", "B": "y"}, ""},
		{"lone CRs end lines", "A=1\rB=2\r", map[string]string{"A": "1", "B": "2"}, ""},
		{"a tab before a comment", "A=1\t# note", map[string]string{"A": "1"}, ""},
		{"a # inside a value", "A=a#b", map[string]string{"A": "a#b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEnv(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestParseEnvDoesNotEchoSecrets(t *testing.T) {
	_, err := parseEnv("SECRET_KEY the-real-secret-value-that-must-not-leak")
	if err == nil || strings.Contains(err.Error(), "must-not-leak") {
		t.Fatalf("error %v echoes the whole line", err)
	}
}

// TestEnvFileErrorsNameTheLineNotTheValue: a line that does not parse is
// reported as file:line, with the variable's name when the line has one,
// and never with any part of the value or of the line.
func TestEnvFileErrorsNameTheLineNotTheValue(t *testing.T) {
	const secret = "s3cr3t+VALUE/4b1d9e"
	for _, tc := range []struct {
		name, text string
		line       int
		want       []string // in the error, besides path:line
	}{
		{"a pasted value", "A=1\n" + secret + "\n", 2, []string{`no "="`}},
		{"a colon for =", "SECRET_KEY: " + secret + "\n", 1, []string{`no "="`}},
		{"a pasted value ending in =", "A=1\n\nB=2\n" + secret + "=\n", 4, []string{`"+" at column 7`}},
		{"a space in the name", "MY SECRET=" + secret + "\n", 1, []string{"a space at column 3"}},
		{"a digit first", "1PASSWORD=" + secret + "\n", 1, []string{"a digit at column 1"}},
		{"an unterminated double quote", "A=1\nexport SECRET_KEY=\"" + secret + "\n", 2, []string{"SECRET_KEY: unterminated double quote"}},
		{"an unterminated single quote", "DB_PASSWORD='" + secret + "\n", 1, []string{"DB_PASSWORD: unterminated single quote"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ".env")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := ReadEnvFile(path, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, want := range append([]string{fmt.Sprintf("env_file %s:%d: ", path, tc.line)}, tc.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			for i := 0; i+4 <= len(secret); i++ { // not even four characters of it
				if strings.Contains(msg, secret[i:i+4]) {
					t.Fatalf("error %q shows part of the value (%q)", msg, secret[i:i+4])
				}
			}
		})
	}
}

// FuzzParseEnv: whatever an env file holds, parseEnv does not panic; what
// it accepts has valid names and values an environment can carry; what it
// refuses is reported without the value: a run of 16 or more letters and
// digits after a line's "=" (the shape of a key or password) never appears
// in the error.
func FuzzParseEnv(f *testing.F) {
	for _, seed := range []string{
		"A=1\nB = two words \n", "# c\n\nA=1 # trailing\n", "export SECRET_KEY=abc\n", `A='x # y \n'`,
		`A="line\nnext \"q\" \\"`, "A=1\r\nB=2\r\n", "JUSTAWORD", "1A=x", `A="abc`, `A='abc`,
		"SECRET_KEY=\"k3y0f5ixteenchars0000\n", "A=\x00", "A B=sixteencharsormore99",
		"X=ABCDEFGHIJKLMNOPQRS\nABCDEFGHIJKLMNOPQRS=\"ABCDEFGHIJKLMNOPQRS",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		vars, err := parseEnv(text)
		if err == nil {
			for k, v := range vars {
				if !validEnvName(k) {
					t.Fatalf("accepted the name %q", k)
				}
				if strings.IndexByte(v, 0) >= 0 {
					t.Fatalf("accepted a value with a NUL for %s", k)
				}
			}
			return
		}
		le, ok := err.(*envLineError)
		if !ok {
			t.Fatalf("an error without its line: %v", err)
		}
		lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
		if le.line < 1 || le.line > len(lines) {
			t.Fatalf("the error names line %d of %d", le.line, len(lines))
		}
		name, value, ok := strings.Cut(lines[le.line-1], "=")
		if !ok {
			name, value = "", name // a line without "=" is all value, as far as anyone knows
		}
		for _, run := range secretRuns(value) {
			if strings.Contains(err.Error(), run) && !strings.Contains(name, run) { // the name may be shown
				t.Fatalf("the error %q shows %q from the file", err, run)
			}
		}
	})
}

// secretRuns is the runs of 16 or more ASCII letters and digits in s.
func secretRuns(s string) []string {
	var runs []string
	start := -1
	for i := 0; i <= len(s); i++ {
		alnum := i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9')
		if alnum && start < 0 {
			start = i
		}
		if !alnum && start >= 0 {
			if i-start >= 16 {
				runs = append(runs, s[start:i])
			}
			start = -1
		}
	}
	return runs
}

// FuzzEnvValueRoundTrip: any value without a NUL, written double-quoted
// with the escapes the parser knows, reads back as itself.
func FuzzEnvValueRoundTrip(f *testing.F) {
	for _, seed := range []string{"", "plain", " spaced ", "quote \" and \\ backslash", "multi\nline\r\n\ttab", "# not a comment", "é ☃", "='x'"} {
		f.Add(seed)
	}
	escape := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	f.Fuzz(func(t *testing.T, value string) {
		if strings.IndexByte(value, 0) >= 0 {
			return
		}
		text := "export NAME=\"" + escape.Replace(value) + "\"\n"
		vars, err := parseEnv(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if vars["NAME"] != value {
			t.Fatalf("%q read back as %q", value, vars["NAME"])
		}
	})
}

// TestEnvFileThatIsNotAFile: a FIFO (which would block the open, and with
// it the config load, for good), a device (/dev/zero would fill Caddy's
// memory), a directory and a file over 1 MiB are refused at once, saying
// what they are.
func TestEnvFileThatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.env")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.env")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.env")
	if err := os.WriteFile(big, []byte(strings.Repeat("A=1\n", 300_000)), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{fifo: "a named pipe (FIFO)", zero: "a device", dir: "a directory", big: "larger than 1048576 bytes"} {
		done := make(chan error, 1)
		go func() {
			_, err := ReadEnvFile(path, nil)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want an error saying %q", path, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: still reading after 5 s", path)
		}
	}
}

// TestEnvFileReadAsTheAccount: run as root, the env_file is read as the
// account the processes run as. A link the app's account puts in its own
// directory to a file only root (or another account) can read gives it
// nothing: the read fails, saying how to give that account the file.
// root's supplementary groups do not apply either.
func TestEnvFileReadAsTheAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading as another account needs root")
	}
	const appUID = 65534 // nobody
	nobody := &syscall.Credential{Uid: appUID, Gid: appUID}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	secrets := filepath.Join(base, "etc")
	os.Mkdir(secrets, 0o700)
	rootOnly := filepath.Join(secrets, "caddy.env")
	os.WriteFile(rootOnly, []byte("DDNS_TSIG_KEY=root-only-secret\n"), 0o600)
	// a file of a group Caddy (root) is in: root's supplementary groups must
	// not apply to the read as nobody
	const admGID = 4
	groupRoot := filepath.Join(base, "group.env")
	os.WriteFile(groupRoot, []byte("ROOT_GROUP_SECRET=x\n"), 0o640)
	os.Chown(groupRoot, 0, admGID)
	groups, _ := syscall.Getgroups()
	if err := syscall.Setgroups([]int{admGID}); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setgroups(groups)
	app := filepath.Join(base, "app")
	os.Mkdir(app, 0o755)
	os.Chown(app, appUID, appUID)
	own := filepath.Join(app, "own.env")
	os.WriteFile(own, []byte("DATABASE_PASSWORD=the-apps-own\n"), 0o600)
	os.Chown(own, appUID, appUID)
	link := filepath.Join(app, ".env")
	os.Symlink(rootOnly, link)
	os.Lchown(link, appUID, appUID)

	if vars, err := ReadEnvFile(own, nobody); err != nil || vars["DATABASE_PASSWORD"] != "the-apps-own" {
		t.Errorf("the account's own env_file: %v %v", vars, err)
	}
	vars, err := ReadEnvFile(groupRoot, nobody)
	if err == nil || !strings.Contains(err.Error(), "cannot read it") || !strings.Contains(err.Error(), "chown nobody "+groupRoot) {
		t.Errorf("%s read as nobody: %v, %v; want refused, with the chown that fixes it", groupRoot, vars, err)
	}
	// through a link: refused, and no chown advised (it would follow the
	// link and give root's file away)
	vars, err = ReadEnvFile(link, nobody)
	if err == nil || !strings.Contains(err.Error(), "leads to "+rootOnly) || strings.Contains(err.Error(), "chown") {
		t.Errorf("%s read as nobody: %v, %v; want refused, naming where the link leads, advising no chown", link, vars, err)
	}
	if vars, err := ReadEnvFile(link, nil); err != nil || vars["DDNS_TSIG_KEY"] != "root-only-secret" {
		t.Errorf("read as Caddy's own account (root): %v %v", vars, err)
	}
	// the switch stays on its thread: Caddy reads as root afterwards
	if _, err := os.ReadFile(rootOnly); err != nil {
		t.Errorf("after reading as nobody, root cannot read %s: %v", rootOnly, err)
	}
}

// TestEnvFilePlaceholder: `env DB_PASSWORD {file.<path>}` reads the file
// as an env_file is read: as the account the processes run as (a link the
// app's account put in its own directory to a file only Caddy's root can
// read gives it nothing), only a regular file (a FIFO would block the load
// for good), and a file that cannot be read is an error, not an empty
// secret.
func TestEnvFilePlaceholder(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "db-password")
	os.WriteFile(own, []byte("s3cret\n"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	build := func(value string, as *syscall.Credential) ([]string, error) {
		done := make(chan struct{})
		var env []string
		var err error
		go func() {
			defer close(done)
			env, err = Env{Vars: map[string]string{"DB_PASSWORD": value}, Credential: as}.build(nil, lookupAccount)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: still reading after 5 s", value)
		}
		return env, err
	}
	if env, err := build("pw:{file."+own+"}", nil); err != nil || !slices.Contains(env, "DB_PASSWORD=pw:s3cret") {
		t.Errorf("{file.*} of a readable file: %v %v", env, err)
	}
	for value, want := range map[string]string{
		"{file." + fifo + "}":        "a named pipe (FIFO), not a file",
		"{file." + dir + "/missing}": "no such file",
		"{file." + dir + "}":         "a directory",
	} {
		if env, err := build(value, nil); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "env DB_PASSWORD's {file.") {
			t.Errorf("%s: %v %v, want an error saying %q", value, env, err, want)
		}
	}
	if os.Geteuid() != 0 {
		t.Log("reading as another account needs root: skipped")
		return
	}
	const appUID = 65534 // nobody
	nobody := &syscall.Credential{Uid: appUID, Gid: appUID}
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	secrets := filepath.Join(dir, "caddy")
	os.Mkdir(secrets, 0o700)
	rootOnly := filepath.Join(secrets, "site.key")
	os.WriteFile(rootOnly, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600)
	app := filepath.Join(dir, "app")
	os.Mkdir(app, 0o755)
	os.Chown(app, appUID, appUID)
	link := filepath.Join(app, "db-password")
	os.Symlink(rootOnly, link)
	os.Lchown(link, appUID, appUID)
	env, err := build("{file."+link+"}", nobody)
	if err == nil || !strings.Contains(err.Error(), "leads to "+rootOnly) {
		t.Errorf("a link to root's file read for nobody: %v %v, want refused", env, err)
	}
	for _, kv := range env {
		if strings.Contains(kv, "PRIVATE KEY") {
			t.Errorf("root's file reached the environment: %s", kv)
		}
	}
}
