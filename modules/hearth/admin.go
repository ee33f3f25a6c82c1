package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves Hearth's status and control routes under /hearth/ on
// Caddy's admin endpoint.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.hearth",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/hearth/", Handler: caddy.AdminHandlerFunc(a.serveRecovered)},
	}
}

// appsStatus is the body of GET /hearth/apps.
type appsStatus struct {
	Apps []any `json:"apps"`
	// CaddyCPUs is how many CPUs Caddy's own code uses at once (GOMAXPROCS),
	// of CPUs available (see the caddy_cpus option).
	CaddyCPUs int `json:"caddy_cpus"`
	CPUs      int `json:"cpus"`
	// CaddyCPULent says why Caddy's code has more CPUs than caddy_cpus
	// for now: "garbage_collection" or "idle_workers"; empty when it has
	// not.
	CaddyCPULent string `json:"caddy_cpu_lent,omitempty"`
	// CaddyGCPercent is Go's GC percent now (see the caddy_gc_floor
	// option): the heap grows by this much of its live part before Go
	// collects; -1 when collection is off.
	CaddyGCPercent int `json:"caddy_gc_percent"`
	// MaxProcesses is the process limit (the max_processes option) that
	// processes started from now on as an app's account get; 0: none.
	MaxProcesses uint64 `json:"max_processes"`
}

func newAppsStatus() appsStatus {
	status := appsStatus{Apps: []any{}}
	var lent lendReason
	status.CaddyCPUs, status.CPUs, lent = cpuStatus()
	status.CaddyCPULent = lent.String()
	status.CaddyGCPercent = gcStatus()
	status.MaxProcesses = supervisor.MaxProcesses()
	return status
}

// serveRecovered is serve with a panic turned into a 500 for that request
// (logged with its stack), never a dead Caddy.
func (a adminAPI) serveRecovered(w http.ResponseWriter, r *http.Request) (err error) {
	defer panics.RecoverRequest(caddy.Log().Named("admin.api.hearth"), "answering", r, &err)
	return a.serve(w, r)
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/hearth/"), "/")
	parts := strings.Split(path, "/")
	if h, ok := extraRoutes.Load(parts[0]); ok {
		return h.(AdminHandler)(w, r, parts[1:])
	}
	switch {
	case path == "services":
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		return writeJSON(w, servicesStatus())
	case path == "apps":
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		status := newAppsStatus()
		for _, p := range Pools() {
			status.Apps = append(status.Apps, p.Status())
		}
		return writeJSON(w, status)
	case len(parts) == 2 && parts[0] == "apps":
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		pools, err := poolsNamed(parts[1], false)
		if err != nil {
			return err
		}
		status := newAppsStatus()
		for _, p := range pools {
			status.Apps = append(status.Apps, p.Status())
		}
		return writeJSON(w, status)
	case len(parts) == 3 && parts[0] == "apps" && parts[2] == "restart":
		return a.restart(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "apps" && parts[2] == "scale":
		return a.scale(w, r, parts[1])
	case parts[0] == "jobs":
		return serveJobs(w, r, job.KindJob, parts[1:])
	case parts[0] == "backups":
		return serveJobs(w, r, job.KindBackup, parts[1:])
	}
	return caddy.APIError{
		HTTPStatus: http.StatusNotFound,
		Err:        fmt.Errorf("unknown Hearth admin route %s; the routes are GET /hearth/services, GET /hearth/apps, GET /hearth/apps/{name}, POST /hearth/apps/{name}/restart, POST /hearth/apps/{name}/scale, GET /hearth/jobs, GET /hearth/jobs/{name}, POST /hearth/jobs/{name}/run, GET /hearth/backups, GET /hearth/backups/{name}, POST /hearth/backups/{name}/run, POST /hearth/backups/{name}/restore?file=<copy>, GET /hearth/ddns, POST /hearth/ddns/check", r.URL.Path),
	}
}

// poolsNamed returns the pools of the app called name (only running ones
// if running is set), or an error: 404 for no app of that name, 409 for
// one that is not running.
func poolsNamed(name string, running bool) ([]Pool, error) {
	var found []Pool
	known := false
	for _, p := range Pools() {
		if p.Name() == name {
			known = true
			if !running || p.Running() {
				found = append(found, p)
			}
		}
	}
	switch {
	case !known:
		return nil, caddy.APIError{
			HTTPStatus: http.StatusNotFound,
			Err:        fmt.Errorf("no app named %q; GET /hearth/apps lists them", name),
		}
	case len(found) == 0:
		return nil, caddy.APIError{
			HTTPStatus: http.StatusConflict,
			Err:        fmt.Errorf("app %q is not running (starting, failed or stopping): GET /hearth/apps/%s shows its state and last error; ask again once it runs (a failed app runs again after its fix and `caddy reload`)", name, name),
		}
	}
	return found, nil
}

// restart serves POST /hearth/apps/{name}/restart: a rolling restart.
func (a adminAPI) restart(w http.ResponseWriter, r *http.Request, name string) error {
	if err := requireMethod(r, http.MethodPost); err != nil {
		return err
	}
	pools, err := poolsNamed(name, true)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if err := p.Restart(); err != nil {
			status := http.StatusInternalServerError // a replacement that could not start
			if errors.Is(err, supervisor.ErrNotRunning) {
				status = http.StatusConflict // a reload took it out meanwhile: for now
				err = fmt.Errorf("%w; ask again (GET /hearth/apps/%s shows its state)", err, name)
			}
			return caddy.APIError{HTTPStatus: status, Err: err}
		}
	}
	return writeJSON(w, map[string]any{"restarted": name, "apps": statuses(pools)})
}

