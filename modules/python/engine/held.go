package engine

import (
	"math"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hearth-dev/hearth/modules/internal/memory"
)

// heldBudget bounds what Caddy holds, across all its pools, of request
// bodies it is receiving or keeps until their requests end (a body is read
// whole before a worker is taken), and of answers waiting for their
// clients. Each had a bound of its own (max_body; a spool's streamMemLimit
// and its disk share, answerSpill; a one-frame answer's copy) but not
// their sum: clients uploading slowly, or reading nothing, on many
// connections or on an HTTP/2 connection's many streams, held as much as
// they pleased. Past
// the budget a body is refused (503); an answer goes at its client's pace,
// its worker waiting for the client (see spool).
type heldBudget struct {
	mem, disk atomic.Int64
	memLimit  int64
	// bodies counts, per client (clientOf), the request bodies held for
	// it and their bytes, in memory and on disk together: one client
	// uploading slowly on many connections or streams took the whole
	// budget, and every other client's upload was refused for as long as
	// it kept them open (clientShare)
	bodiesMu sync.Mutex
	bodies   map[netip.Prefix]clientBodies
	// diskLimit is the disk part; 0: diskBudget's, worked out at its
	// first use (once Caddy has set Go's memory limit from its container)
	diskLimit int64
	diskOnce  sync.Once
}

// held is the process's budget: 64 MiB of memory, and temporary files
// (diskBudget) in the system's temporary directory.
var held = &heldBudget{memLimit: 64 << 20}

// diskPart is the budget's disk part.
func (b *heldBudget) diskPart() int64 {
	b.diskOnce.Do(func() {
		if b.diskLimit == 0 {
			b.diskLimit = diskBudget(os.TempDir())
		}
	})
	return b.diskLimit
}

// tmpfsMagic is a tmpfs's f_type (statfs(2)).
const tmpfsMagic = 0x01021994

// diskBudget is the disk part of the held budget for temporary files in
// dir: 1 GiB, or less where dir is a tmpfs (tmpfsBudget). Debian 13 mounts
// /tmp as one by default, and there the files are memory: slow clients
// made Caddy hold a gigabyte of a 2 GiB board's memory, and fill the /tmp
// every other program writes to.
func diskBudget(dir string) int64 {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil || fs.Type != tmpfsMagic {
		return 1 << 30
	}
	return tmpfsBudget(int64(min(uint64(fs.Blocks)*uint64(fs.Bsize), math.MaxInt64)), memory.Total())
}

// tmpfsBudget is the disk part of the held budget on a tmpfs of size
// bytes, on a machine of memory bytes (0: not known): 1 GiB at most, an
// eighth of the memory at most, a quarter of the tmpfs at most (others
// write there too), but 64 MiB at least (the spool's files then fail
// with the tmpfs full: the answer is cut off, a body refused).
func tmpfsBudget(size, memory int64) int64 {
	limit := int64(1 << 30)
	if memory > 0 {
		limit = min(limit, memory/8)
	}
	if size > 0 {
		limit = min(limit, size/4)
	}
	return max(limit, 64<<20)
}

// take counts n more bytes on c unless that passes limit; force counts
// them anyway (bytes that move from memory to disk).
func take(c *atomic.Int64, limit int64, n int, force bool) bool {
	if c.Add(int64(n)) > limit && !force {
		c.Add(-int64(n))
		return false
	}
	return true
}

func (b *heldBudget) takeMem(n int) bool              { return take(&b.mem, b.memLimit, n, false) }
func (b *heldBudget) takeDisk(n int, force bool) bool { return take(&b.disk, b.diskPart(), n, force) }
func (b *heldBudget) giveMem(n int)                   { b.mem.Add(-int64(n)) }
func (b *heldBudget) giveDisk(n int64)                { b.disk.Add(-n) }

// takeAnswerDisk counts n more bytes of answers on disk unless that passes
// three quarters of the disk part: the rest stays for request bodies,
// which are refused where answers are only slowed.
func (b *heldBudget) takeAnswerDisk(n int) bool {
	disk := b.diskPart()
	return take(&b.disk, disk-disk/4, n, false)
}

// answerSpill is what one answer may keep on disk (nginx's
// proxy_max_temp_file_size is the same idea): a sixteenth of the disk
// part, so that one download to a client that reads nothing does not spend
// it all; beyond it Caddy reads the worker only as fast as the client
// reads.
func (b *heldBudget) answerSpill() int64 { return b.diskPart() / 16 }

// fits says n more bytes fit in what the budget has left, memory and disk
// together, at this moment (a hint: the bytes are taken as they come).
func (b *heldBudget) fits(n int64) bool {
	return b.memLimit-b.mem.Load()+b.diskPart()-b.disk.Load() >= n
}

// clientBodies is what one client has held of request bodies.
type clientBodies struct {
	count int   // bodies being received or waiting for their requests
	bytes int64 // what they hold
}

// clientShare is how much of request bodies one client may have held at
// once: a quarter of the budget (memory and disk parts together). Its one
// body may take more (an upload of up to the app's max_body), but not a
// second one beside it.
func (b *heldBudget) clientShare() int64 {
	return (b.memLimit + b.diskPart()) / 4
}

// addBody counts a body of client's beginning, and reports whether it may
// take declared bytes (-1: unknown): within its share, or as its only body.
// A client without an address (a Unix socket's peers: clientOf) has no
// share of its own: those cannot be told apart. What addBody counts,
// dropBody gives back.
func (b *heldBudget) addBody(client netip.Prefix, declared int64) bool {
	if !client.IsValid() {
		return true
	}
	b.bodiesMu.Lock()
	defer b.bodiesMu.Unlock()
	c := b.bodies[client]
	if c.count > 0 && c.bytes+max(declared, 0) > b.clientShare() {
		return false
	}
	b.putLocked(client, c.count+1, c.bytes)
	return true
}

// dropBody ends what addBody counted.
func (b *heldBudget) dropBody(client netip.Prefix) {
	if !client.IsValid() {
		return
	}
	b.bodiesMu.Lock()
	defer b.bodiesMu.Unlock()
	b.putLocked(client, b.bodies[client].count-1, b.bodies[client].bytes)
}

// takeClient counts n more bytes of a body of client's unless that passes
// its share while it has another body held.
func (b *heldBudget) takeClient(client netip.Prefix, n int64) bool {
	if !client.IsValid() {
		return true
	}
	b.bodiesMu.Lock()
	defer b.bodiesMu.Unlock()
	c := b.bodies[client]
	if c.count > 1 && c.bytes+n > b.clientShare() {
		return false
	}
	b.putLocked(client, c.count, c.bytes+n)
	return true
}

// giveClient gives back n bytes takeClient counted for client.
func (b *heldBudget) giveClient(client netip.Prefix, n int64) {
	if !client.IsValid() || n == 0 {
		return
	}
	b.bodiesMu.Lock()
	defer b.bodiesMu.Unlock()
	b.putLocked(client, b.bodies[client].count, b.bodies[client].bytes-n)
}

// putLocked records client's bodies, or forgets the client with none.
func (b *heldBudget) putLocked(client netip.Prefix, count int, bytes int64) {
	if count <= 0 && bytes <= 0 {
		delete(b.bodies, client)
		return
	}
	if b.bodies == nil {
		b.bodies = map[netip.Prefix]clientBodies{}
	}
	b.bodies[client] = clientBodies{count: count, bytes: bytes}
}
