// Package clientnet says which client an address belongs to, for the
// bounds Hearth keeps per client (max_queue_per_client and
// max_open_per_client in an app's pool, max_connections_per_client in
// hearth_io): an IPv4 address alone, an IPv6 address by its /64, the least
// a network hands one host, so that one host cannot count as many clients
// by taking another address of its own network each time.
package clientnet

import "net/netip"

// Of is the client a is counted as: its /32 (an IPv4 address, or one
// mapped into IPv6) or its /64 (IPv6), without a zone. The zero Prefix for
// the zero Addr.
func Of(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	prefix, _ := a.Prefix(bits)
	return prefix
}

// Name is client as a message shows it: an IPv4 client as its address
// alone, an IPv6 client as its /64.
func Name(client netip.Prefix) string {
	if client.Addr().Is4() {
		return client.Addr().String()
	}
	return client.String()
}
