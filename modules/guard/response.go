package guard

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// debugSignatures are byte strings that only framework debug pages and
// Python tracebacks contain.
var debugSignatures = [][]byte{
	[]byte("Traceback (most recent call last)"),
	[]byte("because you have <code>DEBUG = True</code> in"),             // Django's technical 404/500 pages
	[]byte("The debugger caught an exception in your WSGI application"), // Werkzeug (Flask)
	[]byte("__debugger__"),                                              // Werkzeug's console
	[]byte(`class="traceback-container"`),                               // Starlette / FastAPI debug
}

// guardedWriter applies the guard to a response: security headers when the
// header is written, and error responses held back (up to ScanLimit) until
// they are known not to leak a debug page.
type guardedWriter struct {
	http.ResponseWriter
	g            *Guard
	r            *http.Request
	serverBefore []string // Caddy's own Server header, before the app ran

	wroteHeader bool
	status      int
	holding     bool // an error response is being held for scanning
	held        bytes.Buffer
	discard     bool // the response was replaced: drop the rest
}

func (g *Guard) wrap(w http.ResponseWriter, r *http.Request) *guardedWriter {
	return &guardedWriter{ResponseWriter: w, g: g, r: r, serverBefore: slices.Clone(w.Header()["Server"])}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (gw *guardedWriter) Unwrap() http.ResponseWriter { return gw.ResponseWriter }

// WriteHeader adds the missing security headers and, for an error
// response whose body could be a debug page, starts holding it back.
func (gw *guardedWriter) WriteHeader(status int) {
	if gw.wroteHeader {
		return
	}
	if status < 200 { // informational: not the final header
		gw.ResponseWriter.WriteHeader(status)
		return
	}
	gw.wroteHeader, gw.status = true, status
	gw.secureHeaders(gw.Header())
	if status >= 400 && scannable(gw.Header().Get("Content-Type")) {
		gw.holding = true
		return
	}
	gw.ResponseWriter.WriteHeader(status)
}

func (gw *guardedWriter) Write(p []byte) (int, error) {
	if !gw.wroteHeader {
		gw.WriteHeader(http.StatusOK)
	}
	switch {
	case gw.discard:
		return len(p), nil
	case gw.holding:
		gw.held.Write(p)
		if gw.held.Len() > gw.g.ScanLimit {
			gw.release() // too large to hold: judge it by its beginning
		}
		return len(p), nil
	}
	return gw.ResponseWriter.Write(p)
}

// Flush passes through, except while a response is held back.
func (gw *guardedWriter) Flush() {
	if gw.holding || gw.discard {
		return
	}
	_ = http.NewResponseController(gw.ResponseWriter).Flush()
}

// finish sends a response still held back.
func (gw *guardedWriter) finish() error {
	if gw.holding {
		gw.release()
	}
	return nil
}

// release decides on a held response: replaced if it leaks a debug page,
// sent as it was otherwise.
func (gw *guardedWriter) release() {
	gw.holding = false
	body := gw.held.Bytes()
	if sig := leak(body); sig != "" {
		gw.g.logger.Error("guard replaced a response that carried a debug page or traceback",
			zap.String("path", gw.r.URL.Path), zap.Int("status", gw.status), zap.String("signature", sig),
			zap.String("original", truncate(body, 8<<10)))
		gw.replace()
		return
	}
	gw.ResponseWriter.WriteHeader(gw.status)
	_, _ = gw.ResponseWriter.Write(body)
	gw.held.Reset()
}

// replace sends a plain 500 instead of the response.
func (gw *guardedWriter) replace() {
	gw.discard = true
	h := gw.Header()
	for _, k := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Disposition", "Etag", "Last-Modified", "Vary"} {
		delete(h, k)
	}
	body := []byte("Internal Server Error\n")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	gw.ResponseWriter.WriteHeader(http.StatusInternalServerError)
	_, _ = gw.ResponseWriter.Write(body)
	gw.held.Reset()
}

// secureHeaders adds the security headers the app did not set and removes
// the app's Server and X-Powered-By.
func (gw *guardedWriter) secureHeaders(h http.Header) {
	if gw.serverBefore != nil {
		h["Server"] = gw.serverBefore
	} else {
		delete(h, "Server")
	}
	delete(h, "X-Powered-By")
	setDefault(h, "X-Content-Type-Options", "nosniff")
	setDefault(h, "X-Frame-Options", "SAMEORIGIN")
	setDefault(h, "Referrer-Policy", "strict-origin-when-cross-origin")
	if gw.r.TLS != nil && gw.g.HSTSMaxAge > 0 {
		setDefault(h, "Strict-Transport-Security", "max-age="+strconv.Itoa(gw.g.HSTSMaxAge))
	}
}

func setDefault(h http.Header, key, value string) {
	if len(h[key]) == 0 {
		h[key] = []string{value}
	}
}

// scannable reports whether a body of this type could be a debug page.
func scannable(contentType string) bool {
	ct := strings.ToLower(contentType)
	return ct == "" || strings.HasPrefix(ct, "text/") || strings.Contains(ct, "json") || strings.Contains(ct, "html") || strings.Contains(ct, "xml")
}

// leak returns the debug signature body contains, or "".
func leak(body []byte) string {
	for _, sig := range debugSignatures {
		if bytes.Contains(body, sig) {
			return string(sig)
		}
	}
	return ""
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
