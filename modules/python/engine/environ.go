package engine

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/hearth-dev/hearth/modules/internal/proxyheaders"
	"github.com/hearth-dev/hearth/modules/protocol"
)

// environKeys maps canonical request header names to their WSGI environ
// keys, so the common headers cost no string transformation per request.
var environKeys = func() map[string]string {
	m := map[string]string{}
	for _, h := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Cookie", "Dnt", "Forwarded", "If-Match",
		"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Origin",
		"Pragma", "Range", "Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Te",
		"Upgrade", "Upgrade-Insecure-Requests", "User-Agent", "Via", "X-Csrftoken",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip",
		"X-Requested-With",
	} {
		m[h] = headerEnvironKey(h)
	}
	m["Content-Type"] = "CONTENT_TYPE"
	m["Content-Length"] = "" // set from the buffered body's real size
	return m
}()

// headerEnvironKey turns "User-Agent" into "HTTP_USER_AGENT".
func headerEnvironKey(name string) string {
	b := make([]byte, 0, len(name)+5)
	b = append(b, "HTTP_"...)
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '-':
			c = '_'
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b)
}

// appendRequestHead appends the payload of r's request-head frame (its
// WSGI environ as NUL-separated key/value pairs, then extra pairs) to dst.
//
// The frame is NUL-separated, so a NUL inside any value would shift the
// pairs that follow and let a client set environ keys of its choosing
// (REMOTE_USER, REMOTE_ADDR, HTTP_HOST …). Such a request is refused with
// 400 before any worker sees it: no byte a client sends can add, remove or
// override a key. (Go's HTTP servers already refuse NUL in header names
// and values and in the raw request target; it reaches here through
// percent-decoding of the path, %00.) The check is one count of NUL bytes
// over the payload against the number of pairs written.
func appendRequestHead(dst []byte, r *http.Request, rq *Request, extra ...string) ([]byte, error) {
	start := len(dst)
	dst, pairs := appendEnviron(dst, r, rq)
	for i := 0; i+1 < len(extra); i += 2 {
		dst = protocol.AppendPair(dst, extra[i], extra[i+1])
		pairs++
	}
	payload := dst[start:]
	if bytes.Count(payload, nul) != 2*pairs {
		return dst, Failed(Refused, fmt.Errorf(
			"refused a request whose %s contains a NUL byte (%%00): no app can be given it safely", nulField(r, rq)))
	}
	if len(payload) > protocol.MaxPayload {
		return dst, Failed(HeadTooLarge,
			fmt.Errorf("request head of %d bytes is larger than the %d the worker protocol allows", len(payload), protocol.MaxPayload))
	}
	return dst, nil
}

var nul = []byte{0}

// nulField names the part of r that holds a NUL byte, for the log (never
// its value: it is the client's).
func nulField(r *http.Request, rq *Request) string {
	switch {
	case strings.IndexByte(r.URL.Path, 0) >= 0 || strings.IndexByte(rq.ScriptName, 0) >= 0:
		return "path"
	case strings.IndexByte(rq.ClientIP, 0) >= 0:
		return "client address"
	case strings.IndexByte(r.URL.RawQuery, 0) >= 0:
		return "query string"
	case strings.IndexByte(r.RequestURI, 0) >= 0:
		return "request target"
	case strings.IndexByte(r.Host, 0) >= 0:
		return "Host"
	case strings.IndexByte(r.Method, 0) >= 0:
		return "method"
	}
	for name, values := range r.Header {
		if strings.IndexByte(name, 0) >= 0 {
			return "header names"
		}
		for _, v := range values {
			if strings.IndexByte(v, 0) >= 0 {
				return "header " + name
			}
		}
	}
	return "head"
}

