package hearth

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/internal/textcut"
	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/service"
)

//go:embed dashboard.html
var dashboardHTML string

var dashboardPage = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"mib": func(v any) string {
		if f, ok := v.(float64); ok {
			return fmt.Sprintf("%.1f MiB", f/(1<<20))
		}
		return ""
	},
}).Parse(dashboardHTML))

// dashboard serves the read-only status page.
type dashboard struct {
	server   *http.Server
	listener net.Listener

	// the last data made, and when: the page may be open to the LAN, and
	// each making reads every certificate from storage (a network call
	// with some storage modules), so requests share it for a second
	mu     sync.Mutex
	cached dashboardData
	at     time.Time
}

// dashboardFresh is how long requests share the dashboard's data: the
// page refreshes itself every 5 s.
const dashboardFresh = time.Second

// current is the dashboard's data, made at most once per dashboardFresh
// whatever the number of requests (they wait for one making).
func (d *dashboard) current() dashboardData {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.at.IsZero() || time.Since(d.at) >= dashboardFresh {
		d.cached, d.at = d.data(), time.Now()
	}
	return d.cached
}

// startDashboard listens on na (see dashboardAddress; host is its host)
// through Caddy's listener pool, so reloads keep the socket. It answers
// only requests whose Host is a loopback name, the address's own host,
// or one of hosts (see checkHost).
func startDashboard(ctx caddy.Context, na caddy.NetworkAddress, host string, hosts []string, logger *zap.Logger) (*dashboard, error) {
	ln, err := na.Listen(ctx, 0, net.ListenConfig{})
	if err != nil {
		return nil, fmt.Errorf("dashboard: listening on %s: %w", na, err)
	}
	d := &dashboard{listener: ln.(net.Listener)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.page)
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) { _ = writeJSON(w, d.current()) })
	// a page and its JSON are small: a client that holds a connection
	// (the page may be open to the LAN) is let go
	d.server = &http.Server{Handler: recovered(logger, checkHost(dashboardHosts(host, hosts), mux)),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		MaxHeaderBytes: 64 << 10}
	go func() {
		if err := d.server.Serve(d.listener); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			logger.Error("dashboard stopped", zap.Error(err))
		}
	}()
	logger.Info("dashboard serving", zap.String("address", d.listener.Addr().String()))
	return d, nil
}

// recovered answers 500 for a request whose handler panicked (logged with
// its stack) instead of net/http's dropped connection.
func recovered(logger *zap.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dashboardHeaders(w)
		err := panics.Call(logger, "serving the dashboard's "+r.URL.Path, func() error {
			h.ServeHTTP(w, r)
			return nil
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

// dashboardHosts is the set of names the dashboard answers to: the
// loopback names, the listen address's own host (unless it is a wildcard
// address such as 0.0.0.0), and the configured names.
func dashboardHosts(listenHost string, configured []string) map[string]bool {
	allowed := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	if ip := net.ParseIP(hostName(listenHost)); ip == nil || !ip.IsUnspecified() {
		allowed[hostName(listenHost)] = true
	}
	for _, h := range configured {
		allowed[hostName(h)] = true
	}
	delete(allowed, "")
	return allowed
}

// hostName is the name in a Host header or a configured name, without
// port, IPv6 brackets or trailing dot, in lower case.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// checkHost answers 403 to a request whose Host is not allowed, before
// next sees it, as Caddy's admin API does. This stops DNS rebinding: a
// web page at attacker.example, open in a browser on this machine or the
// LAN, can point its own name at the dashboard's address and then read
// the dashboard as same-origin, but its requests carry Host:
// attacker.example. There is no Origin check: every route is a GET that
// changes nothing, the page runs no scripts, and no answer carries CORS
// headers, so a cross-origin page cannot read an answer; rebinding is the
// way around that, and the Host check closes it.
func checkHost(allowed map[string]bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allowed[hostName(r.Host)] {
			next.ServeHTTP(w, r)
			return
		}
		shown := textcut.Shorten(r.Host, 100)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, "The Hearth dashboard does not answer to the host %q (the Host header of this request).\n"+
			"It answers to localhost, 127.0.0.1 and [::1], to the host of its listen address, and to the names "+
			"given in the Caddyfile's global options as\n\n\thearth {\n\t\tdashboard <address> {\n\t\t\thosts <name>...\n\t\t}\n\t}\n\n"+
			"(in JSON, apps.hearth.dashboard_hosts). To open it under this name, add the name there and reload Caddy.\n"+
			"The check stops web pages that point their own name at this machine (DNS rebinding) from reading the dashboard.\n", shown)
	})
}

// dashboardData is what the page shows, as generic JSON data (pools of
// different kinds have different fields).
type dashboardData struct {
	Generated time.Time        `json:"generated"`
	CaddyCPUs int              `json:"caddy_cpus"` // as in GET /hearth/apps
	CPUs      int              `json:"cpus"`
	Services  []map[string]any `json:"services"`
	// Background are the background services (kind "service").
	Background []map[string]any `json:"background"`
	// Jobs are the scheduled jobs, Backups the SQLite backups.
	Jobs    []map[string]any `json:"jobs"`
	Backups []map[string]any `json:"backups"`
	DDNS    map[string]any   `json:"ddns"`
}

