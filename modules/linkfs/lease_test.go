package linkfs

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/leasetest"
)

// TestLeasedFile: the app's account holds a write lease on a file of its
// own (F_SETLEASE, which the kernel gives a file's owner) in the served
// directory. Every open of it by another process then waits up to
// lease-break-time (45 s) for the lease to go, holding a thread of Caddy's
// per request, unless the open does not block: Open answers at once,
// however the path is reached.
func TestLeasedFile(t *testing.T) {
	tr := makeTree(t)
	name := filepath.Join(tr.served, "leased.css")
	must(t, os.WriteFile(name, []byte("p{}"), 0o644))
	must(t, os.Chown(name, appUID, appUID))
	leasetest.Hold(t, name, appUID)
	for _, mode := range resolveModes {
		t.Run(mode.name, func(t *testing.T) {
			resolving(t, mode.with)
			leasetest.Refused(t, func() (io.Closer, error) { return FS{}.Open(name) })
		})
	}
}
