package job

// The backup directory is Caddy's: a backup's run (sqlite_backup.py, as
// the database's account) makes the copy and hands it over a socket, and
// Caddy writes it there, names it and prunes the oldest. So the account
// whose data the copies protect (the app's, which a flaw in the app puts
// in an attacker's hands) can neither remove a copy nor plant one.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// openCopies opens the backup directory to, made (mode 0700) if missing.
// It must be a directory of Caddy's account that no other account can
// write, reached only through names root or Caddy's account owns, each
// directory on the way writable by no other account but for a sticky
// one above (safedir.TrustedFile, along the path as written and every
// link's), and not itself a link: no one else can then redirect a copy,
// or remove or plant one.
func openCopies(to string) (*os.File, error) {
	if err := copiesRefused(to, true); err != nil {
		return nil, err
	}
	dir, err := os.OpenFile(to, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open the backup directory %s as Caddy's account (%s; a symbolic link is not taken): %w; %s", to, safedir.Owner(uint32(os.Geteuid())), err, copiesFix(to))
	}
	if err := ownCopies(to, dir); err != nil {
		dir.Close()
		return nil, err
	}
	return dir, nil
}

// checkCopies says why openCopies would refuse to (nil: it would not),
// making nothing: a directory not made yet is judged by where it would
// be made.
func checkCopies(to string) error {
	if err := copiesRefused(to, false); err != nil {
		return err
	}
	dir, err := os.OpenFile(to, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot open the backup directory %s as Caddy's account (%s; a symbolic link is not taken): %w; %s", to, safedir.Owner(uint32(os.Geteuid())), err, copiesFix(to))
	}
	defer dir.Close()
	return ownCopies(to, dir)
}

// copiesFix is what to do about a backup directory refused.
func copiesFix(to string) string {
	uid := os.Geteuid()
	if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("Hearth writes the copies as Caddy's account (%s), so that the app they protect can neither remove nor replace them; "+
			"make the directory for that account (`sudo install -d -o %d -m 700 %s`; under systemd, the unit `caddy hearth systemd` writes lists it in ReadWritePaths, and a directory made after Caddy started is writable once the unit is restarted), "+
			"or give `to` a directory outside the app's (like /var/backups/<name>)", safedir.Owner(uint32(uid)), uid, shellQuote(to))
	}
	to = shellQuote(to)
	return fmt.Sprintf("Hearth writes the copies as Caddy's account (%s), so that the app they protect can neither remove nor replace them; "+
		"give the directory to that account (`sudo chown %d %s && sudo chmod 700 %s`; not -R: copies another account made stay its own, and a restore of one asks you to check it first), "+
		"or give `to` a directory outside the app's (like /var/backups/<name>)",
		safedir.Owner(uint32(uid)), uid, to, to)
}

// copiesRefused checks the names on the way to the backup directory to
// (safedir.TrustedFile), making what is missing of it when create.
func copiesRefused(to string, create bool) error {
	uid := os.Geteuid()
	fix := copiesFix(to)
	existing := to
	for {
		if _, err := os.Lstat(existing); !errors.Is(err, fs.ErrNotExist) || filepath.Dir(existing) == existing {
			break
		}
		existing = filepath.Dir(existing)
	}
	if existing == to {
		// a name above to that another account controls: no chown of to
		// helps, it must be elsewhere
		if err := safedir.TrustedFile(filepath.Dir(to)); err != nil {
			return fmt.Errorf("the backup directory %s: %w; the copies must be where only root or Caddy's account (%s) can change anything on the way: "+
				"give `to` a directory outside every app's (like /var/backups/<name>)", to, err, safedir.Owner(uint32(uid)))
		}
	}
	if err := safedir.TrustedFile(existing); err != nil {
		if existing != to {
			// to would be made under a name another account controls:
			// made there by anyone, it is refused; no command fixes that
			return fmt.Errorf("the backup directory %s would be made in %s: %w; the copies must be where only root or Caddy's account (%s) can change anything on the way: "+
				"give `to` a directory outside every app's (like /var/backups/<name>)", to, existing, err, safedir.Owner(uint32(uid)))
		}
		return fmt.Errorf("the backup directory %s: %w; %s", to, err, fix)
	}
	if existing != to && !create {
		// it will be made in existing: by an account that may write there
		if err := writable(existing); err != nil {
			return fmt.Errorf("Caddy's account (%s) cannot make the backup directory %s in %s: %w; %s", safedir.Owner(uint32(uid)), to, existing, err, fix)
		}
		return nil
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return fmt.Errorf("cannot make the backup directory %s as Caddy's account (%s): %w; %s", to, safedir.Owner(uint32(uid)), err, fix)
	}
	if err := safedir.TrustedFile(to); err != nil {
		return fmt.Errorf("the backup directory %s: %w; %s", to, err, fix)
	}
	// refused now rather than once a copy has come (a file system
	// mounted read-only, as systemd's ProtectSystem leaves what the unit
	// does not list in ReadWritePaths)
	if err := writable(to); err != nil {
		return fmt.Errorf("Caddy's account (%s) cannot write the backup directory %s: %w", safedir.Owner(uint32(uid)), to, err)
	}
	return nil
}

