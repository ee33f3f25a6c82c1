package netinfo

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
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

// TestGroupListens: a listener of this process's group counts on its
// address (and a wildcard listener on any host of its port); another
// group, or another port, does not.
func TestGroupListens(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	pgid := syscall.Getpgrp()
	if listens, known := GroupListens(pgid, addr); !listens || !known {
		t.Errorf("this process group listens on %s, GroupListens says %v (known %v)", addr, listens, known)
	}
	if listens, _ := GroupListens(pgid+100000, addr); listens {
		t.Error("another process group was found listening")
	}
	other, _ := net.Listen("tcp", "127.0.0.1:0")
	port := other.Addr().(*net.TCPAddr).Port
	other.Close()
	if listens, _ := GroupListens(pgid, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); listens {
		t.Error("a closed port was found listening")
	}
	if listens, _ := GroupListens(pgid, "no-port"); listens {
		t.Error("an address without a port was accepted")
	}
}

// TestForeignListener: a listener that would take an address's
// connections is reported when its socket is another account's, wildcard
// listeners included; one of the account itself is not.
func TestForeignListener(t *testing.T) {
	me := os.Geteuid()
	for _, listen := range []string{"127.0.0.1:0", "[::]:0"} {
		l, err := net.Listen("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		addr := net.JoinHostPort("127.0.0.1", port)
		if got := ForeignListener(addr, me); got != "" {
			t.Errorf("%s: this account's own listener is foreign: %q", listen, got)
		}
		if got := ForeignListener(addr, me+1); !strings.Contains(got, fmt.Sprintf("uid %d", me)) {
			t.Errorf("%s: seen from another account, ForeignListener says %q", listen, got)
		}
		if got := ForeignListener(net.JoinHostPort("127.0.0.2", port), me+1); (listen == "[::]:0") != (got != "") {
			t.Errorf("%s: another address of the port: %q", listen, got)
		}
		l.Close()
		if got := ForeignListener(addr, me+1); got != "" {
			t.Errorf("%s: a closed port is foreign: %q", listen, got)
		}
	}
}

// TestProcessName: a process's self-chosen name reaches a terminal with
// no control character (an escape sequence could rewrite the screen).
func TestProcessName(t *testing.T) {
	for in, want := range map[string]string{
		"node\n":                "node",
		"caddy\n":               "caddy",
		"\x1b[2J\x1b]0;x\x07\n": "?[2J?]0;x?",
		"a\u0085b\xff\n":        "a?b?",
		"python3 \n":            "python3 ",
	} {
		if got := processName([]byte(in)); got != want {
			t.Errorf("processName(%q) = %q, want %q", in, got, want)
		}
	}
}
