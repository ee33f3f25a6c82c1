package supervisor

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
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
	if err != nil {
		return nil, fmt.Errorf("env_file %s: %w", path, err)
	}
	return vars, nil
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
		if !ok || !validEnvName(key) {
			return nil, fmt.Errorf("line %d: expected KEY=value, got %q", n+1, firstWords(line))
		}
		value, err := parseEnvValue(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", n+1, key, err)
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

// firstWords shortens a line for an error message without echoing a whole
// value (it may be a secret).
func firstWords(line string) string {
	if len(line) > 20 {
		return line[:20] + "…"
	}
	return line
}

// Environment builds a child's environment: Caddy's own, then adjust (for
// settings such as a venv's), then the env file, then env, whose values may
// use global placeholders such as {env.HOME}. It returns KEY=value lines,
// sorted.
func Environment(envFile string, env map[string]string, adjust func(vars map[string]string)) ([]string, error) {
	vars := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	if adjust != nil {
		adjust(vars)
	}
	if envFile != "" {
		fileVars, err := ReadEnvFile(envFile)
		if err != nil {
			return nil, err
		}
		for k, v := range fileVars {
			vars[k] = v
		}
	}
	repl := caddy.NewReplacer()
	for k, v := range env {
		if !validEnvName(k) {
			return nil, fmt.Errorf("env: %q is not a valid variable name", k)
		}
		vars[k] = repl.ReplaceKnown(v, "")
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}