// writable says why Caddy's account cannot create files in the
// directory dir (nil: it can).
func writable(dir string) error {
	var fsys unix.Statfs_t
	if err := unix.Statfs(dir, &fsys); err == nil && fsys.Flags&unix.ST_RDONLY != 0 {
		return errors.New("a read-only file system (under systemd, a directory the unit does not list in ReadWritePaths, or one made after the unit started: " +
			"run `caddy hearth systemd` again, install the unit it writes, and restart it)")
	}
	if err := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return err
	}
	return nil
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ownCopies checks that dir, opened as to, is Caddy's account's and
// writable by no other.
func ownCopies(to string, dir *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return err
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("the backup directory %s belongs to %s with mode %04o; %s", to, safedir.Owner(uint32(int(st.Uid))), st.Mode&0o7777, copiesFix(to))
	}
	return nil
}

// copyLayout is the time in a copy's name, to the second (the
// milliseconds and a Z follow).
const copyLayout = "20060102T150405"

// copyStamp is the time in a copy's name: UTC, to the millisecond.
func copyStamp(t time.Time) string {
	t = t.UTC()
	return t.Format(copyLayout) + fmt.Sprintf("%03dZ", t.Nanosecond()/int(time.Millisecond))
}

// CopyTime is when the copy of backup name called base says it was made
// (`<name>-<UTC time>.sqlite3`, or a copy set aside before a restore); ok
// is false for another name.
func CopyTime(name, base string) (made time.Time, ok bool) {
	stamp, found := strings.CutPrefix(base, name+"-")
	if !found || !strings.HasSuffix(stamp, ".sqlite3") {
		return time.Time{}, false
	}
	stamp = strings.TrimPrefix(strings.TrimSuffix(stamp, ".sqlite3"), "before-restore-")
	if len(stamp) < len(copyLayout) {
		return time.Time{}, false
	}
	made, err := time.Parse(copyLayout, stamp[:len(copyLayout)])
	return made, err == nil
}

// keepCopy reads one copy from r (8 bytes of length, big-endian, then the
// file) into a new file of dir, named by name at the moment the copy
// begins to come, through a hidden partial name: the file is synced and
// must be a whole SQLite database before it takes its name. It returns
// the name and the copy's size; io.EOF (itself) when r ended before a copy
// began. A copy that would leave its file system with less than a
// hundredth free (the app's account announces the size) is refused
// before any of it is written.
func keepCopy(dir *os.File, name func(time.Time) string, r io.Reader) (string, int64, error) {
	var head [8]byte
	if n, err := io.ReadFull(r, head[:]); err != nil {
		if n == 0 {
			return "", 0, io.EOF
		}
		return "", 0, fmt.Errorf("the copy's length was cut off: %w", err)
	}
	size := binary.BigEndian.Uint64(head[:])
	var fsys unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &fsys); err == nil && fsys.Blocks > 0 {
		// the blocks any account may use: root's reserve is left alone
		unit := uint64(fsys.Frsize)
		if unit == 0 {
			unit = uint64(fsys.Bsize)
		}
		free, margin := fsys.Bavail*unit, fsys.Blocks*unit/100
		if size > free || free-size < margin {
			return "", 0, fmt.Errorf("the copy is %d bytes, and the backup directory's file system has %d bytes free: it would leave less than a hundredth of the disk; "+
				"remove old copies by hand (`ls -lt` the directory: copies set aside before a restore are never pruned, and `keep` prunes only after a copy is made), or give `to` another disk", size, free)
		}
	}
	copyName := name(time.Now())
	n, err := receiveCopy(dir, copyName, int64(size), r)
	return copyName, n, err
}

