package python

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

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

// appendEnviron appends the WSGI environ of r, as protocol key/value pairs,
// to dst. scriptName is the mount point stripped by handle_path, if any.
func appendEnviron(dst []byte, r *http.Request, scriptName string, bodySize int64) []byte {
	pair := protocol.AppendPair
	dst = pair(dst, "REQUEST_METHOD", r.Method)
	if scriptName != "" {
		dst = pair(dst, "SCRIPT_NAME", scriptName)
	}
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	dst = pair(dst, "PATH_INFO", path)
	dst = pair(dst, "QUERY_STRING", r.URL.RawQuery)
	dst = pair(dst, "REQUEST_URI", r.RequestURI)
	dst = pair(dst, "SERVER_PROTOCOL", r.Proto)
	if r.TLS != nil {
		dst = pair(dst, "wsgi.url_scheme", "https")
	} else {
		dst = pair(dst, "wsgi.url_scheme", "http")
	}
	serverName, serverPort := serverAddress(r)
	dst = pair(dst, "SERVER_NAME", serverName)
	dst = pair(dst, "SERVER_PORT", serverPort)
	remoteIP, remotePort := clientAddress(r)
	dst = pair(dst, "REMOTE_ADDR", remoteIP)
	dst = pair(dst, "REMOTE_PORT", remotePort)
	if bodySize > 0 || r.Header["Content-Length"] != nil {
		dst = append(dst, "CONTENT_LENGTH\x00"...)
		dst = append(strconv.AppendInt(dst, bodySize, 10), 0)
	}
	dst = pair(dst, "HTTP_HOST", r.Host)
	for name, values := range r.Header {
		key, known := environKeys[name]
		if known && key == "" {
			continue
		}
		if !known {
			if strings.IndexByte(name, '_') >= 0 || strings.HasPrefix(name, ":") {
				// "X_Forwarded_For" would collide with "X-Forwarded-For" in
				// the environ: drop it, as nginx and Gunicorn do. HTTP/2's
				// ":protocol" pseudo-header is not a header for the app.
				continue
			}
			key = headerEnvironKey(name)
		}
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
	return dst
}

// serverAddress returns SERVER_NAME (the requested host) and SERVER_PORT
// (the local port the connection arrived on).
func serverAddress(r *http.Request) (string, string) {
	name, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		name, port = r.Host, ""
	}
	switch local := r.Context().Value(http.LocalAddrContextKey).(type) {
	case *net.TCPAddr: // the common case, without formatting the address
		port = strconv.Itoa(local.Port)
		if name == "" {
			name = local.IP.String()
		}
	case net.Addr:
		if host, p, err := net.SplitHostPort(local.String()); err == nil {
			port = p
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

// clientAddress returns the client's IP (as Caddy determined it, honouring
// trusted_proxies) and the port of the connection's peer.
func clientAddress(r *http.Request) (string, string) {
	ip, port, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip, port = r.RemoteAddr, "0"
	}
	if clientIP, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && clientIP != "" {
		ip = clientIP
	}
	return ip, port
}
