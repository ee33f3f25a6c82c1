package tests

import (
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/netinfo"
)

// chromium runs Debian's Chromium headless with args, on loopback pages
// only (no background networking), and returns its standard output.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): `make test` installs the chromium package", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, tail(stderr.String(), 20))
	}
	return string(out)
}

func TestDashboardInChromium(t *testing.T) {
	t.Parallel()
	dashPort, appPort, securePort, brokenPort := freePort(t), freePort(t), freePort(t), freePort(t)
	noCA := freePort(t) // an ACME CA where nothing listens: its certificate fails
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	skip_install_trust
	hearth {
		dashboard 127.0.0.1:%d
		service sleeper {
			command /bin/sleep 3600 --hidden-arg
		}
		job flaky {
			command /bin/sh -c "echo private-output; exit 4"
			schedule every 1s
		}
	}
%s
}
http://home.example.test:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 2
		guard warn
		env FLASK_DEBUG 1
	}
}
secure.example.test:%d {
	bind 127.0.0.1
	tls internal
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
broken.example.test:%d {
	bind 127.0.0.1
	tls {
		issuer acme {
			dir http://127.0.0.1:%d/directory
		}
	}
	wsgi hello:application {
		name broken
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} -m http.server --bind 127.0.0.1 --directory /nonexistent-process-secret-arg {port}
	}
}`, dashPort, dryRunDDNS("203.0.113.80"), appPort, securePort, brokenPort, noCA, freePort(t)))
	url := fmt.Sprintf("http://127.0.0.1:%d/", dashPort)
	waitFor(t, 30*time.Second, "the dry-run DDNS record on the page", func() bool {
		_, body := get(t, url)
		return strings.Contains(body, "203.0.113.80")
	})
	waitFor(t, 30*time.Second, "the HTTPS site's certificate", func() bool {
		_, body := get(t, url+"status.json")
		return strings.Contains(body, `"valid"`) && strings.Contains(body, `"failed"`) // certificates' states
	})
	waitFor(t, 30*time.Second, "a failed run of the job", func() bool {
		_, body := get(t, url+"status.json")
		return strings.Contains(body, `"last_result": "failed"`)
	})
	pids := c.workerPIDs()
	using, all := c.cpuUse()
	dom := chromium(t, "--dump-dom", url)
	for try := 1; try < 5 && jobRunning(dom, "flaky"); try++ {
		// a run under way (one a second) shows as running, its exit not
		// known yet: the page again, a moment later
		time.Sleep(200 * time.Millisecond)
		dom = chromium(t, "--dump-dom", url)
	}
	for _, want := range []string{
		fmt.Sprintf("Caddy's own code uses %d of %d CPUs", using, all),
		"<title>Hearth dashboard</title>", `id="service-hello"`, "home.example.test", "state-running",
		fmt.Sprint(pids[0]), fmt.Sprint(pids[1]), "HG-ENV-01", "DDNS would keep", "runs with <code>dry_run</code>: it writes nothing", "203.0.113.80", "refreshes every 5 seconds",
		// the HTTPS site's certificate, from Caddy's own CA here
		"Certificate for <code>secure.example.test</code>", "valid until", "Caddy Local Authority", "renews from",
		// one that could not be obtained, with the reason
		"Certificate for <code>broken.example.test</code>", "failed: visitors get a TLS error", "Last attempt failed:",
		fmt.Sprintf("127.0.0.1:%d", noCA),
		// the background service and the failing job
		"Background services", `id="background-sleeper"`, fmt.Sprint(servicePID(c, "sleeper")),
		"Jobs", `id="job-flaky"`, "every 1s", "failed", "exit status 4",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, truncateString(dom, 3000))
		}
	}
	_, status := get(t, url+"status.json")
	for _, private := range []string{"private-output", "--hidden-arg", "process-secret-arg"} { // output and command lines stay in the admin API
		if strings.Contains(dom, private) || strings.Contains(status, private) {
			t.Errorf("the dashboard shows %q", private)
		}
	}
	if strings.Contains(dom, "http://") && strings.Contains(dom, "<script src") {
		t.Errorf("the page loads external assets")
	}
	// a reload keeps the dashboard's socket
	if code, body := c.load(strings.Replace(c.lastConfig, "workers 2", "workers 1", 1)); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the dashboard after a reload", func() bool {
		resp, body := get(t, url)
		return resp.StatusCode == 200 && strings.Count(body, "<tr><td>") >= 1 && len(c.workerPIDs()) == 4 // 1 + the HTTPS sites' 2 + the process upstream
	})
	// a screenshot for people to look at
	dir := repoPath("tests", "artifacts")
	os.MkdirAll(dir, 0o755)
	shot := filepath.Join(dir, "dashboard.png")
	os.Remove(shot)
	chromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", url)
	info, err := os.Stat(shot)
	if err != nil || info.Size() < 10<<10 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	}
	// the dashboard listens on loopback only
	for _, l := range listeningOn(dashPort) {
		if !strings.HasPrefix(l, "127.0.0.1:") {
			t.Errorf("the dashboard listens on %s", l)
		}
	}
}

// listeningOn lists the local addresses listening on port, from /proc.
func listeningOn(port int) []string {
	var out []string
	for _, s := range tcpSockets() {
		if s.state == tcpListen && s.local.Port == port {
			out = append(out, s.local.String())
		}
	}
	return out
}

// tcpSocket is an IPv4 TCP socket of this network namespace, a row of
// /proc/net/tcp.
type tcpSocket struct {
	state         string // tcpListen, tcpEstablished, …
	local, remote net.TCPAddr
	// unread is what it received and was not read yet: on a listening
	// socket, the connections waiting to be accepted
	unread int
}

// The states of /proc/net/tcp's rows this package looks for.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// tcpSockets reads /proc/net/tcp (addresses decoded by netinfo, as the
// product does).
func tcpSockets() []tcpSocket {
	data, _ := os.ReadFile("/proc/net/tcp")
	var out []tcpSocket
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		localIP, localPort, ok1 := netinfo.ParseProcAddr(f[1])
		remoteIP, remotePort, ok2 := netinfo.ParseProcAddr(f[2])
		var tx, rx int
		if _, err := fmt.Sscanf(f[4], "%x:%x", &tx, &rx); err != nil || !ok1 || !ok2 {
			continue
		}
		out = append(out, tcpSocket{state: f[3], local: net.TCPAddr{IP: localIP, Port: localPort}, remote: net.TCPAddr{IP: remoteIP, Port: remotePort}, unread: rx})
	}
	return out
}

// dashboardGet sends GET url with the given Host header.
func dashboardGet(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDashboardChecksHost: the dashboard answers loopback names, the host
// of its listen address and the names given with `hosts`; any other Host
// (a page that rebinds its own name to this machine: DNS rebinding) gets
// 403 and a message naming the option, in a real browser too.
func TestDashboardChecksHost(t *testing.T) {
	t.Parallel()
	dashPort, appPort := freePort(t), freePort(t)
	startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		dashboard 127.0.0.2:%d {
			hosts box.lan
		}
	}
}
:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard warn
	}
}`, dashPort, appPort))
	base := fmt.Sprintf("http://127.0.0.2:%d", dashPort)
	p := fmt.Sprint(dashPort)
	for _, path := range []string{"/", "/status.json"} {
		for _, host := range []string{"127.0.0.2:" + p, "127.0.0.2", "localhost:" + p, "localhost", "127.0.0.1:" + p, "[::1]:" + p, "box.lan", "BOX.LAN:" + p} {
			if code, body := dashboardGet(t, base+path, host); code != 200 || !strings.Contains(body, "hello") {
				t.Errorf("GET %s with Host %s: %d, want 200 with the hello service:\n%s", path, host, code, truncateString(body, 500))
			}
		}
		for _, host := range []string{"evil.example", "evil.example:" + p, "box.lan.evil.example", "127.0.0.3:" + p} {
			code, body := dashboardGet(t, base+path, host)
			if code != http.StatusForbidden && code != http.StatusMisdirectedRequest {
				t.Errorf("GET %s with Host %s: %d, want 403 or 421:\n%s", path, host, code, truncateString(body, 500))
			}
			if strings.Contains(body, "hello") || !strings.Contains(body, "does not answer to the host") || !strings.Contains(body, "hosts <name>...") {
				t.Errorf("GET %s with Host %s: the refusal shows data or does not say how to fix it:\n%s", path, host, truncateString(body, 500))
			}
		}
	}
	// a browser whose DNS gives evil.example the dashboard's address
	dom := chromium(t, "--no-proxy-server", fmt.Sprintf("--host-resolver-rules=MAP evil.example 127.0.0.2:%d", dashPort),
		"--dump-dom", fmt.Sprintf("http://evil.example:%d/", dashPort))
	if strings.Contains(dom, "hello") || !strings.Contains(dom, "does not answer to the host") {
		t.Errorf("a page under a rebound name read the dashboard:\n%s", truncateString(dom, 2000))
	}
}

