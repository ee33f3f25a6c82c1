package python

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/python/engine"
)

// TestHTTPError: each engine failure becomes its HTTP status in one place
// (503 also says when to come back); a failure wrapped further keeps its
// status; any other error passes unchanged.
func TestHTTPError(t *testing.T) {
	pool := engine.New(engine.Options{Name: "httperror"}, zap.NewNop())
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter string
	}{
		{engine.Failed(engine.BodyTooLarge, errors.New("big body")), 413, ""},
		{engine.Failed(engine.BodyUnreadable, errors.New("short body")), 400, ""},
		{engine.Failed(engine.Refused, errors.New("NUL")), 400, ""},
		{engine.Failed(engine.HeadTooLarge, errors.New("big")), 431, ""},
		{engine.Failed(engine.Unavailable, errors.New("queue full")), 503, "1"},
		{engine.Failed(engine.Abandoned, errors.New("pipelined")), 502, ""},
		{engine.Failed(engine.ClientLeft, errors.New("gone")), 499, ""},
		{engine.Failed(engine.WorkerBroken, errors.New("EOF")), 502, ""},
		{engine.Failed(engine.TimedOut, errors.New("late")), 504, ""},
		{engine.Failed(engine.AppAborted, errors.New("abort")), 502, ""},
		{engine.Failed(engine.BadResponse, errors.New("bad header")), 500, ""},
		{fmt.Errorf("relaying: %w", engine.Failed(engine.TimedOut, errors.New("late"))), 504, ""},
	} {
		rec := httptest.NewRecorder()
		var he caddyhttp.HandlerError
		if !errors.As(httpError(rec, pool, tc.err), &he) || he.StatusCode != tc.status {
			t.Errorf("%v: %v, want status %d", tc.err, he, tc.status)
		}
		if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", tc.err, got, tc.retryAfter)
		}
	}
	for f := engine.Failure(1); f <= engine.LastFailure; f++ {
		if failureStatus[f] == 0 {
			t.Errorf("failure %d has no HTTP status", f)
		}
	}
	plain := errors.New("not the engine's")
	if got := httpError(httptest.NewRecorder(), pool, plain); got != plain {
		t.Errorf("a plain error became %v", got)
	}
}
