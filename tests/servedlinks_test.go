package tests

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestServedLinksOfTheAppsAccount: the directory a file_server serves
// belongs to an app's account (collectstatic writes it). A link that
// account puts there to Caddy's private key, or anything else it could not
// read itself, is not followed (403, the key nowhere in the answer, and the
// log says which link and what to do); an administrator's (root's) link
// is, as in plain Caddy, and so are plain files.
// Both where openat2 is to be had and where a system call filter refuses
// it, as under the unit Hearth writes (RestrictSUIDSGID=).
func TestServedLinksOfTheAppsAccount(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("links of another account need root to make")
	}
	t.Run("openat2", func(t *testing.T) { servedLinks(t, "") })
	t.Run("openat2 refused", func(t *testing.T) {
		if runtime.GOARCH != "amd64" {
			t.Skip("tests/apps/seccompwrap.py filters x86_64 system calls")
		}
		servedLinks(t, "openat2:ENOSYS")
	})
}

// servedLinks is the test, Caddy started under a filter refusing the
// system calls refuse names (seccompwrap.py's list), or none.
func servedLinks(t *testing.T, refuse string) {
	const appUID = 65534 // nobody
	port := freePort(t)
	c := newCaddyProc(t, fmt.Sprintf(`
{
	admin {ADMIN}
	hearth {
		guard warn
	}
}
:%d {
	root * {TMP}/staticfiles
	file_server
}
`, port), "")
	static := filepath.Join(c.dir, "staticfiles")
	if err := os.Mkdir(static, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(static, appUID, appUID)
	os.WriteFile(filepath.Join(static, "app.css"), []byte("p{}"), 0o644)
	// where Caddy keeps its certificates' keys
	keys := filepath.Join(c.dir, "data", "caddy", "certificates", "acme", "example.net")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(keys, "example.net.key")
	os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n"), 0o600)
	for name, owner := range map[string]int{"a.css": appUID, "admin.css": 0} {
		link := filepath.Join(static, name)
		if err := os.Symlink(key, link); err != nil {
			t.Fatal(err)
		}
		os.Lchown(link, owner, owner)
	}
	if refuse != "" {
		c.underSeccomp(refuse)
	}
	c.start()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 30*time.Second, "the site", func() bool {
		resp, err := http.Get(base + "/app.css")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if resp, body := get(t, base+"/a.css"); resp.StatusCode != http.StatusForbidden || strings.Contains(body, "PRIVATE KEY") {
		t.Errorf("the app account's link to Caddy's key: %d %q", resp.StatusCode, body)
	}
	if resp, body := get(t, base+"/admin.css"); resp.StatusCode != 200 || !strings.Contains(body, "PRIVATE KEY") {
		t.Errorf("root's link: %d %q, want it followed as plain Caddy does", resp.StatusCode, body)
	}
	waitFor(t, 10*time.Second, "the refusal logged", func() bool {
		log := c.log.String()
		return strings.Contains(log, "not serving a file through a link") && strings.Contains(log, `"link_owner_uid":65534`)
	})
}
