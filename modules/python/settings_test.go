package python

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoredSecretKeyPerAppIdentity: `settings auto` keeps one key per
// name and directory; a key stored by name alone (earlier versions) goes
// to the first app of that name that asks, and only to it; a key file or
// directory someone else could have made is refused.
func TestStoredSecretKeyPerAppIdentity(t *testing.T) {
	const legacyKey = "legacy-key-0123456789-0123456789-0123456789"
	type call struct {
		name, dir string
		same      int    // the key must equal that of call #same (1-based), or differ from all earlier ones when 0
		migrated  bool   // the call adopts the name-only key
		err       string // the call fails with this
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, secrets string)
		calls []call
	}{
		{"one app, twice", nil, []call{
			{name: "app", dir: "/srv/a"},
			{name: "app", dir: "/srv/a", same: 1},
		}},
		{"one name, two directories", nil, []call{
			{name: "app", dir: "/srv/a"},
			{name: "app", dir: "/srv/b"},
			{name: "app", dir: "/srv/a", same: 1},
		}},
		{"two names, one directory", nil, []call{
			{name: "app", dir: "/srv/a"},
			{name: "other", dir: "/srv/a"},
		}},
		{"a name that is no file name", nil, []call{
			{name: "../../escape", dir: "/srv/a"},
			{name: "../../escape", dir: "/srv/a", same: 1},
		}},
		{"a key stored by name alone goes to the first app of that name", func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, "app.key"), legacyKey)
		}, []call{
			{name: "app", dir: "/srv/a", migrated: true},
			{name: "app", dir: "/srv/a", same: 1},
			{name: "app", dir: "/srv/b"},
		}},
		{"a key stored by another name stays", func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, "other.key"), legacyKey)
		}, []call{
			{name: "app", dir: "/srv/a"},
		}},
		{"a key file that is a symbolic link", func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, "elsewhere"), legacyKey)
			os.Symlink(filepath.Join(secrets, "elsewhere"), filepath.Join(secrets, keyFileName("app", "/srv/a")))
		}, []call{
			{name: "app", dir: "/srv/a", err: "is a symbolic link"},
		}},
		{"a key file too short", func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, keyFileName("app", "/srv/a")), "short")
		}, []call{
			{name: "app", dir: "/srv/a", err: "holds no usable secret key"},
		}},
		{"a secrets directory others can write", func(t *testing.T, secrets string) {
			os.Chmod(secrets, 0o777)
		}, []call{
			{name: "app", dir: "/srv/a", err: "is writable by group or others"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			t.Setenv("XDG_DATA_HOME", data)
			secrets := filepath.Join(data, "caddy", "hearth", "secrets")
			if err := os.MkdirAll(secrets, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, secrets)
			}
			var keys []string
			for i, c := range tc.calls {
				key, migrated, err := storedSecretKey(c.name, c.dir, true)
				if c.err != "" {
					if err == nil || !strings.Contains(err.Error(), c.err) {
						t.Fatalf("call %d: %v, want an error with %q", i+1, err, c.err)
					}
					return
				}
				if err != nil {
					t.Fatalf("call %d: %v", i+1, err)
				}
				if len(key) < 32 || migrated != c.migrated || (c.migrated && key != legacyKey) {
					t.Errorf("call %d: key %q, migrated %v", i+1, key, migrated)
				}
				for j, earlier := range keys {
					if (c.same == j+1) != (key == earlier) {
						t.Errorf("call %d (%s in %s): same key as call %d: %v, want %v", i+1, c.name, c.dir, j+1, key == earlier, c.same == j+1)
					}
				}
				keys = append(keys, key)
				info, err := os.Lstat(filepath.Join(secrets, keyFileName(c.name, c.dir)))
				if err != nil || info.Mode().Perm() != 0o600 {
					t.Errorf("call %d: key file %v %v", i+1, info, err)
				}
			}
			if strings.Contains(tc.name, "first app") {
				if _, err := os.Stat(filepath.Join(secrets, "app.key")); err == nil {
					t.Errorf("the name-only key file is still there: a second app of that name could take it")
				}
			}
			filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && filepath.Dir(path) != secrets {
					t.Errorf("%s written outside the secrets directory", path)
				}
				return nil
			})
			if info, _ := os.Stat(secrets); info.Mode().Perm() != 0o700 {
				t.Errorf("secrets directory mode %v", info.Mode())
			}
		})
	}
}

func writeKey(t *testing.T, path, key string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}
