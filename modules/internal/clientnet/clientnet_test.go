package clientnet

import (
	"net/netip"
	"testing"
)

// TestOf: IPv4 by address, IPv4-mapped IPv6 as IPv4, IPv6 by /64, zones
// dropped; what a message shows.
func TestOf(t *testing.T) {
	for _, tc := range []struct{ addr, want, name string }{
		{"203.0.113.7", "203.0.113.7/32", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7/32", "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64", "fe80::/64"},
		{"127.0.0.2", "127.0.0.2/32", "127.0.0.2"},
	} {
		got := Of(netip.MustParseAddr(tc.addr))
		if got.String() != tc.want || Name(got) != tc.name {
			t.Errorf("Of(%s) = %s, shown %q; want %s, %q", tc.addr, got, Name(got), tc.want, tc.name)
		}
	}
	if Of(netip.Addr{}).IsValid() {
		t.Error("the zero Addr is a client")
	}
}