// receiveCopy writes size bytes of r into dir as name (see keepCopy).
func receiveCopy(dir *os.File, name string, size int64, r io.Reader) (int64, error) {
	partial := "." + name + ".partial"
	fd, err := unix.Openat(int(dir.Fd()), partial, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("cannot create %s in the backup directory: %w", partial, err)
	}
	f := os.NewFile(uintptr(fd), partial)
	kept := false
	defer func() {
		f.Close()
		if !kept {
			_ = unix.Unlinkat(int(dir.Fd()), partial, 0)
		}
	}()
	n, err := io.CopyN(f, r, size)
	if err != nil {
		return 0, fmt.Errorf("the copy was cut off after %d of %d bytes: %w", n, size, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("cannot write the copy to disk: %w", err)
	}
	if err := wholeSQLite(f, n); err != nil {
		return 0, err
	}
	if err := renameNew(dir, partial, name); err != nil {
		return 0, fmt.Errorf("cannot name the copy %s: %w", name, err)
	}
	kept = true
	_ = dir.Sync()
	return n, nil
}

// renameNew renames from to to in dir, never over a file named to: with
// RENAME_NOREPLACE, or where the file system has none (NFS, CIFS, many
// FUSE ones), a hard link then the old name's removal, or where it has
// neither, a rename once to is seen free (the directory is Caddy's alone).
func renameNew(dir *os.File, from, to string) error {
	fd := int(dir.Fd())
	err := unix.Renameat2(fd, from, fd, to, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	switch err := unix.Linkat(fd, from, fd, to, 0); {
	case err == nil:
		_ = unix.Unlinkat(fd, from, 0) // (a partial name left is removed by the next run)
		return nil
	case errors.Is(err, unix.EEXIST):
		return err
	}
	var st unix.Stat_t
	if unix.Fstatat(fd, to, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return unix.EEXIST
	}
	return unix.Renameat(fd, from, fd, to)
}

// wholeSQLite checks that the size bytes of f are a whole SQLite
// database by its header: the magic string, a valid page size that the
// size is a multiple of, and the page count the header gives (when valid).
// It is what a copy's transfer could have got wrong; the run checked the
// copy with PRAGMA integrity_check before.
func wholeSQLite(f *os.File, size int64) error {
	var h [100]byte
	if size < int64(len(h)) {
		return fmt.Errorf("the copy is %d bytes, too short for a SQLite database", size)
	}
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("cannot read the copy back: %w", err)
	}
	if string(h[:16]) != "SQLite format 3\x00" {
		return errors.New("the copy is not a SQLite database (its header says otherwise)")
	}
	page := int64(binary.BigEndian.Uint16(h[16:18]))
	if page == 1 {
		page = 65536
	}
	if page < 512 || page&(page-1) != 0 || size%page != 0 {
		return fmt.Errorf("the copy's %d bytes are not whole pages of %d bytes", size, page)
	}
	// the page count is valid when the change counter matches the
	// version-valid-for number (every SQLite since 3.7.0 writes both)
	if pages := int64(binary.BigEndian.Uint32(h[28:32])); pages != 0 && string(h[24:28]) == string(h[92:96]) && pages*page != size {
		return fmt.Errorf("the copy is %d bytes where its header says %d pages of %d", size, pages, page)
	}
	return nil
}

// copyNames match a backup's copies and the partial files a run that
// was cut off left.
func copyNames(name string) (copies, partials *regexp.Regexp) {
	q := regexp.QuoteMeta(name)
	return regexp.MustCompile(`^` + q + `-\d{8}T\d{9}Z\.sqlite3$`),
		regexp.MustCompile(`^\.` + q + `-(before-restore-)?\d{8}T\d{9}Z\.sqlite3\.partial(-journal|-wal|-shm)?$`) // (an older Hearth's SQLite wrote the last ones)
}

// removePartials removes what a run cut off (its timeout, Caddy's exit)
// left in dir: regular files under a partial name only a run of this
// backup makes.
func removePartials(dir *os.File, name string) {
	_, partials := copyNames(name)
	entries, _ := readNames(dir)
	for _, e := range entries {
		if partials.MatchString(e) && isRegular(dir, e) {
			_ = unix.Unlinkat(int(dir.Fd()), e, 0)
		}
	}
}

// prune removes the oldest copies beyond keep (by the time in their
// names), never final, the copy just made, and only regular files;
// copies named later than final (made while the clock was ahead) are
// kept and not counted, and said. It returns what it removed and the
// problems met, a line each.
func prune(dir *os.File, name, final string, keep int) (removed, problems []string) {
	copies, _ := copyNames(name)
	entries, err := readNames(dir)
	if err != nil {
		return nil, []string{"cannot list the backup directory to remove the oldest copies: " + err.Error()}
	}
	var dated, future []string
	for _, e := range entries {
		if e == final || !copies.MatchString(e) || !isRegular(dir, e) {
			continue
		}
		if e > final {
			future = append(future, e)
		} else {
			dated = append(dated, e)
		}
	}
	if len(future) > 0 {
		slices.Sort(future)
		shown := future[:min(3, len(future))]
		if len(future) > 3 {
			shown = append(shown, "…")
		}
		problems = append(problems, "copies named with a time later than now, kept and not counted in keep (the clock was ahead "+
			"when they were made; remove them if they are stale): "+strings.Join(shown, ", "))
	}
	slices.Sort(dated)
	for _, old := range dated[:max(len(dated)-(keep-1), 0)] {
		if err := unix.Unlinkat(int(dir.Fd()), old, 0); err != nil {
			problems = append(problems, fmt.Sprintf("cannot remove the old copy %s: %v (the new copy was made)", old, err))
			continue
		}
		removed = append(removed, old)
	}
	return removed, problems
}

// readNames lists dir (from its start, whatever was read before).
func readNames(dir *os.File) ([]string, error) {
	fd, err := unix.Dup(int(dir.Fd()))
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), dir.Name())
	defer d.Close()
	if _, err := d.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return d.Readdirnames(-1)
}

