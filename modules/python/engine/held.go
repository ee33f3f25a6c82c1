package engine

import "sync/atomic"

// heldBudget bounds what Caddy holds, across all its pools, of responses
// whose clients read slower than their apps answered: whole answers copied
// so that their worker could go on to the next request, and the spools of
// streamed answers (in memory, then in temporary files). Each response had
// a bound of its own (1 MiB in memory, 1 GiB on disk), but not their sum:
// an HTTP/2 client opening 250 streams on a connection and reading none of
// them made Caddy hold 250 copies of a page, per connection. Past the
// budget an answer goes to its client while its worker waits (as
// reverse_proxy's answers do), and a spool waits for its own client.
type heldBudget struct {
	mem, disk           atomic.Int64
	memLimit, diskLimit int64
}

// held is the process's budget. Memory: 64 MiB of answers; disk (the
// temporary directory, often a tmpfs, so memory too): 1 GiB.
var held = &heldBudget{memLimit: 64 << 20, diskLimit: 1 << 30}

// take counts n more bytes on c unless that passes limit; force counts
// them anyway (a spool with nothing unread always gets its next chunk, so
// that its client is never left waiting on a budget others hold).
func take(c *atomic.Int64, limit int64, n int, force bool) bool {
	if c.Add(int64(n)) > limit && !force {
		c.Add(-int64(n))
		return false
	}
	return true
}

func (b *heldBudget) takeMem(n int, force bool) bool  { return take(&b.mem, b.memLimit, n, force) }
func (b *heldBudget) takeDisk(n int, force bool) bool { return take(&b.disk, b.diskLimit, n, force) }
func (b *heldBudget) giveMem(n int)                   { b.mem.Add(-int64(n)) }
func (b *heldBudget) giveDisk(n int64)                { b.disk.Add(-n) }
