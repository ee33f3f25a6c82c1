// Package fusetest mounts, for tests, a FUSE file system served by the
// test process itself, whose server says what it likes of its files'
// owners: what an account can do where fusermount lets it mount one that
// others may enter (user_allow_other in /etc/fuse.conf). Tests use it to
// show that Hearth does not take such an owner's word.
package fusetest

import (
	"encoding/binary"
	"errors"
	"strconv"
	"syscall"
	"testing"
)

// Tree is what the file system shows: its root directory, owned by
// RootOwner with RootMode's permission bits, and in it one entry, "l", a
// symbolic link to LinkTarget that it says LinkOwner owns.
type Tree struct {
	RootOwner  uint32
	RootMode   uint32
	LinkTarget string
	LinkOwner  uint32
}

// MountedBy is the account Mount mounts for (fusermount's user_id): an
// app's account.
const MountedBy = 65534

// Mount mounts tree at mnt (an existing directory), for the account
// MountedBy, until the test ends. It skips the test where FUSE cannot be
// mounted (no /dev/fuse, not root).
func Mount(t testing.TB, mnt string, tree Tree) { t.Helper(); MountFor(t, mnt, tree, MountedBy) }

// MountFor is Mount for the account uid (0: as root mounts one).
func MountFor(t testing.TB, mnt string, tree Tree, uid int) {
	t.Helper()
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	opts := "fd=" + strconv.Itoa(fd) + ",rootmode=40000,user_id=" + strconv.Itoa(uid) + ",group_id=" + strconv.Itoa(uid) + ",allow_other"
	if err := syscall.Mount("fusetest", mnt, "fuse.fusetest", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		syscall.Close(fd)
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(fd, tree)
	}()
	t.Cleanup(func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		<-done // the read fails once unmounted
		syscall.Close(fd)
	})
}

// FUSE's operations and node ids that serve answers.
const (
	opLookup, opForget, opGetattr, opReadlink, opStatfs, opInit, opInterrupt, opBatchForget = 1, 2, 3, 5, 17, 26, 36, 42
	rootNode, linkNode                                                                      = 1, 2
)

var le = binary.LittleEndian

// serve answers the kernel's requests on fd (the FUSE protocol, 7.31)
// until the file system is unmounted.
func serve(fd int, tree Tree) {
	attr := func(b []byte, ino uint64, mode, uid uint32, size uint64) { // struct fuse_attr
		le.PutUint64(b[0:], ino)
		le.PutUint64(b[8:], size)
		le.PutUint32(b[60:], mode)
		le.PutUint32(b[64:], 1) // nlink
		le.PutUint32(b[68:], uid)
		le.PutUint32(b[72:], uid)
		le.PutUint32(b[80:], 4096) // blksize
	}
	rootAttr := func(b []byte) { attr(b, rootNode, syscall.S_IFDIR|tree.RootMode, tree.RootOwner, 0) }
	linkAttr := func(b []byte) {
		attr(b, linkNode, syscall.S_IFLNK|0o777, tree.LinkOwner, uint64(len(tree.LinkTarget)))
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ENOENT) {
			continue // a request interrupted before it was read
		} else if err != nil || n < 40 {
			return // unmounted
		}
		in := buf[:n] // struct fuse_in_header (40 bytes), then the request
		op, unique, node, body := le.Uint32(in[4:]), le.Uint64(in[8:]), le.Uint64(in[16:]), in[40:]
		var reply []byte
		errno := syscall.Errno(0)
		switch op {
		case opInit: // fuse_init_out
			reply = make([]byte, 64)
			le.PutUint32(reply[0:], 7)
			le.PutUint32(reply[4:], 31)
			le.PutUint32(reply[8:], le.Uint32(body[8:])) // max_readahead as asked
			le.PutUint32(reply[20:], 4096)               // max_write
		case opLookup: // fuse_entry_out
			if node != rootNode || string(body) != "l\x00" {
				errno = syscall.ENOENT
				break
			}
			reply = make([]byte, 40+88)
			le.PutUint64(reply[0:], linkNode)
			linkAttr(reply[40:])
		case opGetattr: // fuse_attr_out
			reply = make([]byte, 16+88)
			if node == rootNode {
				rootAttr(reply[16:])
			} else {
				linkAttr(reply[16:])
			}
		case opReadlink:
			reply = []byte(tree.LinkTarget)
		case opStatfs: // fuse_kstatfs
			reply = make([]byte, 80)
		case opForget, opInterrupt, opBatchForget: // not answered
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