// isRegular says whether name in dir is a regular file (not a link).
func isRegular(dir *os.File, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}

// openCopy opens file, a copy in the backup directory to, for a restore:
// a regular file there (not a link), read by Caddy, whose account the
// directory is.
func openCopy(to, file string) (*os.File, error) {
	if filepath.Dir(file) != filepath.Clean(to) {
		return nil, fmt.Errorf("a restore takes a copy in %s; %s is not there", to, file)
	}
	dir, err := openCopies(to)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	base := filepath.Base(file)
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("the copy %s is a symbolic link; a restore takes a file of the backup directory", file)
		}
		return nil, fmt.Errorf("cannot open the copy %s: %w", file, err)
	}
	f := os.NewFile(uintptr(fd), file)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("the copy %s is not a regular file", file)
	}
	// what Caddy made is Caddy's, 0600, of one name: a copy of another
	// account's (an older Hearth's copies were the app's account's), or
	// that another could write or reach by another name, could change
	// until the restore reads it
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 || st.Nlink != 1 {
		f.Close()
		return nil, fmt.Errorf("the copy %s belongs to %s with mode %04o and %d names: a restore takes a copy of Caddy's account (%s), writable by no other, "+
			"with no other name (a hard link), as the copies Hearth makes are; if you checked what it holds: `sudo chown %d %s && sudo chmod 600 %s`, "+
			"or for a hard link, copy it under a new name as Caddy's account (`sudo -u <that account> cp`)", file, safedir.Owner(uint32(int(st.Uid))), st.Mode&0o7777, st.Nlink, safedir.Owner(uint32(os.Geteuid())),
			os.Geteuid(), shellQuote(file), shellQuote(file))
	}
	return f, nil
}