func (d *dashboard) data() dashboardData {
	data := dashboardData{Generated: time.Now()}
	data.CaddyCPUs, data.CPUs, _ = cpuStatus()
	roundTrip(servicesStatus(), &data.Services)
	// every local account can read the page: a request's path may carry a
	// secret (a password reset link, a webhook's token); the page shows how
	// long each has run, the admin API its path
	for _, s := range data.Services {
		dropRequestPaths(s)
		if pools, ok := s["pools"].([]any); ok {
			for _, p := range pools {
				if p, ok := p.(map[string]any); ok {
					summarizeError(p)
					delete(p, "command") // a process upstream's: see below
				}
			}
		}
	}
	// the page may be open to the LAN: command lines (a password in an
	// argument) and jobs' output (output_tail, last_error) stay in the
	// admin API
	data.Background = []map[string]any{}
	for _, p := range Pools() {
		if _, ok := p.(*service.Group); ok {
			var st map[string]any
			roundTrip(p.Status(), &st)
			delete(st, "command")
			summarizeError(st)
			data.Background = append(data.Background, st)
		}
	}
	roundTrip(jobStatuses(job.KindJob), &data.Jobs)
	roundTrip(jobStatuses(job.KindBackup), &data.Backups)
	for _, j := range append(data.Jobs, data.Backups...) {
		delete(j, "command")
		delete(j, "last_error") // it quotes the run's output; the page shows the exit
		if runs, ok := j["recent_runs"].([]any); ok {
			for _, r := range runs {
				if run, ok := r.(map[string]any); ok {
					delete(run, "output_tail")
				}
			}
		}
	}
	if view := services.Load(); view != nil && view.ddns != nil {
		roundTrip(view.ddns.DashboardStatus(), &data.DDNS)
	}
	return data
}

// dropRequestPaths removes the path of every request in flight
// (current_requests) found in v, generic JSON data.
func dropRequestPaths(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if k == "current_requests" {
				if list, ok := x.([]any); ok {
					for _, r := range list {
						if r, ok := r.(map[string]any); ok {
							delete(r, "path")
						}
					}
				}
				continue
			}
			dropRequestPaths(x)
		}
	case []any:
		for _, x := range v {
			dropRequestPaths(x)
		}
	}
}

// summarizeError replaces the last_error of a pool or background service
// with what the dashboard, which every local account may read, shows of
// it: the name of the Python exception it ends with, never its message or
// the output it quotes (a settings module that failed to parse
// DATABASE_URL quotes the password; a ready command's output may hold
// anything), and where the whole of it is.
func summarizeError(status map[string]any) {
	text, ok := status["last_error"].(string)
	if !ok || text == "" {
		return
	}
	const where = " (the whole error: caddy hearth status, the admin API, or Caddy's log)"
	if name := pythonException(text); name != "" {
		status["last_error"] = name + where
		return
	}
	status["last_error"] = "failed" + where
}

// pythonException is the name of the exception a Python traceback in text
// ends with ("ValueError" of "ValueError: invalid literal…"), or "": the
// first line not indented after the last "Traceback (most recent call
// last):" (its frames and source lines are indented). A message of several
// lines never counts: only that first line's part before ":" is looked at,
// and only when it is a (dotted) name.
func pythonException(text string) string {
	i := strings.LastIndex(text, "Traceback (most recent call last)")
	if i < 0 {
		return ""
	}
	rest := text[i:]
	if j := strings.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[j+1:]
	} else {
		return ""
	}
	frames := 0
	for rest != "" {
		line := rest
		if j := strings.IndexByte(rest, '\n'); j >= 0 {
			line, rest = rest[:j], rest[j+1:]
		} else {
			rest = ""
		}
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			if strings.HasPrefix(strings.TrimLeft(line, " \t"), "File \"") {
				frames++
			}
			continue
		}
		if frames == 0 {
			return "" // not a traceback's end: no frame came before it
		}
		name, _, _ := strings.Cut(line, ":")
		if exceptionName.MatchString(name) {
			return name
		}
		return ""
	}
	return ""
}

// exceptionName matches a Python exception's (dotted) class name.
var exceptionName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// roundTrip converts v to generic JSON data in dst.
func roundTrip(v, dst any) {
	b, _ := json.Marshal(v)
	_ = json.Unmarshal(b, dst)
}

// dashboardHeaders are the headers of every answer of the dashboard: not
// kept by caches, not sniffed, no referrer sent from it.
func dashboardHeaders(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

func (d *dashboard) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := dashboardPage.Execute(w, d.current()); err != nil {
		caddy.Log().Named("hearth.dashboard").Error("rendering", zap.Error(err))
	}
}

func (d *dashboard) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.server.Shutdown(ctx)
}
