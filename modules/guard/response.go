package guard

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/textcut"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
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
// header is written, and error responses held back whole (up to ScanLimit)
// until they are known not to leak a debug page. One that is larger, or
// decodes to more, is replaced: what the guard has not read, it does not
// send (a debug page's signatures are not at its start, and a client's long
// query string can push them further).
type guardedWriter struct {
	http.ResponseWriter
	g            *Guard
	r            *http.Request
	serverBefore []string // Caddy's own Server header, before the app ran
	path, query  string   // the request's path and query when the guard judged it

	wroteHeader bool
	status      int
	holding     bool // an error response is being held for scanning
	holdLimit   int  // how many bytes of it are held at most
	held        bytes.Buffer
	counted     int  // the memory of held counted in pagesHeld
	discard     bool // the response was replaced: drop the rest
}

func (g *Guard) wrap(w http.ResponseWriter, r *http.Request) *guardedWriter {
	return &guardedWriter{ResponseWriter: w, g: g, r: r, serverBefore: slices.Clone(w.Header()["Server"]),
		path: r.URL.Path, query: r.URL.RawQuery}
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
	// a rewrite after the guard (rewrite, uri, try_files) changed what is
	// served, from what the client sent (`rewrite /dl /static/{query.f}`
	// with ?f=.env): judged again. What is left of a path that lost a
	// prefix (the strip of handle_path, or a rewrite the client made look
	// like one) is judged by every rule but those for the site's own
	// pages (/console): /static/console/app.js is a file.
	if gw.r.URL.Path != gw.path || gw.r.URL.RawQuery != gw.query {
		stripped := gw.r.URL.Path != gw.path && strings.HasSuffix(gw.path, gw.r.URL.Path)
		if reason := gw.g.refusedAs(gw.r, !stripped); reason != "" {
			if ok, skipped := gw.g.logs.rewrite.Allow(); ok {
				gw.g.logger.Warn("guard refused a request after a rewrite (at most one line a second of those a client can cause)", loggedPath(gw.path),
					zap.String("rewritten_to", textcut.Prefix(gw.r.URL.Path, maxLoggedPath)), zap.String("reason", reason), zap.Int64("not_logged_since", skipped))
			}
			gw.replaceWith(http.StatusNotFound)
			return
		}
	}
	if status >= 400 && scannable(gw.Header().Get("Content-Type")) {
		gw.holding, gw.holdLimit = true, gw.g.ScanLimit
		if len(gw.Header()["Content-Encoding"]) > 0 {
			// a zstd block is decoded only whole: hold one more, so that
			// ScanLimit bytes can be decoded from what is held
			gw.holdLimit += zstdMaxBlock
		}
		return
	}
	gw.ResponseWriter.WriteHeader(status)
}

// responseLogs rate-limits, per guard and per kind, the lines about
// responses replaced or refused, which a client can cause with every
// request (any unknown URL, on an app with DEBUG on): a flood of one kind
// on one site hides no other; loggedPath cuts the path it chose.
type responseLogs struct {
	rewrite, tooLarge, undecodable, debugPage loglimit.Limit
}

func newResponseLogs() *responseLogs {
	return &responseLogs{rewrite: loglimit.Limit{Every: time.Second}, tooLarge: loglimit.Limit{Every: time.Second},
		undecodable: loglimit.Limit{Every: time.Second}, debugPage: loglimit.Limit{Every: time.Second}}
}

// maxLoggedPath bounds a path in a log line (Caddy takes ~16 KiB).
const maxLoggedPath = 512

func loggedPath(path string) zap.Field {
	return zap.String("path", textcut.Prefix(path, maxLoggedPath))
}

