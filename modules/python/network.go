package python

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// listener is a listening TCP socket of this machine.
type listener struct {
	addr    net.IP
	port    int
	inode   string
	process string
}

// networkFindings reports listening sockets on non-loopback addresses
// that Caddy does not own (databases, caches and development servers
// reachable from the network), and Caddy's own non-loopback listeners that
// serve no site (its admin API moved off loopback).
func networkFindings(serverPorts []string) []Finding {
	own := ownSocketInodes()
	var out []Finding
	for _, l := range listeners() {
		if l.addr.IsLoopback() {
			continue
		}
		if own[l.inode] {
			if !slices.Contains(serverPorts, strconv.Itoa(l.port)) {
				out = append(out, Finding{ID: "HG-NET-02", Blocking: true,
					Problem: fmt.Sprintf("Caddy listens on %s for something other than a site: its admin API (which can change the whole config) reachable from the network", net.JoinHostPort(l.addr.String(), strconv.Itoa(l.port))),
					Fix:     "keep the admin endpoint on loopback: `admin localhost:2019` (the default) in the global options"})
			}
			continue
		}
		where := net.JoinHostPort(l.addr.String(), strconv.Itoa(l.port))
		who := "a process"
		if l.process != "" {
			who = l.process
		}
		out = append(out, Finding{ID: "HG-NET-01", Blocking: false,
			Problem: fmt.Sprintf("%s listens on %s, reachable from the network (not Caddy)", who, where),
			Fix:     fmt.Sprintf("bind it to 127.0.0.1 (or ::1) if only this machine needs it, or firewall port %d", l.port)})
	}
	slices.SortFunc(out, func(a, b Finding) int { return strings.Compare(a.Problem, b.Problem) })
	return out
}

// listeners parses /proc/net/tcp and tcp6 for sockets in LISTEN state.
func listeners() []listener {
	var out []listener
	names := socketOwners()
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			ip, port, ok := parseProcAddr(f[1])
			if !ok {
				continue
			}
			out = append(out, listener{addr: ip, port: port, inode: f[9], process: names[f[9]]})
		}
	}
	return out
}

// parseProcAddr decodes "0100007F:1F90" (little-endian words) into an IP
// and a port.
func parseProcAddr(s string) (net.IP, int, bool) {
	host, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return nil, 0, false
	}
	raw, err := hex.DecodeString(host)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, 0, false
	}
	for i := 0; i+4 <= len(raw); i += 4 { // each 32-bit word is little-endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseInt(portHex, 16, 32)
	if err != nil {
		return nil, 0, false
	}
	return net.IP(raw), int(port), true
}

// ownSocketInodes are the sockets of this (Caddy's) process.
func ownSocketInodes() map[string]bool {
	own := map[string]bool{}
	for inode := range socketInodes("/proc/self/fd") {
		own[inode] = true
	}
	return own
}

// socketOwners maps socket inodes to the names of the processes holding
// them (as far as this user may look).
func socketOwners() map[string]string {
	owners := map[string]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, proc := range procs {
		comm, err := os.ReadFile(filepath.Join(proc, "comm"))
		if err != nil {
			continue
		}
		for inode := range socketInodes(filepath.Join(proc, "fd")) {
			owners[inode] = strings.TrimSpace(string(comm)) + " (pid " + filepath.Base(proc) + ")"
		}
	}
	return owners
}

// socketInodes yields the socket inodes among the fds in dir.
func socketInodes(dir string) map[string]struct{} {
	out := map[string]struct{}{}
	fds, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
			out[strings.TrimSuffix(inode, "]")] = struct{}{}
		}
	}
	return out
}
