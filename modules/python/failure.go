package python

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// failure is why the engine could not serve a request as the app would
// have. The engine says what happened (a requestError); the handlers turn
// it into an HTTP status (httpError), in this one place.
type failure uint8

const (
	failRefused      failure = iota + 1 // the request cannot be given to an app safely (a NUL byte)
	failHeadTooLarge                    // its head is larger than a frame carries
	failUnavailable                     // no worker took it: queue full, queue_timeout, pool stopped
	failAbandoned                       // pipelined to a worker that broke, and not idempotent: not sent again
	failClientLeft                      // the client left while it waited for a worker
	failWorkerBroken                    // the worker's channel broke; the worker is killed
	failTimedOut                        // it ran past its timeout; the worker is terminated
	failAppAborted                      // the app failed after sending its response head
	failBadResponse                     // the app's response cannot be sent as the app wrote it
)

// statusClientClosedRequest is logged for requests whose client left while
// they waited for a worker (nginx's 499): not a server error.
const statusClientClosedRequest = 499

// failureStatus is the HTTP status of each failure.
var failureStatus = map[failure]int{
	failRefused:      http.StatusBadRequest,
	failHeadTooLarge: http.StatusRequestHeaderFieldsTooLarge,
	failUnavailable:  http.StatusServiceUnavailable,
	failAbandoned:    http.StatusBadGateway,
	failClientLeft:   statusClientClosedRequest,
	failWorkerBroken: http.StatusBadGateway,
	failTimedOut:     http.StatusGatewayTimeout,
	failAppAborted:   http.StatusBadGateway,
	failBadResponse:  http.StatusInternalServerError,
}

// requestError is a request the engine could not serve, and why.
type requestError struct {
	failure failure
	err     error
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// failed wraps err as a failure of kind f.
func failed(f failure, err error) error { return &requestError{failure: f, err: err} }

// failureOf is err's failure, or 0 if the engine did not say.
func failureOf(err error) failure {
	if err == nil {
		return 0
	}
	var re *requestError
	if errors.As(err, &re) {
		return re.failure
	}
	return 0
}

// brokeChannel reports whether err left its worker's channel in a state
// that cannot be trusted (the worker is being ended).
func brokeChannel(err error) bool {
	f := failureOf(err)
	return f == failWorkerBroken || f == failTimedOut
}

// httpError is what a handler returns to Caddy for the engine's err: a
// caddyhttp.HandlerError with the failure's status (503 also says when to
// come back). Other errors pass unchanged.
func httpError(w http.ResponseWriter, err error) error {
	if err == nil { // served: the usual case costs one comparison
		return nil
	}
	f := failureOf(err)
	if f == 0 {
		return err
	}
	if f == failUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	return caddyhttp.Error(failureStatus[f], err)
}
