package engine

import "sync/atomic"

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
	mem, disk           atomic.Int64
	memLimit, diskLimit int64
}

// held is the process's budget. Memory: 64 MiB; disk (the temporary
// directory, often a tmpfs, so memory too): 1 GiB.
var held = &heldBudget{memLimit: 64 << 20, diskLimit: 1 << 30}

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
func (b *heldBudget) takeDisk(n int, force bool) bool { return take(&b.disk, b.diskLimit, n, force) }
func (b *heldBudget) giveMem(n int)                   { b.mem.Add(-int64(n)) }
func (b *heldBudget) giveDisk(n int64)                { b.disk.Add(-n) }

// takeAnswerDisk counts n more bytes of answers on disk unless that passes
// three quarters of the disk part: the rest stays for request bodies,
// which are refused where answers are only slowed.
func (b *heldBudget) takeAnswerDisk(n int) bool {
	return take(&b.disk, b.diskLimit-b.diskLimit/4, n, false)
}

// answerSpill is what one answer may keep on disk (nginx's
// proxy_max_temp_file_size is the same idea): a sixteenth of the disk
// part, so that one download to a client that reads nothing does not spend
// it all; beyond it Caddy reads the worker only as fast as the client
// reads.
func (b *heldBudget) answerSpill() int64 { return b.diskLimit / 16 }

// fits says n more bytes fit in what the budget has left, memory and disk
// together, at this moment (a hint: the bytes are taken as they come).
func (b *heldBudget) fits(n int64) bool {
	return b.memLimit-b.mem.Load()+b.diskLimit-b.disk.Load() >= n
}
