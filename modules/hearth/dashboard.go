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
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
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

// ddnsStatus returns the ddns app's status (set by that app).
var ddnsStatus atomic.Pointer[func() any]

// SetDDNSStatus lets the ddns app show its records on the dashboard.
func SetDDNSStatus(fn func() any) { ddnsStatus.Store(&fn) }

// dashboard serves the read-only status page.
type dashboard struct {
	server   *http.Server
	listener net.Listener
}

// startDashboard listens on address (loopback unless a host is given)
// through Caddy's listener pool, so reloads keep the socket.
func startDashboard(ctx caddy.Context, address string, logger *zap.Logger) (*dashboard, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, ""
	}
	if port == "" {
		port = "2020"
	}
	if host == "" {
		host = "127.0.0.1" // this machine only, unless asked
	}
	na, err := caddy.ParseNetworkAddress(net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("dashboard address %q: %w", address, err)
	}
	ln, err := na.Listen(ctx, 0, net.ListenConfig{})
	if err != nil {
		return nil, fmt.Errorf("dashboard: listening on %s: %w", na, err)
	}
	d := &dashboard{listener: ln.(net.Listener)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.page)
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) { _ = writeJSON(w, d.data()) })
	d.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := d.server.Serve(d.listener); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			logger.Error("dashboard stopped", zap.Error(err))
		}
	}()
	logger.Info("dashboard serving", zap.String("address", d.listener.Addr().String()))
	return d, nil
}

// dashboardData is what the page shows, as generic JSON data (pools of
// different kinds have different fields).
type dashboardData struct {
	Generated time.Time        `json:"generated"`
	CaddyCPUs int              `json:"caddy_cpus"` // as in GET /hearth/apps
	CPUs      int              `json:"cpus"`
	Services  []map[string]any `json:"services"`
	DDNS      map[string]any   `json:"ddns"`
}

func (d *dashboard) data() dashboardData {
	data := dashboardData{Generated: time.Now()}
	data.CaddyCPUs, data.CPUs = cpuStatus()
	roundTrip(servicesStatus(), &data.Services)
	if fn := ddnsStatus.Load(); fn != nil {
		roundTrip((*fn)(), &data.DDNS)
	}
	return data
}

// roundTrip converts v to generic JSON data in dst.
func roundTrip(v, dst any) {
	b, _ := json.Marshal(v)
	_ = json.Unmarshal(b, dst)
}

func (d *dashboard) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := dashboardPage.Execute(w, d.data()); err != nil {
		caddy.Log().Named("hearth.dashboard").Error("rendering", zap.Error(err))
	}
}

func (d *dashboard) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.server.Shutdown(ctx)
}
