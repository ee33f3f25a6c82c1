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
