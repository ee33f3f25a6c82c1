package python

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/internal/panics"
)

// TestServeHTTPPanicIsThatRequestsError: a panic while serving a request
// (here: a handler without a pool) becomes that request's error, logged
// once with its stack; Caddy answers an error that is not a
// caddyhttp.HandlerError with 500, and the server goes on.
func TestServeHTTPPanicIsThatRequestsError(t *testing.T) {
	for _, kind := range []string{"wsgi", "asgi"} {
		core, logs := observer.New(zap.ErrorLevel)
		req := httptest.NewRequest("POST", "/orders", strings.NewReader("x=1"))
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s: the panic reached the server: %v", kind, v)
				}
			}()
			if kind == "wsgi" {
				err = (&WSGI{logger: zap.New(core), MaxBody: 1 << 20}).ServeHTTP(httptest.NewRecorder(), req, nil)
			} else {
				err = (&ASGI{WSGI: WSGI{logger: zap.New(core), MaxBody: 1 << 20}}).ServeHTTP(httptest.NewRecorder(), req, nil)
			}
		}()
		var perr *panics.Error
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), "serving POST /orders") {
			t.Errorf("%s: the request's error is %v, want the recovered panic", kind, err)
		}
		entries := logs.FilterMessage("recovered from a panic").All()
		if len(entries) != 1 || !strings.Contains(entries[0].ContextMap()["stack"].(string), "ServeHTTP") {
			t.Errorf("%s: %d log entries for the panic, want one with the stack: %v", kind, len(entries), entries)
		}
	}
}