// scaleRequest is the body of POST /hearth/apps/{name}/scale.
type scaleRequest struct {
	Workers *int `json:"workers"`
}

// scale serves POST /hearth/apps/{name}/scale with {"workers": N} (or
// ?workers=N).
func (a adminAPI) scale(w http.ResponseWriter, r *http.Request, name string) error {
	if err := requireMethod(r, http.MethodPost); err != nil {
		return err
	}
	n, err := workerCount(r)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	pools, err := poolsNamed(name, true)
	if err != nil {
		return err
	}
	for i, p := range pools {
		if err := p.Scale(n); err != nil {
			if i > 0 { // the same app in two blocks: say what did change
				err = fmt.Errorf("%w (%d of the app's %d pools were scaled to %d before this one refused)", err, i, len(pools), n)
			}
			return caddy.APIError{HTTPStatus: http.StatusConflict, Err: err}
		}
	}
	return writeJSON(w, map[string]any{"scaled": name, "workers": n, "apps": statuses(pools)})
}

// maxScale bounds a scale request.
const maxScale = 1024

func workerCount(r *http.Request) (int, error) {
	const usage = `send {"workers": N} (or ?workers=N) with N a whole number from 1 to 1024`
	var req scaleRequest
	if q := r.URL.Query().Get("workers"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil {
			return 0, fmt.Errorf("workers=%q is not a number; %s", q, usage)
		}
		req.Workers = &n
	} else {
		dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return 0, fmt.Errorf("reading the request body (at most 4 KiB): %v; %s", err, usage)
		}
		if _, err := dec.Token(); err != io.EOF { // `{"workers":3}{"workers":99999}`: which one was meant?
			return 0, fmt.Errorf("the request body has more after its JSON object; %s", usage)
		}
	}
	if req.Workers == nil || *req.Workers < 1 || *req.Workers > maxScale {
		return 0, fmt.Errorf("missing or out-of-range worker count; %s", usage)
	}
	return *req.Workers, nil
}

func statuses(pools []Pool) []any {
	list := make([]any, 0, len(pools))
	for _, p := range pools {
		list = append(list, p.Status())
	}
	return list
}

// AdminHandler serves /hearth/<name>/<rest…> for another Hearth module.
type AdminHandler func(w http.ResponseWriter, r *http.Request, rest []string) error

var extraRoutes sync.Map // name → AdminHandler

// HandleAdmin routes /hearth/<name>… on the admin API to h.
func HandleAdmin(name string, h AdminHandler) { extraRoutes.Store(name, h) }

func requireMethod(r *http.Request, method string) error {
	if r.Method == method {
		return nil
	}
	return caddy.APIError{
		HTTPStatus: http.StatusMethodNotAllowed,
		Err:        fmt.Errorf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, method),
	}
}

// WriteJSON writes v as an indented JSON response.
func WriteJSON(w http.ResponseWriter, v any) error { return writeJSON(w, v) }

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
