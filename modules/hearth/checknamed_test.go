package hearth

import (
	"errors"
	"strings"
	"testing"
)

type namedConfig struct {
	name string
	bad  bool
}

func (c *namedConfig) check() error {
	if c.bad {
		return errors.New("bad config " + c.name)
	}
	return nil
}

func TestCheckNamed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		configs []*namedConfig
		want    string // "" for no error
	}{
		{"unique", []*namedConfig{{name: "a"}, {name: "b"}}, ""},
		{"none", nil, ""},
		{"twice", []*namedConfig{{name: "a"}, {name: "b"}, {name: "a"}}, "two jobs are named a; give each its own name"},
		{"missing", []*namedConfig{{name: "a"}, nil}, "jobs: an empty job"},
		{"own check", []*namedConfig{{name: "a"}, {name: "b", bad: true}}, "bad config b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkNamed("jobs", tc.configs, "an empty job", (*namedConfig).check,
				func(c *namedConfig) string { return c.name })
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// What an app or a remote service wrote reaches a terminal (maybe root's)
// without an escape sequence.
func TestForTerminal(t *testing.T) {
	for _, tc := range []struct{ in, oneLine, lines string }{
		{"plain text", "plain text", "plain text"},
		{"two\nlines\ttab", "two lines tab", "two\nlines tab"},
		{"\x1b]0;owned\x07\x1b[2J clear", "?]0;owned?\x3f[2J clear", "?]0;owned??[2J clear"},
		{"c1 \u009b31m csi", "c1 ?31m csi", "c1 ?31m csi"},
		{"bad \xff utf-8 \x7f", "bad ? utf-8 ?", "bad ? utf-8 ?"},
		{"crlf\r\nline 10%\r20%", "crlf  line 10% 20%", "crlf\nline 10%20%"},
	} {
		if got := printable(tc.in); got != tc.oneLine {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.oneLine)
		}
		if got := printableLines(tc.in); got != tc.lines {
			t.Errorf("printableLines(%q) = %q, want %q", tc.in, got, tc.lines)
		}
	}
}