// TestDashboardShowsNoCredentials: with DDNS failing (a Duck DNS update
// and an ip_source URL, both with a token in the query, against a closed
// port) and an app given secrets in env, neither the page nor
// /status.json shows a secret, though both show the errors.
func TestDashboardShowsNoCredentials(t *testing.T) {
	t.Parallel()
	dashPort, appPort, closed, slowPort := freePort(t), freePort(t), freePort(t), freePort(t)
	secrets := []string{"duck-token-5f0c2a9e", "ip-source-token-77ab31", "django-secret-key-93d1e0", "api-token-c4b8f2", "reset-link-token-6e2f", "db-password-0b7d55"}
	// a background service whose process ends after a second and whose
	// replacement's ready command fails, quoting a secret as a settings
	// module that cannot parse DATABASE_URL does
	dir := t.TempDir()
	ran, readied := filepath.Join(dir, "ran"), filepath.Join(dir, "readied")
	readyScript, runScript := filepath.Join(dir, "ready.sh"), filepath.Join(dir, "run.sh")
	// the first process ends after a second, its replacements run on (each
	// script counts its own runs: a first ready command that came before the
	// first process's check, on a loaded machine, had that process run on)
	os.WriteFile(runScript, []byte(fmt.Sprintf("if [ -e %[1]s ]; then exec sleep 600; fi\ntouch %[1]s\nsleep 1\n", ran)), 0o644)
	os.WriteFile(readyScript, []byte(fmt.Sprintf(`if [ -e %s ]; then
	echo 'Traceback (most recent call last):'
	echo '  File "settings.py", line 3'
	echo 'ValueError: Port could not be cast to integer value as %s'
	exit 1
fi
touch %s
`, readied, secrets[5], readied)), 0o644)
	startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		dashboard 127.0.0.1:%d
		service leaky {
			command sh %s
			ready command sh %s
			start_timeout 2s
		}
	}
	ddns {
		provider duckdns {
			token %s
			server http://127.0.0.1:%d
		}
		domains {
			duckdns.org myhome
		}
		ip_source http http://127.0.0.1:%d/ip?token=%s
		ip_source static 203.0.113.81
		versions ipv4 ipv6
		interval 1m
	}
}
:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard warn
		env SECRET_KEY %s
		env API_TOKEN %s
	}
}
:%d {
	bind 127.0.0.1
	wsgi hang:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard warn
	}
}`, dashPort, runScript, readyScript, secrets[0], closed, closed, secrets[1], appPort, secrets[2], secrets[3], slowPort))
	base := fmt.Sprintf("http://127.0.0.1:%d", dashPort)
	// both records fail: A at the update, AAAA at detection
	waitFor(t, 30*time.Second, "both DDNS records' errors in /status.json", func() bool {
		_, body := dashboardGet(t, base+"/status.json", "127.0.0.1")
		return strings.Count(body, `"last_error"`) == 2 && strings.Contains(body, "203.0.113.81")
	})
	waitFor(t, 30*time.Second, "the service's failed restart in /status.json", func() bool {
		_, body := dashboardGet(t, base+"/status.json", "127.0.0.1")
		return strings.Count(body, `"last_error"`) == 3 // the two DDNS records' and the service's
	})
	// a request in flight whose path holds a secret (a password reset link)
	go http.Get(fmt.Sprintf("http://127.0.0.1:%d/reset/%s/slow?4", slowPort, secrets[4]))
	waitFor(t, 10*time.Second, "the request in flight in /status.json", func() bool {
		_, body := dashboardGet(t, base+"/status.json", "127.0.0.1")
		return strings.Contains(body, `"age_seconds"`)
	})
	_, status := dashboardGet(t, base+"/status.json", "127.0.0.1")
	_, page := dashboardGet(t, base+"/", "127.0.0.1")
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Referrer-Policy") != "no-referrer" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("the dashboard's answers may be kept, framed or leak a referrer: %v", resp.Header)
	}
	for what, body := range map[string]string{"/status.json": status, "the page": page} {
		if !strings.Contains(body, "127.0.0.1:"+fmt.Sprint(closed)) || !strings.Contains(body, "hello") || !strings.Contains(body, "ValueError (the whole error") {
			t.Errorf("%s does not show the service and the DDNS errors:\n%s", what, truncateString(body, 3000))
		}
		for _, secret := range secrets {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows the secret %q:\n%s", what, secret, truncateString(body, 3000))
			}
		}
	}
}

// TestDashboardOnASitesPort: a dashboard on a site's address would share
// its socket (Caddy's sockets allow sharing) and take part of the site's
// visitors; the config is refused, saying with what it clashes, and the
// site is not half served meanwhile.
func TestDashboardOnASitesPort(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	c := launchCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		dashboard 127.0.0.1:%[1]d
	}
}
http://127.0.0.1:%[1]d {
	bind 127.0.0.1
	respond "the site"
}
`, port))
	if code := c.waitExit(30 * time.Second); code == 0 || !strings.Contains(c.log.String(), "listens there too") || !strings.Contains(c.log.String(), "give the dashboard a port of its own") {
		t.Errorf("a dashboard on the site's port: exit %d\n%s", code, tail(c.log.String(), 8))
	}
}