func (gw *guardedWriter) Write(p []byte) (int, error) {
	if !gw.wroteHeader {
		gw.WriteHeader(http.StatusOK)
	}
	switch {
	case gw.discard:
		return len(p), nil
	case gw.holding:
		// past the limit, judged before any of p is copied (one write of
		// a whole large response would otherwise be held, uncounted)
		over := gw.held.Len()+len(p) > gw.holdLimit
		if !over && !gw.hold(p) {
			return len(p), nil
		}
		if over {
			gw.holding = false
			if ok, skipped := gw.g.logs.tooLarge.Allow(); ok {
				gw.g.logger.Error("guard replaced an error response larger than it checks (at most one line a second of those a client can cause)",
					loggedPath(gw.r.URL.Path), zap.Int("status", gw.status), zap.Int("scan_limit", gw.g.ScanLimit), zap.Int64("not_logged_since", skipped),
					zap.String("fix", "if the app's error pages are this large, raise the guard's scan_limit"))
			}
			gw.replace()
		}
		return len(p), nil
	}
	return gw.ResponseWriter.Write(p)
}

// hold adds p to the page held back, counting what its buffer grew by in
// pagesHeld; past that limit it replaces the page instead, unread, and
// reports false.
func (gw *guardedWriter) hold(p []byte) bool {
	before := gw.held.Cap()
	gw.held.Write(p)
	grown := gw.held.Cap() - before
	if grown == 0 || pagesHeld.take(grown, gw.counted, gw.held.Len()) {
		gw.counted += grown
		return true
	}
	gw.holding = false
	if ok, skipped := pagesSpentWarnings.Allow(); ok {
		gw.g.logger.Warn("guard replaced an error response unread: the error pages held back across Caddy to be checked are all waiting for clients that read slowly (at most one such line a second)",
			loggedPath(gw.r.URL.Path), zap.Int("status", gw.status), zap.Int("held_limit", pagesHeldLimit),
			zap.Int64("not_logged_since", skipped),
			zap.String("fix", "none needed if a client is holding streams open on purpose: its status was kept, with a plain page"))
	}
	gw.replace()
	return false
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

// release decides on a held response, held whole: replaced if it leaks a
// debug page or, compressed, cannot be decoded within ScanLimit bytes to
// be checked; sent as it was otherwise. The answer to a HEAD request has
// the replacement's header whatever the app sent: with no body to check,
// the app's (a Content-Length of 250 kB on a 500) would tell that a debug
// page answers the same GET.
func (gw *guardedWriter) release() {
	gw.holding = false
	if gw.r.Method == http.MethodHead {
		gw.replace()
		return
	}
	body := gw.held.Bytes()
	text, err := decodedBody(gw.Header(), body, gw.g.ScanLimit)
	if err != nil {
		if ok, skipped := gw.g.logs.undecodable.Allow(); ok {
			gw.g.logger.Error("guard replaced a compressed error response it could not check (at most one line a second of those a client can cause)",
				loggedPath(gw.r.URL.Path), zap.Int("status", gw.status), zap.Int64("not_logged_since", skipped),
				zap.Strings("content_encoding", gw.Header().Values("Content-Encoding")), zap.Error(err))
		}
		gw.replace()
		return
	}
	if sig := leak(text); sig != "" {
		// the page itself stays out of the log: a debug page shows the
		// request's cookies and Authorization header, settings and local
		// variables; the app's own log has its traceback
		if ok, skipped := gw.g.logs.debugPage.Allow(); ok {
			gw.g.logger.Error("guard replaced a response that carried a debug page or traceback (at most one line a second of those a client can cause)",
				loggedPath(gw.r.URL.Path), zap.Int("status", gw.status), zap.String("signature", sig),
				zap.String("page", pageName(text)), zap.Int64("not_logged_since", skipped),
				zap.String("fix", "debug pages are for development: turn off DEBUG (Django) or debug mode (Flask, Starlette); the traceback is in the app's log"))
		}
		gw.replace()
		return
	}
	gw.ResponseWriter.WriteHeader(gw.status)
	_, _ = gw.ResponseWriter.Write(body) // held until the client has it
	gw.drop()
}

// drop lets go of what is held and gives its memory back to pagesHeld.
// It may be called again.
func (gw *guardedWriter) drop() {
	gw.held = bytes.Buffer{}
	pagesHeld.give(gw.counted)
	gw.counted = 0
}

// replace sends a plain page of the same status class instead of the
// response: a client error keeps its status (a 404 stays a 404, so that
// clients and crawlers still see what happened), a server error becomes a
// 500.
func (gw *guardedWriter) replace() {
	status := http.StatusInternalServerError
	if gw.status < 500 {
		status = gw.status
		if http.StatusText(status) == "" {
			status = http.StatusBadRequest
		}
	}
	gw.replaceWith(status)
}

// replaceWith sends a plain page of status instead of the response, and
// drops the rest of it.
func (gw *guardedWriter) replaceWith(status int) {
	gw.discard = true
	gw.drop() // before the plain page, which a slow client may take its time over
	h := gw.Header()
	for _, k := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Disposition", "Content-Range", "Accept-Ranges", "Etag", "Last-Modified", "Vary"} {
		delete(h, k)
	}
	body := []byte(http.StatusText(status) + "\n")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	gw.ResponseWriter.WriteHeader(status)
	_, _ = gw.ResponseWriter.Write(body)
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
	// the values the app did not set share one array of this response's
	// own, made once one is missing (one allocation, not one per header);
	// each header's slice is capped at its one value, so adding to it copies
	var values *[4]string
	n := 0
	setDefault := func(key, value string) {
		if len(h[key]) == 0 {
			if values == nil {
				values = new([4]string)
			}
			values[n] = value
			h[key] = values[n : n+1 : n+1]
			n++
		}
	}
	setDefault("X-Content-Type-Options", "nosniff")
	setDefault("X-Frame-Options", "SAMEORIGIN")
	setDefault("Referrer-Policy", "strict-origin-when-cross-origin")
	if gw.r.TLS != nil && gw.g.HSTSMaxAge > 0 {
		hsts := gw.g.hsts
		if gw.g.hstsAge != gw.g.HSTSMaxAge { // not prepared, or changed since
			hsts = "max-age=" + strconv.Itoa(gw.g.HSTSMaxAge)
		}
		setDefault("Strict-Transport-Security", hsts)
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

// indexASCIIFold is the index of the ASCII word in s, in any case of its
// letters, or -1. Unlike an index into bytes.ToLower(s), it is an index
// into s itself: lowering other letters changes their length in bytes
// (U+023A grows, the Kelvin sign shrinks), which would point elsewhere in
// the page, or past its end.
func indexASCIIFold(s []byte, word string) int {
	for i := 0; i+len(word) <= len(s); i++ {
		match := true
		for j := 0; j < len(word); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != word[j] {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}

// pageName names a debug page or traceback for the log: its <title> up
// to " at ", ":" or " //" ("RuntimeError" from "RuntimeError at /boom" or
// "RuntimeError: … // Werkzeug Debugger", "Page not found" from Django's
// technical 404), or the exception on a traceback's last line. Never the
// exception's message, which may hold whatever the app was handling.
func pageName(text []byte) string {
	var line []byte
	if i := indexASCIIFold(text[:min(len(text), 4096)], "<title>"); i >= 0 {
		line = text[i+len("<title>"):]
	} else if i := bytes.Index(text, []byte("Traceback (most recent call last)")); i >= 0 {
		// the first line after the traceback's own that does not start
		// with a space is the exception's
		for rest := text[i:]; ; {
			j := bytes.IndexByte(rest, '\n')
			if j < 0 {
				break
			}
			rest = rest[j+1:]
			if len(rest) > 0 && rest[0] != ' ' && rest[0] != '\t' {
				line = rest
				break
			}
		}
	}
	line = bytes.TrimSpace(line[:min(len(line), 80)])
	for _, end := range []string{" at ", ":", " //", "<", "\n"} {
		if i := bytes.Index(line, []byte(end)); i >= 0 {
			line = line[:i]
		}
	}
	for _, c := range line {
		if c < ' ' || c > '~' {
			return ""
		}
	}
	return string(bytes.TrimSpace(line))
}
