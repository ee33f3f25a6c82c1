package engine

import "errors"

// Failure is why the engine could not serve a request as the app would
// have. The engine says what happened (an error carrying a Failure); the
// Caddy handlers turn it into an HTTP status, in one place.
type Failure uint8

// The failures, in the order a request meets them.
const (
	BodyTooLarge    Failure = iota + 1 // its body is larger than the handler's max_body
	BodyUnreadable                     // the client sent a body that could not be read
	Refused                            // the request cannot be given to an app safely (a NUL byte)
	HeadTooLarge                       // its head is larger than a frame carries
	Unavailable                        // no worker took it: queue full, queue_timeout, pool stopped
	TooManyRequests                    // its client has max_queue_per_client requests waiting already
	Abandoned                          // pipelined to a worker that broke, and not idempotent: not sent again
	ClientLeft                         // the client left while it waited for a worker
	WorkerBroken                       // the worker's channel broke; the worker is killed
	TimedOut                           // it ran past its timeout; the worker is terminated
	AppAborted                         // the app failed after sending its response head
	BadResponse                        // the app's response cannot be sent as the app wrote it
)

// Refusal reports whether f refuses a request for now (Unavailable,
// TooManyRequests): its client is told when to come back (Retry-After),
// and it is counted in hearth_refused_requests_total.
func (f Failure) Refusal() bool { return f == Unavailable || f == TooManyRequests }

// LastFailure is the highest Failure, for tables indexed by them.
const LastFailure = BadResponse

// requestError is a request the engine could not serve, and why.
type requestError struct {
	failure Failure
	err     error
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// Failed wraps err as a failure of kind f.
func Failed(f Failure, err error) error { return &requestError{failure: f, err: err} }

// FailureOf is err's Failure, or 0 if the engine did not say.
func FailureOf(err error) Failure {
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
	f := FailureOf(err)
	return f == WorkerBroken || f == TimedOut
}
