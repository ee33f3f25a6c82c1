package tests

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketBadOpening: a malformed WebSocket opening gets 400 saying
// what is wrong, and the app never sees it (it would otherwise accept a
// connection that cannot be completed and see it drop).
func TestWebSocketBadOpening(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "ws.log")
	config, url := asgiSite(t, "ws_app:app", "workers 1\n\t\tenv WS_LOG "+log)
	startCaddy(t, config)
	addr := strings.TrimPrefix(url, "http://")
	const goodKey = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	const good = "Sec-WebSocket-Version: 13\r\n" + goodKey
	for _, tc := range []struct {
		name, proto, connection, headers, want string
	}{
		{"version 8", "", "", "Sec-WebSocket-Version: 8\r\n" + goodKey, `unsupported Sec-WebSocket-Version "8"`},
		{"no version", "", "", goodKey, `unsupported Sec-WebSocket-Version ""`},
		{"no key", "", "", "Sec-WebSocket-Version: 13\r\n", "0 Sec-WebSocket-Key headers"},
		{"two keys", "", "", good + goodKey, "2 Sec-WebSocket-Key headers"},
		{"short key", "", "", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n", "not 16 bytes in base64"},
		// Go's WebSocket library refuses these once the app has accepted
		// them: they must not reach the app
		{"HTTP/1.0", "HTTP/1.0", "", good, "not over HTTP/1.0"},
		{"upgrade inside another token", "", "keep-alive-upgrade", good, `Connection header "keep-alive-upgrade" does not list upgrade`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proto, connection := cmp.Or(tc.proto, "HTTP/1.1"), cmp.Or(tc.connection, "Upgrade")
			status, version, body := rawOpening(t, addr, proto, connection, tc.headers)
			if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
				t.Errorf("status %d, body %q; want 400 with %q", status, body, tc.want)
			}
			if version != "13" {
				t.Errorf("Sec-WebSocket-Version %q in the refusal, want 13", version)
			}
		})
	}
	ws := wsDial(t, "ws://"+addr+"/echo")
	wsRoundTrip(t, ws, websocket.MessageText, "still fine")
	ws.Close(1000, "")
	waitFor(t, 20*time.Second, "the good connection's disconnect in the app's log", func() bool {
		data, _ := os.ReadFile(log)
		return len(data) > 0
	})
	if data, _ := os.ReadFile(log); strings.TrimSpace(string(data)) != "disconnect 1000" {
		t.Errorf("the app saw other connections than the good one: %q", data)
	}
}

// rawOpening sends a WebSocket opening for /echo over proto, with a
// Connection header and extra header lines, and returns the answer's
// status, Sec-WebSocket-Version and body.
func rawOpening(t *testing.T, addr, proto, connection, headers string) (int, string, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET /echo %s\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: %s\r\n%s\r\n", proto, addr, connection, headers)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Sec-WebSocket-Version"), string(body)
}
