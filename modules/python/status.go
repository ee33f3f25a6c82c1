package python

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hearth-dev/hearth/modules/python/engine"
)

// statusClientClosedRequest is logged for requests whose client left while
// they waited for a worker (nginx's 499): not a server error.
const statusClientClosedRequest = 499

// failureStatus is the HTTP status of each engine failure.
var failureStatus = [engine.LastFailure + 1]int{
	engine.BodyTooLarge:    http.StatusRequestEntityTooLarge,
	engine.BodyUnreadable:  http.StatusBadRequest,
	engine.Refused:         http.StatusBadRequest,
	engine.HeadTooLarge:    http.StatusRequestHeaderFieldsTooLarge,
	engine.Unavailable:     http.StatusServiceUnavailable,
	engine.TooManyRequests: http.StatusTooManyRequests,
	engine.Abandoned:       http.StatusBadGateway,
	engine.ClientLeft:      statusClientClosedRequest,
	engine.WorkerBroken:    http.StatusBadGateway,
	engine.TimedOut:        http.StatusGatewayTimeout,
	engine.AppAborted:      http.StatusBadGateway,
	engine.BadResponse:     http.StatusInternalServerError,
}

// httpError is what a handler returns to Caddy for the engine's err from
// pool: a caddyhttp.HandlerError with the failure's status (503 and 429
// also say when to come back, and are counted). This is the one place engine
// failures become statuses. Other errors pass unchanged.
func httpError(w http.ResponseWriter, pool *engine.Pool, err error) error {
	if err == nil { // served: the usual case costs one comparison
		return nil
	}
	f := engine.FailureOf(err)
	if f == 0 {
		return err
	}
	if f.Refusal() {
		w.Header().Set("Retry-After", "1")
		pool.CountRefusal(err)
	}
	return caddyhttp.Error(failureStatus[f], err)
}
