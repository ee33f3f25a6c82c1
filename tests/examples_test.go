package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The example apps are tested through their own Caddyfiles: each test copies
// the example into a temporary directory (so its database and collected
// static files never touch the repository), points HEARTH_EXAMPLES at the
// copy, and serves the example's Caddyfile with its site address moved to a
// free loopback port and its global block replaced by the harness's.

// copyExample copies examples/<name> to <tmp>/examples/<name>, leaving out
// what the example generates (database, collected static files, bytecode),
// and returns <tmp>/examples.
func copyExample(t *testing.T, name string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "examples")
	src := repoPath("examples", name)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		dst := filepath.Join(root, name, rel)
		switch {
		case d.Name() == "db.sqlite3" || d.Name() == "staticfiles" || d.Name() == "__pycache__" || d.Name() == ".env":
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copying example %s: %v", name, err)
	}
	return root
}

// exampleCaddyfile returns examples/<name>/Caddyfile with the harness's
// admin address in its global options block (in place of its own) and
// with site address addr replaced by a free loopback port; it also
// returns the URL.
func exampleCaddyfile(t *testing.T, name, addr string) (string, string) {
	t.Helper()
	data, err := os.ReadFile(repoPath("examples", name, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	global := regexp.MustCompile(`(?ms)^\{\n.*?^\}\n`)
	if !global.MatchString(text) {
		t.Fatalf("examples/%s/Caddyfile has no global options block", name)
	}
	block := global.FindString(text)
	own := regexp.MustCompile(`(?m)^\tadmin .*\n`).ReplaceAllString(block, "")
	text = strings.Replace(text, block, strings.Replace(own, "{\n", "{\n\tadmin {ADMIN}\n", 1), 1)
	text = text[strings.Index(text, "{\n\tadmin {ADMIN}"):] // from the block on: the harness sees a config that brings its own global options
	if !strings.Contains(text, addr+" {") {
		t.Fatalf("examples/%s/Caddyfile has no site block %q", name, addr)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	return strings.Replace(text, addr+" {", base+" {", 1), base
}

// startExample serves a copy of examples/<name> and returns its caddy, the
// site URL and the copy's directory.
func startExample(t *testing.T, name, addr string) (*caddyProc, string, string) {
	t.Helper()
	root := copyExample(t, name)
	t.Setenv("HEARTH_EXAMPLES", root) // read by the Caddyfile: {$HEARTH_EXAMPLES:examples}
	config, base := exampleCaddyfile(t, name, addr)
	c := startCaddy(t, config)
	return c, base, filepath.Join(root, name)
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetch sends a GET (form == nil) or a form POST and returns the response and body.
func fetch(t *testing.T, client *http.Client, target string, form url.Values) (*http.Response, string) {
	t.Helper()
	var resp *http.Response
	var err error
	if form == nil {
		resp, err = client.Get(target)
	} else {
		resp, err = client.PostForm(target, form)
	}
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading body: %v", target, err)
	}
	return resp, string(body)
}

// postRedirectsHome posts form to base+path in client's session and fails
// the test unless the answer redirects to "/" with status; it returns the
// home page fetched afterwards.
func postRedirectsHome(t *testing.T, client *http.Client, base, path string, form url.Values, status int) string {
	t.Helper()
	resp, body := fetch(t, client, base+path, form)
	if resp.StatusCode != status || resp.Header.Get("Location") != "/" {
		t.Fatalf("POST %s: %d Location %q\n%s", path, resp.StatusCode, resp.Header.Get("Location"), body)
	}
	_, page := fetch(t, client, base+"/", nil)
	return page
}

// hiddenInput finds the value of the hidden form field name in page.
func hiddenInput(t *testing.T, page, name string) string {
	t.Helper()
	m := regexp.MustCompile(`<input type="hidden" name="` + regexp.QuoteMeta(name) + `" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no hidden %s field in page:\n%s", name, page)
	}
	return m[1]
}

// servedByWorkers is how many requests the app's workers have completed,
// read once every worker is idle (the count is taken when a request ends).
func servedByWorkers(t *testing.T, c *caddyProc) int64 {
	t.Helper()
	var total int64
	waitFor(t, 10*time.Second, "idle workers", func() bool {
		total = 0
		for _, a := range c.mustApps() {
			for _, w := range a.Workers {
				if w.State != "idle" {
					return false
				}
				total += w.Requests
			}
		}
		return true
	})
	return total
}

// checkStatic fetches each path and wants 200 with the content of the file
// beside it, served by Caddy's file_server: no worker sees the request.
func checkStatic(t *testing.T, c *caddyProc, base string, files map[string]string) {
	t.Helper()
	before := servedByWorkers(t, c)
	for path, file := range files {
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp, body := fetch(t, browser(t), base+path, nil)
		if resp.StatusCode != 200 || body != string(want) {
			t.Errorf("GET %s: %d, %d bytes; want 200 with the %d bytes of %s", path, resp.StatusCode, len(body), len(want), file)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		if resp.Header.Get("Etag") == "" {
			t.Errorf("GET %s: no Etag, so not from file_server: %v", path, resp.Header)
		}
	}
	if resp, _ := fetch(t, browser(t), base+"/static/no-such-file.css", nil); resp.StatusCode != 404 {
		t.Errorf("GET a missing static file: %d, want 404", resp.StatusCode)
	}
	if after := servedByWorkers(t, c); after != before {
		t.Errorf("static requests reached the Python workers (%d requests before, %d after)", before, after)
	}
}

func TestExampleDjango(t *testing.T) {
	c, base, dir := startExample(t, "django", "http://localhost:2929, http://127.0.0.1:2929")
	if apps := c.mustApps(); len(apps) != 1 || apps[0].Name != "engwrite" || len(apps[0].Workers) != 2 {
		t.Fatalf("status: %+v", apps)
	}
	// the before_start commands ran: migrated, then collected static files
	for _, f := range []string{"db.sqlite3", "staticfiles/notes/notes.css", "staticfiles/admin/css/base.css"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("before_start did not create %s: %v", f, err)
		}
	}

	client := browser(t)
	resp, page := fetch(t, client, base+"/", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `<form method="post" action="/"`) || !strings.Contains(page, `name="title"`) {
		t.Fatalf("GET /: %d\n%s", resp.StatusCode, page)
	}
	if !strings.Contains(page, `href="/static/notes/notes.css"`) {
		t.Errorf("page does not link its stylesheet:\n%s", page)
	}
	token := hiddenInput(t, page, "csrfmiddlewaretoken")

	// a POST with the token and the csrftoken cookie creates the note and redirects
	title := fmt.Sprintf("Note from the test %d", time.Now().UnixNano())
	page = postRedirectsHome(t, client, base, "/", url.Values{"csrfmiddlewaretoken": {token}, "title": {title}, "body": {"line one\nline two"}}, 302)
	if !strings.Contains(page, "<h2>"+title+"</h2>") || !strings.Contains(page, "line one<br>line two") {
		t.Errorf("the new note is not listed:\n%s", page)
	}

	// without the token: 403, and nothing is created
	resp, body := fetch(t, client, base+"/", url.Values{"title": {"forged"}, "body": {"x"}})
	if resp.StatusCode != 403 || !strings.Contains(body, "CSRF") {
		t.Errorf("POST without CSRF token: %d\n%s", resp.StatusCode, body)
	}
	if _, page = fetch(t, client, base+"/", nil); strings.Contains(page, "forged") {
		t.Errorf("a POST without CSRF token created a note")
	}

	// the admin
	resp, body = fetch(t, browser(t), base+"/admin/login/", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="login-form"`) || !strings.Contains(body, `name="csrfmiddlewaretoken"`) {
		t.Errorf("GET /admin/login/: %d\n%s", resp.StatusCode, body)
	}
	resp, _ = fetch(t, browser(t), base+"/admin/", nil)
	if resp.StatusCode != 302 || !strings.HasPrefix(resp.Header.Get("Location"), "/admin/login/") {
		t.Errorf("GET /admin/ while logged out: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// production settings: DEBUG off, so no debug page
	if resp, body = fetch(t, browser(t), base+"/no-such-page/", nil); resp.StatusCode != 404 || strings.Contains(body, "URLconf") {
		t.Errorf("GET a missing page: %d, debug page shown: %v", resp.StatusCode, strings.Contains(body, "URLconf"))
	}
	// a foreign Host matches no site block, so it never reaches Django
	// (whose ALLOWED_HOSTS would refuse it too)
	req, _ := http.NewRequest("GET", base+"/", nil)
	req.Host = "evil.example"
	r, err := browser(t).Do(req)
	if err != nil {
		t.Fatalf("GET with a foreign Host: %v", err)
	}
	foreign, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if len(foreign) != 0 {
		t.Errorf("GET with a foreign Host was served: %d\n%s", r.StatusCode, foreign)
	}

	checkStatic(t, c, base, map[string]string{
		"/static/notes/notes.css":    filepath.Join(dir, "notes", "static", "notes", "notes.css"),
		"/static/admin/css/base.css": filepath.Join(dir, "staticfiles", "admin", "css", "base.css"),
	})
}

func TestExampleFlask(t *testing.T) {
	c, base, dir := startExample(t, "flask", "http://127.0.0.1:3030")
	if apps := c.mustApps(); len(apps) != 1 || apps[0].Name != "guestbook" || len(apps[0].Workers) != 2 {
		t.Fatalf("status: %+v", apps)
	}
	if _, err := os.Stat(filepath.Join(dir, "db.sqlite3")); err != nil {
		t.Errorf("before_start (flask init-db) did not create the database: %v", err)
	}

	client := browser(t)
	resp, page := fetch(t, client, base+"/", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `<form method="post" action="/sign"`) || !strings.Contains(page, "Nobody has signed yet.") {
		t.Fatalf("GET /: %d\n%s", resp.StatusCode, page)
	}
	token := hiddenInput(t, page, "csrf_token")

	// a POST with the session's token adds the entry and redirects
	name := fmt.Sprintf("Tester %d", time.Now().UnixNano())
	page = postRedirectsHome(t, client, base, "/sign", url.Values{"csrf_token": {token}, "name": {name}, "message": {"Hello <from> the test"}}, 303)
	if !strings.Contains(page, "<strong>"+name+"</strong>") || !strings.Contains(page, "Hello &lt;from&gt; the test") {
		t.Errorf("the new entry is not listed (escaped):\n%s", page)
	}
	// an empty message is refused
	if resp, _ = fetch(t, client, base+"/sign", url.Values{"csrf_token": {token}, "name": {"x"}}); resp.StatusCode != 400 {
		t.Errorf("POST /sign without a message: %d, want 400", resp.StatusCode)
	}

	// without the token, with a wrong one, or from another session (no cookie): 403
	for what, post := range map[string]struct {
		client *http.Client
		form   url.Values
	}{
		"no token":    {client, url.Values{"name": {"forged"}, "message": {"x"}}},
		"wrong token": {client, url.Values{"csrf_token": {token + "x"}, "name": {"forged"}, "message": {"x"}}},
		"no session":  {browser(t), url.Values{"csrf_token": {token}, "name": {"forged"}, "message": {"x"}}},
	} {
		if resp, body := fetch(t, post.client, base+"/sign", post.form); resp.StatusCode != 403 || !strings.Contains(body, "CSRF") {
			t.Errorf("POST /sign with %s: %d\n%s", what, resp.StatusCode, body)
		}
	}

	// the JSON API sees the entry and none of the forged ones
	resp, body := fetch(t, browser(t), base+"/api/entries", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/entries: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var api struct {
		Entries []struct {
			ID      int    `json:"id"`
			Name    string `json:"name"`
			Message string `json:"message"`
			Created string `json:"created"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(body), &api); err != nil {
		t.Fatalf("GET /api/entries: %v\n%s", err, body)
	}
	if len(api.Entries) != 1 || api.Entries[0].Name != name || api.Entries[0].Message != "Hello <from> the test" || api.Entries[0].Created == "" {
		t.Errorf("GET /api/entries: %+v", api.Entries)
	}

	checkStatic(t, c, base, map[string]string{
		"/static/guestbook.css": filepath.Join(dir, "static", "guestbook.css"),
	})
}

// TestDDNSExamplesStayOffline: as they are (no environment set), the
// examples' ddns blocks ask no address service on the internet: their
// sources default to a fixed documentation address.
func TestDDNSExamplesStayOffline(t *testing.T) {
	t.Parallel()
	for _, example := range []string{"homeserver", "ddns"} {
		cmd := exec.Command(caddyBinary(t), "adapt", "--config", repoPath("examples", example, "Caddyfile"), "--adapter", "caddyfile")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("adapting examples/%s: %v", example, err)
		}
		var cfg struct {
			Apps struct {
				DDNS struct {
					IPSources []struct {
						Source string `json:"source"`
					} `json:"ip_sources"`
				} `json:"ddns"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		sources := cfg.Apps.DDNS.IPSources
		if len(sources) == 0 {
			t.Errorf("examples/%s: no ip_source", example)
		}
		for _, s := range sources {
			if s.Source != "static" {
				t.Errorf("examples/%s asks %q for the address when run as it is: it must run offline", example, s.Source)
			}
		}
	}
}
