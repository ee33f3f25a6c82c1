package linkfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestFUSELinkClaimsRoot: where fusermount lets accounts mount FUSE file
// systems that others may enter (user_allow_other), the app's account
// mounts one in its served directory whose server says its one link,
// leading to Caddy's key, is root's. A link's owner on FUSE is whatever
// the server says: the link counts as anyone's, and the key is not read,
// however the path is reached.
func TestFUSELinkClaimsRoot(t *testing.T) {
	if spec := os.Getenv("LINKFS_FUSE_SERVE"); spec != "" {
		serveFUSE(spec, os.Getenv("LINKFS_FUSE_TARGET"))
		return
	}
	tr := makeTree(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	mnt := filepath.Join(tr.served, "fm")
	must(t, os.Mkdir(mnt, 0o755))
	must(t, os.Chown(mnt, appUID, appUID))
	server := exec.Command(os.Args[0], "-test.run=^TestFUSELinkClaimsRoot$")
	server.Env = append(os.Environ(), "LINKFS_FUSE_SERVE="+mnt, "LINKFS_FUSE_TARGET="+tr.secret)
	out, err := server.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	server.Stderr = &stderr
	must(t, server.Start())
	t.Cleanup(func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		server.Process.Kill()
		server.Wait()
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "serving\n" {
		t.Skipf("no FUSE mount here: %q %s", line, stderr.String())
	}
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

// serveFUSE is the FUSE server of the test, as the app's account would
// run one through fusermount3 (user_allow_other), at mnt. Its root
// directory holds one entry, "l", a link to target that it says root owns. It mounts as
// root (as fusermount does for the account), then serves as the account.
func serveFUSE(mnt, target string) {
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR, 0)
	if err != nil {
		fmt.Println("no /dev/fuse:", err)
		return
	}
	opts := "fd=" + strconv.Itoa(fd) + ",rootmode=40000,user_id=65534,group_id=65534,allow_other"
	if err := syscall.Mount("linkfs-test", mnt, "fuse.linkfs-test", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		fmt.Println("mount:", err)
		return
	}
	if syscall.Setgid(appUID) != nil || syscall.Setuid(appUID) != nil {
		fmt.Println("cannot become the app's account")
		return
	}
	fmt.Println("serving")
	le := binary.LittleEndian
	attr := func(b []byte, ino uint64, mode, uid uint32, size uint64) { // struct fuse_attr
		le.PutUint64(b[0:], ino)
		le.PutUint64(b[8:], size)
		le.PutUint32(b[60:], mode)
		le.PutUint32(b[64:], 1) // nlink
		le.PutUint32(b[68:], uid)
		le.PutUint32(b[72:], uid)
		le.PutUint32(b[80:], 4096) // blksize
	}
	const root, link = 1, 2 // node ids
	buf := make([]byte, 1<<20)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ENOENT) {
			continue
		} else if err != nil {
			return // unmounted
		}
		in := buf[:n] // struct fuse_in_header (40 bytes), then the request
		op, unique, node, body := le.Uint32(in[4:]), le.Uint64(in[8:]), le.Uint64(in[16:]), in[40:]
		var reply []byte
		errno := syscall.Errno(0)
		switch op {
		case 26: // FUSE_INIT: fuse_init_out, protocol 7.31
			reply = make([]byte, 64)
			le.PutUint32(reply[0:], 7)
			le.PutUint32(reply[4:], 31)
			le.PutUint32(reply[8:], le.Uint32(body[8:])) // max_readahead as asked
			le.PutUint32(reply[20:], 4096)               // max_write
		case 1: // FUSE_LOOKUP: fuse_entry_out
			if node != root || string(body) != "l\x00" {
				errno = syscall.ENOENT
				break
			}
			reply = make([]byte, 40+88)
			le.PutUint64(reply[0:], link)
			attr(reply[40:], link, syscall.S_IFLNK|0o777, 0, uint64(len(target)))
		case 3: // FUSE_GETATTR: fuse_attr_out
			reply = make([]byte, 16+88)
			if node == root {
				attr(reply[16:], root, syscall.S_IFDIR|0o755, appUID, 0)
			} else {
				attr(reply[16:], link, syscall.S_IFLNK|0o777, 0, uint64(len(target)))
			}
		case 5: // FUSE_READLINK
			reply = []byte(target)
		case 17: // FUSE_STATFS: fuse_kstatfs
			reply = make([]byte, 80)
		case 2, 36, 42: // FORGET, INTERRUPT, BATCH_FORGET: not answered
			continue
		default:
			errno = syscall.ENOSYS
		}
		if errno != 0 {
			reply = nil
		}
		head := make([]byte, 16) // struct fuse_out_header
		le.PutUint32(head[0:], uint32(16+len(reply)))
		le.PutUint32(head[4:], uint32(-int32(errno)))
		le.PutUint64(head[8:], unique)
		syscall.Write(fd, append(head, reply...))
	}
}
