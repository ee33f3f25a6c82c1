// Package netinfo reads this machine's listening sockets from /proc: what
// listens where, and which process holds it.
package netinfo

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

// Listener is a listening TCP socket of this machine.
type Listener struct {
	Addr    net.IP
	Port    int
	UID     int // the account that made the socket
	Inode   string
	Process string // "name (pid N)" when it could be found
}

// takes reports whether l receives the connections made to ip:port (a
// wildcard listener takes them for every address of its port).
func (l Listener) takes(ip net.IP, port int) bool {
	return l.Port == port && (ip == nil || l.Addr.IsUnspecified() || l.Addr.Equal(ip))
}

// Listeners parses /proc/net/tcp and tcp6 for sockets in LISTEN state (by
// /proc/self/net, which systemd's ProcSubset=pid leaves visible).
func Listeners() []Listener {
	out := listeners()
	if len(out) > 0 {
		names := socketOwners()
		for i := range out {
			out[i].Process = names[out[i].Inode]
		}
	}
	return out
}

// listeners is Listeners without the processes' names (finding them reads
// every descriptor of every process).
func listeners() []Listener {
	var out []Listener
	for _, file := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			ip, port, ok := ParseProcAddr(f[1])
			uid, err := strconv.Atoi(f[7])
			if !ok || err != nil {
				continue
			}
			out = append(out, Listener{Addr: ip, Port: port, UID: uid, Inode: f[9]})
		}
	}
	return out
}

// ParseProcAddr decodes "0100007F:1F90" (little-endian words) into an IP
// and a port.
func ParseProcAddr(s string) (net.IP, int, bool) {
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

// OwnSocketInodes are the sockets of this (Caddy's) process.
func OwnSocketInodes() map[string]bool {
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
			owners[inode] = processName(comm) + " (pid " + filepath.Base(proc) + ")"
		}
	}
	return owners
}

// processName is a process's comm as text fit for a terminal and a log:
// any process may name itself (prctl), escape sequences included, and
// `caddy hearth ports` prints it to whoever runs it, root too.
func processName(comm []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.TrimSuffix(string(comm), "\n"))
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

// GroupListens reports whether a process of the process group pgid
// listens on TCP address addr (host:port; a wildcard listener on the
// port counts for any host): the readiness of a service must be its new
// process's, not that of a previous one still on the port. known is false
// when it cannot tell: nothing of the group could be read (its processes
// run as another user, whose file descriptors this process may not list
// without CAP_SYS_PTRACE, or /proc hides them, as under `caddy hearth
// systemd`'s unit).
func GroupListens(pgid int, addr string) (listens, known bool) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return false, true
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return false, true
	}
	want := net.ParseIP(host)
	inodes := map[string]bool{}
	for _, l := range listeners() {
		if l.takes(want, port) {
			inodes[l.Inode] = true
		}
	}
	if len(inodes) == 0 {
		return false, true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	members, readable, hidden := 0, 0, false
	for _, proc := range procs {
		if processGroup(proc) != pgid {
			continue
		}
		members++
		if stat, err := os.ReadFile(filepath.Join(proc, "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
			continue // exited: listens on nothing
		}
		fds, err := os.ReadDir(filepath.Join(proc, "fd"))
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				hidden = true // another user's
			}
			continue
		}
		readable++
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(proc, "fd", fd.Name()))
			if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok && inodes[strings.TrimSuffix(inode, "]")] {
				return true, true
			}
		}
	}
	if members == 0 {
		// none in /proc: gone, or hidden (ProtectProc=invisible shows only
		// Caddy's own processes); a signal 0 tells which
		if err := syscall.Kill(pgid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			hidden = true
		}
	}
	return false, readable > 0 || !hidden
}

// ForeignListener describes a socket of an account other than uid that
// would receive connections made to TCP address addr (host:port), or is
// "". A process of uid's that Hearth told to listen there can only have
// been beaten to the port: another account's program on it would get
// the requests, cookies and passwords meant for the app. Unlike
// GroupListens it always knows: /proc/net/tcp shows every socket's owner.
func ForeignListener(addr string, uid int) string {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return ""
	}
	want := net.ParseIP(host)
	for _, l := range listeners() {
		if l.takes(want, port) && l.UID != uid {
			if name := socketOwners()[l.Inode]; name != "" {
				return fmt.Sprintf("%s of uid %d", name, l.UID)
			}
			return fmt.Sprintf("a program of uid %d", l.UID)
		}
	}
	return ""
}

// processGroup is the process group of the process at /proc/<pid>, or -1.
func processGroup(proc string) int {
	stat, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid pgrp …: comm may hold spaces and parentheses
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 3 {
		return -1
	}
	pgid, err := strconv.Atoi(f[2])
	if err != nil {
		return -1
	}
	return pgid
}
