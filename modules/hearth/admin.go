package hearth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
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
		{Pattern: "/hearth/", Handler: caddy.AdminHandlerFunc(a.serve)},
	}
}

// appsStatus is the body of GET /hearth/apps.
type appsStatus struct {
	Apps []any `json:"apps"`
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/hearth/apps":
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		status := appsStatus{Apps: []any{}}
		for _, p := range Pools() {
			status.Apps = append(status.Apps, p.Status())
		}
		return writeJSON(w, status)
	case strings.HasPrefix(path, "/hearth/apps/"):
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		name := strings.TrimPrefix(path, "/hearth/apps/")
		status := appsStatus{Apps: []any{}}
		for _, p := range Pools() {
			if p.Name() == name {
				status.Apps = append(status.Apps, p.Status())
			}
		}
		if len(status.Apps) == 0 {
			return caddy.APIError{
				HTTPStatus: http.StatusNotFound,
				Err:        fmt.Errorf("no app named %q is running; GET /hearth/apps lists them", name),
			}
		}
		return writeJSON(w, status)
	}
	return caddy.APIError{
		HTTPStatus: http.StatusNotFound,
		Err:        fmt.Errorf("unknown Hearth admin route %s; try GET /hearth/apps", r.URL.Path),
	}
}

func requireMethod(r *http.Request, method string) error {
	if r.Method == method {
		return nil
	}
	return caddy.APIError{
		HTTPStatus: http.StatusMethodNotAllowed,
		Err:        fmt.Errorf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, method),
	}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
