package netinfo

import (
	"net"
	"strconv"
	"testing"
)

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:1538":                         "0.0.0.0:5432",
		"00000000000000000000000000000000:0050": "[::]:80",
		"00000000000000000000000001000000:0050": "[::1]:80",
	} {
		ip, port, ok := ParseProcAddr(in)
		if got := net.JoinHostPort(ip.String(), strconv.Itoa(port)); !ok || got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
}
