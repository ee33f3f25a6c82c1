package supervisor

import (
	"strings"
	"testing"
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
		{"bad name", "1A=x", nil, "line 1: expected KEY=value"},
		{"unterminated double", `A="abc`, nil, "line 1 (A): unterminated double quote"},
		{"unterminated single", `A='abc`, nil, "line 1 (A): unterminated single quote"},
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
