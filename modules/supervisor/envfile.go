package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ReadEnvFile parses a dotenv file: KEY=value lines, blank lines and
// # comments ignored, an optional `export ` prefix, values optionally in
// single quotes (taken literally) or double quotes (with \n, \t, \" and \\
// escapes). Unquoted values end at " #" (an inline comment) and are trimmed.
func ReadEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("env_file: %w", err)
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
	for n, line := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
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
		return v[1 : end+1], nil
	case '"':
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			c := v[i]
			switch {
			case c == '"':
				return b.String(), nil
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
	if i := strings.Index(v, " #"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v), nil
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