// TestDashboardShowsLongLivedLimits: an ASGI app's card says how many
// WebSockets and streamed responses are open, of how many, and that the
// default limit is one for both (half the channels), which /hearth/apps
// alone left to be guessed.
func TestDashboardShowsLongLivedLimits(t *testing.T) {
	t.Parallel()
	dashPort := freePort(t)
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 4\n\t\tenv STREAM_MARKER "+marker)
	startCaddy(t, fmt.Sprintf("{\n\tadmin {ADMIN}\n\thearth {\n\t\tdashboard 127.0.0.1:%d\n\t}\n}\n", dashPort)+config)
	stream, err := (&http.Client{Timeout: 20 * time.Second}).Get(url + "/sse-wait")
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("an event stream: %v %v", err, stream)
	}
	defer stream.Body.Close()
	resp, page := get(t, fmt.Sprintf("http://127.0.0.1:%d/", dashPort))
	text := strings.Join(strings.Fields(html.UnescapeString(page)), " ")
	for _, want := range []string{"Open: 0 of 2 WebSockets*, 1 of 2 streamed responses*", "one limit for both: half the app's channels"} {
		if resp.StatusCode != 200 || !strings.Contains(text, want) {
			t.Errorf("the dashboard (%d) does not say %q:\n%s", resp.StatusCode, want, text)
		}
	}
}

// jobRunning reports whether the dashboard's page dom shows the job name
// with a run under way.
func jobRunning(dom, name string) bool {
	i := strings.Index(dom, `id="job-`+name+`"`)
	if i < 0 {
		return false // (the checks after say it is missing)
	}
	row, _, _ := strings.Cut(dom[i:], "</tr>")
	return strings.Contains(row, "<td>running")
}
