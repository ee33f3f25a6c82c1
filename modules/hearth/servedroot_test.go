package hearth

import (
	"os"
	"path/filepath"
	"testing"
)

func TestServedRootOf(t *testing.T) {
	dir := t.TempDir()
	public := filepath.Join(dir, "public")
	elsewhere := filepath.Join(dir, "elsewhere")
	for _, d := range []string{public, elsewhere} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link") // elsewhere/… reached through a link into public
	if err := os.Symlink(filepath.Join(public), link); err != nil {
		t.Fatal(err)
	}
	rootLink := filepath.Join(dir, "root-link") // a served root that is a link to elsewhere
	if err := os.Symlink(elsewhere, rootLink); err != nil {
		t.Fatal(err)
	}
	roots := []string{public, rootLink}
	for _, tc := range []struct {
		path, want string
	}{
		{public, public},
		{filepath.Join(public, "backups"), public},
		{filepath.Join(public, "a", "b", "c"), public},
		{public + "2", ""},                              // a sibling that shares the prefix
		{dir, ""},                                       // the parent of a root
		{filepath.Join(dir, "private", "backups"), ""},  // elsewhere
		{link, public},                                  // a link into a root
		{filepath.Join(link, "new", "backups"), public}, // below it, not made yet
		{filepath.Join(elsewhere, "x"), rootLink},       // inside a root that is a link
		{filepath.Join(public, "..", "private"), ""},    // .. leaves the root
	} {
		if got := ServedRootOf(tc.path, roots); got != tc.want {
			t.Errorf("ServedRootOf(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := ServedRootOf(public, nil); got != "" {
		t.Errorf("no roots: %q", got)
	}
}
