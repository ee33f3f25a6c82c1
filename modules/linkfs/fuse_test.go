package linkfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/fusetest"
)

// TestFUSELinkClaimsRoot: where fusermount lets accounts mount FUSE file
// systems that others may enter (user_allow_other), the app's account
// mounts one in its served directory whose server says its one link,
// leading to Caddy's key, is root's. A link's owner on FUSE is whatever
// the server says: the link counts as anyone's, and the key is not read,
// however the path is reached.
func TestFUSELinkClaimsRoot(t *testing.T) {
	tr := makeTree(t)
	mnt := filepath.Join(tr.served, "fm")
	must(t, os.Mkdir(mnt, 0o755))
	must(t, os.Chown(mnt, appUID, appUID))
	fusetest.Mount(t, mnt, fusetest.Tree{RootOwner: appUID, RootMode: 0o755, LinkTarget: tr.secret, LinkOwner: 0})
	name := filepath.Join(mnt, "l")
	if st, err := os.Lstat(name); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("the FUSE link is not said to be root's (%v): the test tests nothing", err)
	}
	for _, mode := range resolveModes {
		t.Run(mode.name, func(t *testing.T) {
			resolving(t, mode.with)
			f, err := FS{}.Open(name)
			if err == nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Fatalf("read %q through a FUSE link said to be root's", b)
			}
			if !errors.Is(err, fs.ErrPermission) {
				t.Errorf("through a FUSE link said to be root's: %v, want permission denied", err)
			}
		})
	}
}
