package python

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestHTTPError: each engine failure becomes its HTTP status in one place
// (503 also says when to come back); a failure wrapped further keeps its
// status; any other error passes unchanged.
func TestHTTPError(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter string
	}{
		{failed(failRefused, errors.New("NUL")), 400, ""},
		{failed(failHeadTooLarge, errors.New("big")), 431, ""},
		{failed(failUnavailable, errQueueFull), 503, "1"},
		{failed(failAbandoned, errPipelineAbandoned), 502, ""},
		{failed(failClientLeft, errors.New("gone")), 499, ""},
		{failed(failWorkerBroken, errors.New("EOF")), 502, ""},
		{failed(failTimedOut, errors.New("late")), 504, ""},
		{failed(failAppAborted, errors.New("abort")), 502, ""},
		{failed(failBadResponse, errors.New("bad header")), 500, ""},
		{fmt.Errorf("relaying: %w", failed(failTimedOut, errors.New("late"))), 504, ""},
	} {
		rec := httptest.NewRecorder()
		var he caddyhttp.HandlerError
		if !errors.As(httpError(rec, tc.err), &he) || he.StatusCode != tc.status {
			t.Errorf("%v: %v, want status %d", tc.err, he, tc.status)
		}
		if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", tc.err, got, tc.retryAfter)
		}
	}
	for f := failure(1); f <= failBadResponse; f++ {
		if failureStatus[f] == 0 {
			t.Errorf("failure %d has no HTTP status", f)
		}
	}
	plain := errors.New("not the engine's")
	if got := httpError(httptest.NewRecorder(), plain); got != plain {
		t.Errorf("a plain error became %v", got)
	}
	if !brokeChannel(fmt.Errorf("x: %w", failed(failWorkerBroken, plain))) || brokeChannel(failed(failAppAborted, plain)) {
		t.Error("brokeChannel does not follow the failure")
	}
}
