package proxyheaders

import (
	"net/http"
	"testing"
)

func TestIs(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Forwarded-For": true, "X-Forwarded-Host": true, "x-forwarded-proto": true, "X-Forwarded": true,
		"Forwarded": true, "x-real-ip": true, "CF-Connecting-IP": true, "True-Client-IP": true, "Via": true,
		"Host": false, "Cookie": false, "Authorization": false, "X-Requested-With": false, "User-Agent": false,
		// underscores: FastCGI and CGI read x_forwarded_for as HTTP_X_FORWARDED_FOR
		"x_forwarded_for": true, "X_Forwarded_Host": true, "x-forwarded_proto": true, "x_real_ip": true, "cf_connecting_ip": true,
		"x_requested_with": false, "my_header": false,
	} {
		if got := Is(http.CanonicalHeaderKey(name)); got != want {
			t.Errorf("Is(%q) = %v, want %v", name, got, want)
		}
	}
}
