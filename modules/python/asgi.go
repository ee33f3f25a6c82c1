package python

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/internal/panics"
)

func init() {
	caddy.RegisterModule(ASGI{})
}

// ASGI serves a Python ASGI 3 application (FastAPI, Starlette, Django's
// ASGI handler …) from the same supervised pools as WSGI: each worker runs
// an asyncio loop serving up to MaxConcurrency requests at once, one per
// private channel, with the lifespan protocol around the worker's life.
// Every option of WSGI applies (threads excepted: see MaxConcurrency).
type ASGI struct {
	WSGI

	// MaxConcurrency is how many requests one worker's event loop runs at
	// once. Default: 100.
	MaxConcurrency int `json:"max_concurrency,omitempty"`

	// MaxWebSockets is how many WebSockets the app holds open at once,
	// across its workers; one more gets 503 with Retry-After. Each holds
	// one of its worker's max_concurrency channels for its life, which
	// HTTP requests need too. Default: WebSockets and streamed responses
	// together take at most half the channels (the workers the app runs
	// now times max_concurrency).
	MaxWebSockets int `json:"max_websockets,omitempty"`

	// MaxStreams is how many streamed responses the app has under way at
	// once, across its workers: those that did not come whole with their
	// head (server-sent events, a download sent in pieces, a head sent
	// before a slow body). One more gets 503 with Retry-After instead of
	// the app's head, and its task is cancelled. Each holds a channel for
	// as long as it goes. Default: as for MaxWebSockets.
	MaxStreams int `json:"max_streams,omitempty"`

	// MaxOpenPerClient is how many of those one client may hold open at
	// once: of its WebSockets, and of its streamed responses (of the two
	// together while they share their limit). One more gets 429 with
	// Retry-After, so that one client cannot take every place while
	// others are refused. A client is its address as Caddy determines it
	// (trusted_proxies), an IPv6 client by its /64, as for
	// max_queue_per_client. Default: a quarter of the limit, at least 8.
	MaxOpenPerClient int `json:"max_open_per_client,omitempty"`

	// Lifespan runs the ASGI lifespan protocol in each worker: startup
	// before the worker takes requests (a failure refuses the config, with
	// the app's message), shutdown when it stops. "auto" (default) goes on
	// without it when the app does not support it; "on" requires it; "off"
	// skips it.
	Lifespan string `json:"lifespan,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (ASGI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.asgi",
		New: func() caddy.Module { return new(ASGI) },
	}
}

// DefaultMaxConcurrency is the default of max_concurrency.
const DefaultMaxConcurrency = 100

// Provision validates the config and registers the pool.
func (h *ASGI) Provision(ctx caddy.Context) error {
	if err := choose("lifespan", &h.Lifespan, "auto", "on", "off"); err != nil {
		return fmt.Errorf("asgi %s: %w", h.App, err)
	}
	if h.Threads != 0 {
		return fmt.Errorf("asgi %s: threads does not apply to ASGI apps; use max_concurrency (requests per worker's event loop)", h.App)
	}
	if h.Pipeline != "" {
		return fmt.Errorf("asgi %s: pipeline does not apply to ASGI apps: their workers run many requests at once (max_concurrency)", h.App)
	}
	if h.Preload {
		return fmt.Errorf("asgi %s: preload is not available for ASGI apps yet", h.App)
	}
	if h.MaxConcurrency != 0 {
		if err := checkCount("max_concurrency", h.MaxConcurrency); err != nil {
			return fmt.Errorf("asgi %s: %w", h.App, err)
		}
	}
	if h.MaxConcurrency == 0 {
		h.MaxConcurrency = DefaultMaxConcurrency
	}
	for _, o := range []struct {
		name string
		n    int
	}{{"max_websockets", h.MaxWebSockets}, {"max_streams", h.MaxStreams}, {"max_open_per_client", h.MaxOpenPerClient}} {
		if o.n != 0 {
			if err := checkCount(o.name, o.n); err != nil {
				return fmt.Errorf("asgi %s: %w", h.App, err)
			}
		}
	}
	h.kind, h.lifespan, h.Threads = "asgi", h.Lifespan, h.MaxConcurrency
	h.maxWebSockets, h.maxStreams, h.maxOpenPerClient = h.MaxWebSockets, h.MaxStreams, h.MaxOpenPerClient
	err := h.WSGI.Provision(ctx)
	h.Threads = 0 // keep the config as written
	return err
}

// webSocketReadIdle is how long a WebSocket over HTTP/2 waits for its
// client's next frame: as good as for ever (a client that went away is
// the connection's end, TCP keepalive's to find).
const webSocketReadIdle = 10 * 365 * 24 * time.Hour

// ServeHTTP runs the request on a worker, behind the HTTP guard.
func (h *ASGI) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	defer panics.RecoverRequest(h.logger, "serving", r, &err) // a 500 for this request only
	if guard.IsWebSocket(r) {
		if err := tooEarly(r); err != nil {
			return err
		}
		// the guard judges the opening (host, path) like any request; its
		// answer is a protocol switch, which the guard does not wrap
		if h.guard != nil {
			if err := h.guard.Check(r); err != nil {
				return err
			}
		}
		rq := h.request(r)
		rq.WriteIdle = writeIdle(r)
		if r.ProtoMajor >= 2 {
			// a WebSocket over HTTP/2 waits for its client's next frame as
			// long as both sides want, as one over HTTP/1.1 does (its
			// connection taken out of Caddy's server, timeouts with it):
			// Caddy's read_body_idle would end it after a minute of a
			// client that only listens (until then the app's answer to the
			// opening is bounded by its timeout)
			if reader, _ := caddyhttp.IdleTimeoutsFromContext(r.Context()); reader != nil {
				reader.Override(webSocketReadIdle, 0) // (for the stream's life: not restored)
			}
		}
		return httpError(w, h.app.pool, h.app.pool.ServeWebSocket(w, r, rq))
	}
	return h.WSGI.ServeHTTP(w, r, next)
}

// writeIdle is the write_idle timeout of the Caddy server serving r
// (servers { timeouts { write_idle } }): Caddy's own default, a minute,
// when it cannot be told; none when it is turned off (negative).
func writeIdle(r *http.Request) time.Duration {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv.WriteIdleTimeout == 0 {
		return time.Minute
	}
	return time.Duration(srv.WriteIdleTimeout)
}

// asgiOptions are the subdirectives of asgi, as its errors list them:
// those of wsgi that apply to ASGI apps, then its own.
var asgiOptions = append(slices.DeleteFunc(slices.Clone(wsgiOptions), func(o string) bool {
	return o == "threads" || o == "pipeline" || o == "preload" // (refused with a hint by Provision)
}), "max_concurrency", "max_websockets", "max_streams", "max_open_per_client", "lifespan")

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens: the
// subdirectives of wsgi (but threads), plus
//
//	max_concurrency <n>
//	max_websockets  <n>
//	max_streams     <n>
//	max_open_per_client <n>
//	lifespan        auto|on|off
func (h *ASGI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	h.directive = "asgi"
	return h.WSGI.unmarshal(d, func(d *caddyfile.Dispenser) (bool, error) {
		switch d.Val() {
		case "max_concurrency":
			return true, count(d, &h.MaxConcurrency)
		case "max_websockets":
			return true, count(d, &h.MaxWebSockets)
		case "max_streams":
			return true, count(d, &h.MaxStreams)
		case "max_open_per_client":
			return true, count(d, &h.MaxOpenPerClient)
		case "lifespan":
			if err := oneArg(d, &h.Lifespan); err != nil {
				return true, err
			}
			if h.Lifespan != "auto" && h.Lifespan != "on" && h.Lifespan != "off" {
				return true, d.Errf("lifespan %q is not one of auto, on, off", h.Lifespan)
			}
			return true, nil
		case "threads":
			return true, d.Err("threads does not apply to asgi: use max_concurrency (requests per worker's event loop)")
		case "pipeline":
			return true, d.Err("pipeline does not apply to asgi: its workers already run many requests at once (max_concurrency)")
		}
		return false, nil
	})
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ASGI)(nil)
	_ caddy.CleanerUpper          = (*ASGI)(nil)
	_ caddyhttp.MiddlewareHandler = (*ASGI)(nil)
	_ caddyfile.Unmarshaler       = (*ASGI)(nil)
)
