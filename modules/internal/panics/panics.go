// Package panics keeps a panic in Hearth's code from ending Caddy: a
// panic while starting a config becomes that load's error, in a request
// that request's error, in a background goroutine a log entry; each is
// logged once with its stack. Caddy's own background loops do the same
// (reverseproxy's health checker, the tls app's maintenance).
package panics

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// Error is a recovered panic as an error.
type Error struct {
	// What names what was running ("starting app \"shop\"").
	What string
	// Value is what was passed to panic.
	Value any
}

func (e *Error) Error() string {
	return fmt.Sprintf("internal error in Hearth while %s: %v (this is a bug; the stack is in Caddy's log: please report it)", e.What, e.Value)
}

// Log records a recovered panic with its stack.
func Log(logger *zap.Logger, what string, value any) {
	logger.Error("recovered from a panic", zap.String("while", what), zap.Any("panic", value), zap.ByteString("stack", debug.Stack()))
}

// Recover, deferred by a function with a named error result, turns a
// panic in that function into *err (an *Error), logged with its stack:
//
//	func (p *Pool) Start() (err error) {
//		defer panics.Recover(p.logger, "starting the pool", &err)
//
// net/http's ErrAbortHandler goes on unchanged (see Aborted).
func Recover(logger *zap.Logger, what string, err *error) {
	if v := recover(); v != nil {
		recovered(logger, what, v, err)
	}
}

// RecoverRequest is Recover for a request's handler: what is followed by
// r's method and path, put together only after a panic (a deferred call's
// arguments are evaluated on every request).
func RecoverRequest(logger *zap.Logger, what string, r *http.Request, err *error) {
	if v := recover(); v != nil {
		recovered(logger, what+" "+r.Method+" "+r.URL.Path, v, err)
	}
}

// recovered logs a recovered panic and makes it the error, unless it is
// an abort, which goes on.
func recovered(logger *zap.Logger, what string, v any, err *error) {
	if Aborted(v) {
		panic(v)
	}
	Log(logger, what, v)
	*err = &Error{What: what, Value: v}
}

// Call runs f and returns its error; a panic in f is logged and returned
// as an *Error.
func Call(logger *zap.Logger, what string, f func() error) (err error) {
	defer Recover(logger, what, &err)
	return f()
}

// Go runs f in a new goroutine; a panic in f is logged and ends that
// goroutine only.
func Go(logger *zap.Logger, what string, f func()) {
	go func() {
		defer func() {
			if v := recover(); v != nil {
				Log(logger, what, v)
			}
		}()
		f()
	}()
}

// Aborted reports whether err is, or wraps, net/http's ErrAbortHandler:
// the panic a handler uses on purpose to abort a response, which must
// reach net/http's server unchanged.
func Aborted(v any) bool {
	err, ok := v.(error)
	return ok && errors.Is(err, http.ErrAbortHandler)
}

// Keep runs f, a supervision loop, until it returns; should f panic, the
// panic is logged and f runs again after a second, unless stop is closed
// by then. A bug met in one turn of a loop that keeps workers alive must
// not leave a pool without its supervision for good.
func Keep(logger *zap.Logger, what string, stop <-chan struct{}, f func()) {
	for {
		panicked := func() (panicked bool) {
			defer func() {
				if v := recover(); v != nil {
					Log(logger, what, v)
					panicked = true
				}
			}()
			f()
			return false
		}()
		if !panicked {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(keepPause):
		}
	}
}

// keepPause is how long Keep waits before running a loop that panicked again.
var keepPause = time.Second
