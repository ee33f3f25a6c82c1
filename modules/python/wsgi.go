// Package python is the Caddy side of Hearth's Python apps: the wsgi and
// asgi handler modules and their Caddyfile, the resolution of their
// config into the engine's options (config.go), what Hearth does around
// an app's start (its production settings, the pre-launch checks,
// before_start: app.go, settings.go, checks.go) and the commands that
// work beside a config (check, init, manage, exec). The pool that serves
// the requests, its workers and their runtime are the engine's
// (modules/python/engine), which knows nothing of Caddy; status.go turns
// its failures into HTTP statuses.
package python

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/hearthio"
	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/python/engine"
)

func init() {
	caddy.RegisterModule(WSGI{})
}

// WSGI serves a Python WSGI application (Django, Flask, any PEP 3333 app)
// from a pool of worker processes that Caddy launches and supervises.
// Handlers with identical pool settings share one pool, and a reload that
// leaves them unchanged keeps the running workers.
type WSGI struct {
	// App is the WSGI callable as "module:callable", e.g.
	// "mysite.wsgi:application"; the callable may be a dotted attribute path.
	App string `json:"app"`

	PoolConfig

	// Timeout bounds how long a request may run in the worker (to within
	// 1%, at most a second). Past it, the
	// worker's Python stack (all threads) is dumped to the log, the worker
	// is terminated (SIGTERM, then SIGKILL after 2s) and replaced, and the
	// client gets 504. Handlers sharing a pool may have different timeouts.
	// A negative value disables it. Default: 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// MaxBody is the largest request body accepted, in bytes; larger
	// requests get 413. Bodies are buffered by Caddy (in memory up to
	// 256 KiB, then in a temporary file) before a worker is taken.
	// Default: 100 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	app      *App
	poolKey  string
	kind     string // "asgi" when provisioned by the ASGI handler
	lifespan string
	// maxWebSockets, maxStreams and maxOpenPerClient are the ASGI
	// handler's MaxWebSockets, MaxStreams and MaxOpenPerClient
	maxWebSockets, maxStreams, maxOpenPerClient int
	directive                                   string            // for Caddyfile errors: wsgi or asgi
	guard                                       *guard.Guard      // the HTTP guard, unless guard is off
	guarded                                     caddyhttp.Handler // serve, as the handler the guard calls
	logger                                      *zap.Logger
	connectionsChecked                          uint32 // set (atomically) by the first request, which hintHearthIO judges
	looseProxiesWarned                          uint32 // set (atomically) once warnLooseProxies warned
}

// CaddyModule returns the Caddy module information.
func (WSGI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wsgi",
		New: func() caddy.Module { return new(WSGI) },
	}
}

// Provision validates the config and registers the pool with the hearth
// app, which starts it. No process is started here.
func (h *WSGI) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.MaxBody < 0 {
		return fmt.Errorf("wsgi %s: max_body must be positive, got %d", h.App, h.MaxBody)
	}
	if h.MaxBody == 0 {
		h.MaxBody = DefaultMaxBody
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultTimeout)
	}
	appModule, err := ctx.App("hearth")
	if err != nil {
		return err
	}
	config := h.PoolConfig
	config.kind, config.lifespan = h.kind, h.lifespan
	config.maxWebSockets, config.maxStreams, config.maxOpenPerClient = h.maxWebSockets, h.maxStreams, h.maxOpenPerClient
	if def := appModule.(*hearth.App).Guard; def != "" && (config.Guard == nil || config.Guard.Mode == "") {
		g := GuardConfig{Mode: def}
		if config.Guard != nil {
			g.Allow, g.HTTP = config.Guard.Allow, config.Guard.HTTP
		}
		config.Guard = &g
	}
	spec, err := config.resolve(h.App)
	if err != nil {
		return fmt.Errorf("wsgi %s: %w", h.App, err)
	}
	hearth.WarnIfRoot(h.logger, "app "+spec.Name, spec.Credential)
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	key := spec.key()
	app, err := appModule.(*hearth.App).UsePool(key, func() (hearth.Pool, error) {
		return newApp(spec, h.logger, keyForApp), nil
	})
	if err != nil {
		return err
	}
	h.app, h.poolKey = app.(*App), key
	if spec.GuardMode != GuardOff {
		h.guard = new(guard.Guard)
		if h.Guard != nil && h.Guard.HTTP != nil {
			h.guard = h.Guard.HTTP
		}
		if err := h.guard.Prepare(ctx.Logger().Named("guard")); err != nil {
			return err
		}
		h.guard.UseAppHosts(h.app.AppHosts)
		h.guarded = caddyhttp.HandlerFunc(h.serve) // made once: a method value is allocated each time it is taken
	}
	return nil
}

// PoolKey identifies the handler's pool (hearth.PoolHandler).
func (h *WSGI) PoolKey() string { return h.poolKey }

// Cleanup releases the pool; the last config using it stops it.
func (h *WSGI) Cleanup() error {
	if h.poolKey != "" {
		hearth.ReleasePool(h.poolKey)
	}
	return nil
}

// ServeHTTP runs the request on a worker, behind the HTTP guard.
func (h *WSGI) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) (err error) {
	defer panics.RecoverRequest(h.logger, "serving", r, &err) // a 500 for this request only
	if err := tooEarly(r); err != nil {
		return err
	}
	// the first request on TCP (HTTP/3's connections are not) says whether
	// it came through hearth_io
	if r.ProtoMajor < 3 && atomic.LoadUint32(&h.connectionsChecked) == 0 {
		h.hintHearthIO(r)
	}
	if h.guard != nil {
		return h.guard.ServeHTTP(w, r, h.guarded)
	}
	return h.serve(w, r)
}

