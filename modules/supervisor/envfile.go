package supervisor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hearth-dev/hearth/modules/internal/regularfile"
)

// maxEnvFile bounds an env_file: a dotenv file is a few kilobytes.
const maxEnvFile = 1 << 20

// ReadEnvFile parses a dotenv file: KEY=value lines, blank lines and
// # comments ignored, an optional `export ` prefix, values optionally in
// single quotes (taken literally) or double quotes (with \n, \t, \" and \\
// escapes). Unquoted values end at " #" (an inline comment) and are trimmed.
//
// The file is read as the account the process will run as (as; nil is
// Caddy's own), with that account's file-system identity: the process then
// gets only what its account could read itself. Read with Caddy's, a root
// Caddy would hand an app another app's secrets, or root's, through a link
// the app's account put in its own directory. Only a regular file of at
// most 1 MiB is read (a FIFO would hang the config load, /dev/zero fill
// Caddy's memory).
func ReadEnvFile(path string, as *syscall.Credential) (map[string]string, error) {
	data, err := readEnvData(path, as)
	if err != nil {
		return nil, err
	}
	vars, err := parseEnv(string(data))
	if le, ok := err.(*envLineError); ok {
		return nil, fmt.Errorf("env_file %s:%d: %s", path, le.line, le.problem)
	}
	if err != nil {
		return nil, fmt.Errorf("env_file %s: %w", path, err)
	}
	return vars, nil
}

// readEnvData reads the env_file at path as the account as (see ReadEnvFile).
func readEnvData(path string, as *syscall.Credential) ([]byte, error) {
	return readAsAccount("env_file "+path, "a file of KEY=value lines", path, as)
}

// readAsAccount reads the regular file at path (at most maxEnvFile bytes)
// as the account as, as ReadEnvFile reads an env_file; what names the file
// in errors ("env_file /srv/app/.env"), and wants says what it should be.
func readAsAccount(what, wants, path string, as *syscall.Credential) ([]byte, error) {
	var data []byte
	var err error
	read := func() { data, err = readRegularFile(path, maxEnvFile) }
	switch {
	case as != nil && (int(as.Uid) != os.Geteuid() || int(as.Gid) != os.Getegid()) && CanSwitchUsers():
		if serr := asAccount(as, read); serr != nil {
			return nil, fmt.Errorf("%s: reading it as the account the processes run as: %w", what, serr)
		}
	default:
		read()
	}
	var notRegular *regularfile.NotRegularError
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, fs.ErrPermission) && as != nil && CanSwitchUsers():
		who := strconv.FormatUint(uint64(as.Uid), 10)
		if a, err := lookupAccount(who); err == nil && a.name != "" {
			who = a.name
		}
		if info, lerr := os.Lstat(path); lerr == nil && info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(path)
			// never advise a chown through a link: it would give the
			// account whatever file the link leads to
			return nil, fmt.Errorf("%s leads to %s, which %s, the account the processes run as, cannot read (%w): Hearth reads it as that account, so that a link cannot hand it a file it could not read; if that file is meant for this app, give the app a file of its own (not a link) that %s owns, mode 600",
				what, target, who, err, who)
		}
		return nil, fmt.Errorf("%s: %s, the account the processes run as, cannot read it (%w): Hearth reads it as that account, which gets its values anyway; make it that account's (chown %s %s && chmod 600 %s), and the directories above it enterable by it",
			what, who, err, who, path, path)
	case errors.As(err, &notRegular):
		return nil, fmt.Errorf("%s is %s, not a file: give %s", what, notRegular.Kind, wants)
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("%s is larger than %d bytes: is it the right file? (give %s)", what, maxEnvFile, wants)
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// errTooLarge is a file over the size readRegularFile reads.
var errTooLarge = errors.New("file too large")

// readRegularFile reads the regular file at path, at most limit bytes,
// and refuses anything else (a FIFO, a device, a directory) without
// opening it (regularfile.Open).
func readRegularFile(path string, limit int64) ([]byte, error) {
	f, err := regularfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > limit {
		return nil, errTooLarge
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		return nil, errTooLarge
	}
	return data, err
}

// envLineError is a line of an env file that does not parse. Its text
// names the line and, when it has one, the variable, never the line's
// text: that may be a secret (a value pasted without its name, or a
// value whose quote is not closed).
type envLineError struct {
	line    int
	problem string
}

func (e *envLineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.problem) }

// badName describes what is wrong with name, which is not a variable
// name, without quoting it.
func badName(name string) string {
	if name == "" {
		return `nothing before "=": expected KEY=value`
	}
	for i, c := range name {
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		what := fmt.Sprintf("%q", string(c))
		if c >= '0' && c <= '9' {
			what = "a digit"
		} else if c == ' ' || c == '\t' {
			what = "a space"
		} else if c > 0x7e || c < 0x20 {
			what = "a non-ASCII or control character"
		}
		return fmt.Sprintf(`the name before "=" is not a variable name: %s at column %d (names are letters, digits and _, not starting with a digit; the text is not shown, it may be a secret)`, what, i+1)
	}
	return `the name before "=" is not a variable name`
}

func parseEnv(text string) (map[string]string, error) {
	vars := map[string]string{}
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n") // a file with lone CRs ends its lines with them
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return nil, &envLineError{n + 1, `expected KEY=value, and the line has no "=" (its text is not shown: it may be a secret)`}
		}
		if !validEnvName(key) {
			return nil, &envLineError{n + 1, badName(key)}
		}
		value, err := parseEnvValue(strings.TrimSpace(value))
		if err == nil {
			err = checkEnvValue(value)
		}
		if err != nil {
			return nil, &envLineError{n + 1, key + ": " + err.Error() + " (the value is not shown)"}
		}
		vars[key] = value
	}
	return vars, nil
}

func parseEnvValue(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	switch v[0] {
	case '\'':
		end := strings.IndexByte(v[1:], '\'')
		if end < 0 {
			return "", fmt.Errorf("unterminated single quote")
		}
		return v[1 : end+1], afterQuote(v[end+2:])
	case '"':
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			c := v[i]
			switch {
			case c == '"':
				return b.String(), afterQuote(v[i+1:])
			case c == '\\' && i+1 < len(v):
				i++
				switch v[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				case 'r':
					b.WriteByte('\r')
				default:
					b.WriteByte(v[i])
				}
			default:
				b.WriteByte(c)
			}
		}
		return "", fmt.Errorf("unterminated double quote")
	}
	for i := 1; i < len(v); i++ { // an inline comment: a # after a space or tab
		if v[i] == '#' && (v[i-1] == ' ' || v[i-1] == '\t') {
			v = v[:i]
			break
		}
	}
	return strings.TrimSpace(v), nil
}

// afterQuote checks what follows a quoted value on its line: nothing, or a
// comment. `A='x' B='y'` would otherwise lose B without a word.
func afterQuote(rest string) error {
	if rest = strings.TrimSpace(rest); rest != "" && rest[0] != '#' {
		return errors.New("text after the closing quote (one KEY=value per line; a comment starts with #)")
	}
	return nil
}

// checkEnvValue refuses a value no environment can carry: a NUL byte
// would end it early in the child (execve takes C strings), and Go's
// process start refuses it, so the app would never start.
func checkEnvValue(v string) error {
	if strings.IndexByte(v, 0) >= 0 {
		return errors.New("the value holds a NUL byte, which no environment variable can carry")
	}
	return nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}