// appendEnviron appends the WSGI environ of r, as protocol key/value pairs,
// to dst, and returns how many pairs it wrote; rq says what the handler
// decided (SCRIPT_NAME, the client's address) and holds the body. Use
// appendRequestHead, which checks that the pairs can be framed.
func appendEnviron(dst []byte, r *http.Request, rq *Request) ([]byte, int) {
	pair := protocol.AppendPair
	dst = pair(dst, "REQUEST_METHOD", r.Method)
	pairs := 11 // the pairs always written below
	if rq.ScriptName != "" {
		dst = pair(dst, "SCRIPT_NAME", rq.ScriptName)
		pairs++
	}
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	dst = pair(dst, "PATH_INFO", path)
	dst = pair(dst, "QUERY_STRING", r.URL.RawQuery)
	requestURI := r.RequestURI
	if !strings.HasPrefix(requestURI, "/") {
		// absolute-form ("http://host/path") or "*": the app is told the
		// path and query only, as for every other request
		requestURI = r.URL.RequestURI()
	}
	dst = pair(dst, "REQUEST_URI", requestURI)
	dst = pair(dst, "SERVER_PROTOCOL", r.Proto)
	if r.TLS != nil {
		dst = pair(dst, "wsgi.url_scheme", "https")
	} else {
		dst = pair(dst, "wsgi.url_scheme", "http")
	}
	serverName, serverPort := serverAddress(r)
	dst = pair(dst, "SERVER_NAME", serverName)
	dst = pair(dst, "SERVER_PORT", serverPort)
	remoteIP, remotePort := clientAddress(r, rq.ClientIP)
	dst = pair(dst, "REMOTE_ADDR", remoteIP)
	dst = pair(dst, "REMOTE_PORT", remotePort)
	if bodySize := rq.Body.Size(); bodySize > 0 || r.Header["Content-Length"] != nil {
		dst = append(dst, "CONTENT_LENGTH\x00"...)
		dst = append(strconv.AppendInt(dst, bodySize, 10), 0)
		pairs++
	}
	dst = pair(dst, "HTTP_HOST", r.Host)
	for name, values := range r.Header {
		if !rq.FromTrustedProxy && proxyheaders.Is(name) {
			continue
		}
		key, known := environKeys[name]
		if known && key == "" {
			continue
		}
		if !known {
			if strings.IndexByte(name, '_') >= 0 || strings.HasPrefix(name, ":") || name == "Host" {
				// "X_Forwarded_For" would collide with "X-Forwarded-For" in
				// the environ: drop it, as nginx and Gunicorn do. HTTP/2's
				// ":protocol" pseudo-header is not a header for the app, and
				// HTTP_HOST is r.Host, the one Caddy routed by, whatever a
				// stray Host field says.
				continue
			}
			key = headerEnvironKey(name)
		}
		pairs++
		dst = append(dst, key...)
		dst = append(dst, 0)
		sep := ", "
		if name == "Cookie" {
			sep = "; "
		}
		for i, v := range values {
			if i > 0 {
				dst = append(dst, sep...)
			}
			dst = append(dst, v...)
		}
		dst = append(dst, 0)
	}
	return dst, pairs
}

// serverAddress returns SERVER_NAME (the requested host) and SERVER_PORT
// (the local port the connection arrived on; on a unix socket, the
// scheme's default — never the port a client wrote in Host, which may be
// anything).
func serverAddress(r *http.Request) (string, string) {
	name, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		name = r.Host
	}
	port := ""
	switch local := r.Context().Value(http.LocalAddrContextKey).(type) {
	case *net.TCPAddr: // the common case, without formatting the address
		port = strconv.Itoa(local.Port)
		if name == "" {
			name = local.IP.String()
		}
	case net.Addr:
		if host, p, err := net.SplitHostPort(local.String()); err == nil {
			if _, err := strconv.Atoi(p); err == nil {
				port = p
			}
			if name == "" {
				name = host
			}
		}
	}
	if port == "" {
		port = "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	if name == "" {
		name = "localhost"
	}
	return strings.Trim(name, "[]"), port
}

// clientAddress returns the client's IP (clientIP, as Caddy determined
// it honouring trusted_proxies, when set) and the port of the
// connection's peer.
func clientAddress(r *http.Request, clientIP string) (string, string) {
	ip, port, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip, port = r.RemoteAddr, "0"
	}
	if clientIP != "" {
		ip = clientIP
	}
	return ip, port
}
