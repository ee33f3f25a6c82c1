// Package proxyheaders knows the request headers a proxy or CDN sets to
// tell the server behind it about the request: the client's address, the
// scheme, the host. Frameworks and their add-ons read them (Django's
// SECURE_PROXY_SSL_HEADER and USE_X_FORWARDED_HOST, Flask's ProxyFix,
// django-ipware, Express's trust proxy), so from a client that is not a
// trusted proxy they are a lie that app code believes.
package proxyheaders

import (
	"net/textproto"
	"strings"
)

// Is reports whether name (in canonical form, as net/http keeps header
// names) is a proxy header, spelled with '-' or '_' (X_Forwarded_For:
// CGI, FastCGI and some servers read both as HTTP_X_FORWARDED_FOR).
func Is(name string) bool {
	if strings.Contains(name, "_") {
		name = textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(name, "_", "-"))
	}
	return strings.HasPrefix(name, "X-Forwarded") || named[name]
}

// named are the proxy headers beyond X-Forwarded*.
var named = map[string]bool{
	"Forwarded": true, "X-Real-Ip": true, "X-Client-Ip": true, "True-Client-Ip": true, "Cf-Connecting-Ip": true,
	"X-Cluster-Client-Ip": true, "Fastly-Client-Ip": true, "X-Scheme": true, "X-Url-Scheme": true,
	"Front-End-Https": true, "X-Original-Host": true, "X-Host": true, "Client-Ip": true, "Forwarded-For": true,
	"Via": true, "X-Script-Name": true, "X-Original-Forwarded-For": true,
	// scheme headers of CDNs and load balancers, which Django's
	// SECURE_PROXY_SSL_HEADER is often set to read
	"Cloudfront-Forwarded-Proto": true, "Cf-Visitor": true, "X-Arr-Ssl": true,
}