// intake receives the copy a backup's run hands over (a restore's: the
// database before it) on the run's fd 3, and keeps it.
type intake struct {
	target  *BackupTarget
	name    string // the backup's
	restore bool
	dir     *os.File
	ours    net.Conn
	theirs  *os.File // the run's end, fd 3
	done    chan struct{}
	// set once done is closed
	file string // the copy kept ("": none)
	size int64
	err  error
}

// openIntake opens the backup directory and the socket for one run of
// the backup name; the run's end is theirs.
func openIntake(target *BackupTarget, name string, restore bool, logger *zap.Logger) (*intake, error) {
	dir, err := openCopies(target.To)
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		dir.Close()
		return nil, err
	}
	ours := os.NewFile(uintptr(fds[0]), "backup intake")
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		unix.Close(fds[1])
		dir.Close()
		return nil, err
	}
	removePartials(dir, name)
	in := &intake{target: target, name: name, restore: restore, dir: dir, ours: conn,
		theirs: os.NewFile(uintptr(fds[1]), "backup intake (the run's end)"), done: make(chan struct{})}
	panics.Go(logger, "keeping a backup's copy", in.serve)
	return in, nil
}

// serve keeps the one copy the run hands over, then tells it so ("k").
func (in *intake) serve() {
	defer close(in.done)
	kept := false
	defer func() {
		if !kept && in.err == nil { // a panic (panics.Go logs it)
			in.err = errors.New("keeping the copy failed unexpectedly (Caddy's log says why)")
			in.ours.Close()
		}
	}()
	kind := ""
	if in.restore {
		kind = "before-restore-"
	}
	var name string
	name, in.size, in.err = keepCopy(in.dir, func(t time.Time) string { return in.name + "-" + kind + copyStamp(t) + ".sqlite3" }, in.ours)
	if in.err != nil {
		// the run, sending the rest or waiting for "k", gets an error at
		// once instead of waiting for its timeout
		in.ours.Close()
		return
	}
	in.file = filepath.Join(in.target.To, name)
	kept = true
	_, _ = in.ours.Write([]byte("k")) // (a run that did not wait says so in its output)
}

// close lets go of what the intake holds (finish does it too); serve
// then ends.
func (in *intake) close() {
	in.theirs.Close()
	in.ours.Close()
	<-in.done // (at once: its reads and writes fail now) before its directory's fd goes
	in.dir.Close()
}

// finish ends the intake once the run has ended and returns the lines
// to add to the run's output: the copy kept (a backup's last line is
// what lastBackup reads), and why none was when the run succeeded
// (err: the run then failed).
func (in *intake) finish(ranOK bool) (lines string, err error) {
	in.theirs.Close()
	// the run has ended: what it sent is read, and a descendant that kept
	// the socket open does not hold the intake
	_ = in.ours.SetReadDeadline(time.Now().Add(time.Second))
	<-in.done
	in.ours.Close()
	defer in.dir.Close()
	if in.restore {
		switch {
		case in.file != "":
			line, _ := json.Marshal(map[string]any{"kept_aside": in.file})
			return string(line) + "\n", nil
		case in.err != nil && in.err != io.EOF:
			return fmt.Sprintf("Caddy could not keep the database before the restore: %v\n", in.err), nil
		}
		return "", nil // (there was no database to keep, or the run failed before)
	}
	switch {
	case in.err == io.EOF && !ranOK: // the run said why
		return "", nil
	case in.err == io.EOF:
		return "the run ended without handing a copy to Caddy\n", errors.New("the run handed over no copy")
	case in.err != nil:
		return "Caddy could not keep the copy: " + in.err.Error() + "\n", in.err
	}
	var b strings.Builder
	removed, problems := prune(in.dir, in.name, filepath.Base(in.file), in.target.Keep)
	for _, p := range problems {
		b.WriteString(p + "\n")
	}
	// the last line, whole within the output tail kept
	line, _ := json.Marshal(map[string]any{"file": in.file, "size": in.size, "removed": removed[:min(10, len(removed))], "removed_count": len(removed)})
	b.Write(line)
	b.WriteByte('\n')
	for _, p := range problems {
		if strings.HasPrefix(p, "cannot remove") {
			return b.String(), errors.New(p)
		}
	}
	return b.String(), nil
}
