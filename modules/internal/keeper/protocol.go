package keeper

import (
	"encoding/json"
	"syscall"
)

// Request asks the keeper to start a process. The descriptors that become
// its fds 1, 2, 3, … travel with the request's packets.
type Request struct {
	// ID is the caller's number for the request, echoed in its Reply.
	ID uint64 `json:"id"`
	// Path is the program to execute, Argv its arguments (Argv[0] its name).
	Path string   `json:"path"`
	Argv []string `json:"argv"`
	// Dir is its working directory ("" keeps the keeper's, /).
	Dir string `json:"dir,omitempty"`
	// Env is its whole environment.
	Env []string `json:"env"`
	// Credential is the account it runs as (nil: the keeper's).
	Credential *syscall.Credential `json:"credential,omitempty"`
	// Umask is its file mode creation mask; 0 is DefaultUmask.
	Umask uint32 `json:"umask"`
	// Files is the number of descriptors sent with the request.
	Files int `json:"files"`
	// MaxProcesses, when not 0, is the process's RLIMIT_NPROC, soft and
	// hard, set in the process itself once it runs as Credential's account
	// (limited.go).
	MaxProcesses uint64 `json:"max_processes,omitempty"`
}

// Reply answers a Request (ID set: Pid, or Errno and Err when the start
// failed) or reports that a process the keeper started has ended (ID 0:
// Pid and its wait Status).
type Reply struct {
	ID     uint64 `json:"id,omitempty"`
	Pid    int    `json:"pid,omitempty"`
	Errno  int    `json:"errno,omitempty"`
	Err    string `json:"err,omitempty"`
	Status int    `json:"status,omitempty"`
}

// PacketSize bounds one packet on the keeper's socket (a SOCK_SEQPACKET
// pair); a longer request (a large environment, many descriptors) is sent
// in several, each starting with a byte of packet flags. A Reply is one
// packet of JSON.
const PacketSize = 32 << 10

// packetFDs bounds the descriptors sent with one packet (the kernel takes
// at most 253).
const packetFDs = 200

// The flags byte that starts every request packet.
const (
	packetMore  = 1 << 0 // more packets of this request follow
	packetFirst = 1 << 1 // the first packet of a request
)

// DefaultUmask is the file mode creation mask of a child whose request
// gives none: no permission for others, no write for the group.
const DefaultUmask = 0o027

// WriteRequest sends req on the keeper's socket conn, with fds as the
// child's descriptors 1, 2, 3, …, in as many packets as it takes. Writes of
// two requests must not interleave: the caller serializes them.
func WriteRequest(conn int, req Request, fds []int) error {
	req.Files = len(fds)
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	for first := true; first || len(body) > 0 || len(fds) > 0; first = false {
		chunk := body[:min(len(body), PacketSize-1)]
		body = body[len(chunk):]
		rights := fds[:min(len(fds), packetFDs)]
		fds = fds[len(rights):]
		flags := byte(0)
		if first {
			flags |= packetFirst
		}
		if len(body) > 0 || len(fds) > 0 {
			flags |= packetMore
		}
		var oob []byte
		if len(rights) > 0 {
			oob = syscall.UnixRights(rights...)
		}
		if err := syscall.Sendmsg(conn, append([]byte{flags}, chunk...), oob, nil, 0); err != nil {
			return err
		}
	}
	return nil
}