// hintHearthIO says how to make the site's connections cost Caddy less,
// when r, the handler's first HTTP/1 or HTTP/2 request, came on a
// connection the listener wrapper hearth_io does not read and write
// (README: Connections): once per address in the process
// (hearthio.ShouldHint).
func (h *WSGI) hintHearthIO(r *http.Request) {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if local == nil || srv == nil || !atomic.CompareAndSwapUint32(&h.connectionsChecked, 0, 1) {
		return
	}
	if hearthio.ShouldHint(local, srv.Listeners()) {
		h.logger.Info("this site's clients' connections are read and written without the listener wrapper hearth_io, at a higher CPU cost per request: add it, first, to listener_wrappers in the global servers option (README: Connections)",
			zap.String("address", local.String()),
			zap.String("fix", hearthio.FixBlock))
	}
}

// serve buffers the request body, then runs the request on a worker.
func (h *WSGI) serve(w http.ResponseWriter, r *http.Request) error {
	// counted in the pool until it holds a channel (Serve ends that): a
	// pool a reload replaces drains it
	h.app.pool.Enter()
	handedOver := false
	defer func() {
		if !handedOver {
			h.app.pool.Leave()
		}
	}()
	body, err := h.app.pool.ReadBody(r, h.MaxBody, clientIP(r))
	if err != nil {
		return httpError(w, h.app.pool, err)
	}
	defer body.Close()
	rq := h.request(r)
	rq.Body, rq.Entered = body, true
	handedOver = true
	return httpError(w, h.app.pool, h.app.pool.Serve(w, r, rq))
}

// request is what the engine needs of r beyond its HTTP fields, but its body.
func (h *WSGI) request(r *http.Request) *engine.Request {
	return &engine.Request{
		ScriptName:       scriptName(r, h.app.Mounts()),
		ClientIP:         clientIP(r),
		FromTrustedProxy: h.fromTrustedProxy(r),
		Timeout:          time.Duration(h.Timeout),
	}
}

// clientIP is the client's address as Caddy determined it (honouring
// trusted_proxies), or "" to use the connection's peer.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return ip
}

// fromTrustedProxy says whether Caddy found the connection's peer among
// its trusted_proxies.
func fromTrustedProxy(r *http.Request) bool {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted
}

// fromTrustedProxy is fromTrustedProxy, which warns, at the first request
// from a trusted proxy to a server without trusted_proxies_strict, that
// Caddy then takes the client's address from the left of X-Forwarded-For,
// which the client writes: behind the proxy, a client counts as someone
// new with each request, past every per-client bound.
func (h *WSGI) fromTrustedProxy(r *http.Request) bool {
	trusted := fromTrustedProxy(r)
	if trusted && atomic.LoadUint32(&h.looseProxiesWarned) == 0 {
		if srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); srv != nil && srv.TrustedProxiesStrict == 0 && atomic.CompareAndSwapUint32(&h.looseProxiesWarned, 0, 1) {
			h.logger.Warn("this site's server lists trusted_proxies without trusted_proxies_strict: Caddy then takes a client's address from the left of X-Forwarded-For, which the client writes itself, so a client behind the proxy can count as someone new with each request, past max_queue_per_client, max_open_per_client and its share of the held budget; add trusted_proxies_strict to the server's options (README: max_queue_per_client)",
				zap.String("fix", "servers {\n\ttrusted_proxies static <the proxy's addresses>\n\ttrusted_proxies_strict\n}"))
		}
	}
	return trusted
}

// scriptName is the part of the path a handle_path (or uri strip_prefix)
// removed: the mount point of the app, SCRIPT_NAME in WSGI terms. It is
// one of mounts, the prefixes the config strips, or "": a difference
// between the original and the rewritten path that another rewrite made
// (`rewrite /old/* /new` leaves whatever the client wrote before /new)
// is not a mount point, and a client must not choose the prefix every
// URL the app generates starts with.
func scriptName(r *http.Request, mounts []string) string {
	if len(mounts) == 0 {
		return ""
	}
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil {
		return ""
	}
	full, rest := orig.URL.Path, r.URL.Path
	if len(full) <= len(rest) || !strings.HasSuffix(full, rest) {
		return ""
	}
	prefix := strings.TrimSuffix(full[:len(full)-len(rest)], "/")
	for _, m := range mounts {
		if strings.EqualFold(prefix, m) {
			return m // as configured: the client does not choose its case
		}
	}
	return ""
}

// Interface guards
var (
	_ caddy.Provisioner           = (*WSGI)(nil)
	_ caddy.CleanerUpper          = (*WSGI)(nil)
	_ caddyhttp.MiddlewareHandler = (*WSGI)(nil)
)

// errTooEarly refuses a request that came in TLS early data.
var errTooEarly = errors.New("request sent in TLS early data (HTTP/3 0-RTT): its client's address is not proven and it may be a replay; the client sends it again once the handshake is done")

// tooEarly answers 425 Too Early (RFC 8470) for a request sent in TLS
// early data, as HTTP/3's 0-RTT is (Caddy accepts it): until the handshake
// is done, neither the client's address (a 0-RTT packet may carry any
// source, a trusted proxy's included, whose forwarded headers would then
// be taken) nor the request (an attacker may replay it) is the client's
// own, and an app sees neither difference. Browsers send the request again
// at once, after the handshake. Caddy's own remote_ip matcher answers so.
func tooEarly(r *http.Request) error {
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		return caddyhttp.Error(http.StatusTooEarly, errTooEarly)
	}
	return nil
}
