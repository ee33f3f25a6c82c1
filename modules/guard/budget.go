package guard

import (
	"sync/atomic"
	"time"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
)

// pagesHeldLimit bounds the memory of the error pages every guard of the
// process holds back at once to check them (pagesHeld). Pages larger than
// smallPage take at most three quarters of it: the last quarter stays for
// small ones (an API's JSON errors, a short 404), which a client stalling
// streams of large error pages could otherwise have replaced for everyone.
const (
	pagesHeldLimit = 32 << 20
	smallPage      = 16 << 10
)

// pagesHeld counts the memory of the error pages held back to be checked,
// across every guard of the process: sites, apps and connections. A page
// is held from the app's first byte until its client has taken it, and a
// client that reads nothing (an HTTP/2 stream that grants no window) keeps
// it for Caddy's write_idle timeout. The engine's budget for slow clients
// does not see these pages (the guard takes each at once), so without a
// bound of its own one client asking for a large error page on many
// stalled streams made Caddy hold them all. Past the limit a page is
// replaced, unread, by the plain page of its status, as one larger than
// scan_limit is.
var pagesHeld = heldPages{limit: pagesHeldLimit}

// heldPages is a count of held bytes against a limit.
type heldPages struct {
	limit int64
	n     atomic.Int64
}

// take counts n more bytes of memory for a page of size bytes that counts
// had already, or refuses them past the limit (past three quarters of it
// for a page over smallPage). A page held alone may pass it: a scan_limit
// larger than the limit still lets one such page through at a time.
func (b *heldPages) take(n, had, size int) bool {
	limit := b.limit
	if size > smallPage {
		limit = limit / 4 * 3
	}
	total := b.n.Add(int64(n))
	if total <= limit || total == int64(had+n) {
		return true
	}
	b.n.Add(-int64(n))
	return false
}

// give gives back n bytes.
func (b *heldPages) give(n int) { b.n.Add(-int64(n)) }

// pagesSpentWarnings rate-limits the warning about pages replaced because
// pagesHeld was spent: a client can cause it at will.
var pagesSpentWarnings = loglimit.Limit{Every: time.Second}
