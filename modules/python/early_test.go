package python

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestEarlyDataIsTooEarly: a request sent in TLS early data (HTTP/3's
// 0-RTT, which Caddy accepts) reaches no app: its client's address is not
// proven (a 0-RTT packet may carry a trusted proxy's, whose forwarded
// headers would then be taken) and it may be a replay. It gets 425, which
// a browser answers by sending it again once the handshake is done.
// Requests over TCP, or over a finished handshake, are served.
func TestEarlyDataIsTooEarly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state *tls.ConnectionState
		early bool
	}{
		{"plain HTTP", nil, false},
		{"a finished handshake", &tls.ConnectionState{HandshakeComplete: true}, false},
		{"0-RTT", &tls.ConnectionState{HandshakeComplete: false}, true},
	} {
		for _, h := range []caddyhttp.MiddlewareHandler{&WSGI{}, &ASGI{}} {
			r := httptest.NewRequest(http.MethodGet, "/transfer", nil) // (a WebSocket opening is a GET)
			r.TLS = tc.state
			if _, ok := h.(*ASGI); ok { // its WebSocket openings too
				r.Header.Set("Connection", "Upgrade")
				r.Header.Set("Upgrade", "websocket")
			}
			err := tooEarly(r)
			var he caddyhttp.HandlerError
			if got := errors.As(err, &he) && he.StatusCode == http.StatusTooEarly; got != tc.early {
				t.Errorf("%s, %T: %v, want 425 %v", tc.name, h, err, tc.early)
			}
			if !tc.early {
				continue
			}
			// and the handlers answer so before anything else
			if err := h.ServeHTTP(httptest.NewRecorder(), r, nil); !errors.As(err, &he) || he.StatusCode != http.StatusTooEarly {
				t.Errorf("%s, %T: ServeHTTP: %v, want 425", tc.name, h, err)
			}
		}
	}
}
