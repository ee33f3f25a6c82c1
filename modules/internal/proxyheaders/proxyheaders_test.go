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
	} {
		if got := Is(http.CanonicalHeaderKey(name)); got != want {
			t.Errorf("Is(%q) = %v, want %v", name, got, want)
		}
	}
}
