package ddns

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// current is the running app, for the admin routes.
var current atomic.Pointer[App]

// publish makes a, starting, the app the admin routes serve, and
// remembers the one it replaces.
func publish(a *App) {
	a.replaced = current.Swap(a)
}

// withdraw is publish undone as a stops: the app it replaced comes back
// while that one still runs (a reload refused after a started: Caddy
// stops the new config's apps and keeps the old ones), else none.
func withdraw(a *App) {
	atomic.StoreUint32(&a.stopped, 1)
	back := a.replaced
	if back != nil && atomic.LoadUint32(&back.stopped) == 1 {
		back = nil
	}
	current.CompareAndSwap(a, back)
	a.replaced = nil
}

func init() {
	hearth.HandleAdmin("ddns", serveAdmin)
}

// status is the body of GET /hearth/ddns.
type status struct {
	Interval string        `json:"interval"`
	DryRun   bool          `json:"dry_run"`
	Records  []recordState `json:"records"`
}

// serveAdmin serves GET /hearth/ddns (the state of every record) and
// POST /hearth/ddns/check (check now, reading the records back).
func serveAdmin(w http.ResponseWriter, r *http.Request, rest []string) error {
	a := current.Load()
	if a == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no ddns app is running; configure the ddns global option")}
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
	case len(rest) == 1 && rest[0] == "check" && r.Method == http.MethodPost:
		if err := a.CheckNow(r.Context()); err != nil {
			status := http.StatusServiceUnavailable
			if errors.Is(err, errCheckPanicked) {
				status = http.StatusInternalServerError
			}
			return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf("checking: %w", err)}
		}
	case len(rest) == 0 || len(rest) == 1 && rest[0] == "check":
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("use GET /hearth/ddns or POST /hearth/ddns/check")}
	default:
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("unknown ddns route; use GET /hearth/ddns or POST /hearth/ddns/check")}
	}
	return hearth.WriteJSON(w, a.status())
}

// status is the app's state for the admin API and the dashboard.
func (a *App) status() status {
	records := a.state.snapshot(a.Domains)
	if records == nil {
		records = []recordState{}
	}
	return status{Interval: time.Duration(a.Interval).String(), DryRun: a.DryRun, Records: records}
}
