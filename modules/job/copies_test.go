package job

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// sqliteFile is a database file SQLite wrote (one table, one row).
func sqliteFile(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db.sqlite3")
	makeDB(t, path, "row")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fixedName names every copy the same (the tests' copies are one each).
func fixedName(time.Time) string { return "site-20261206T000000000Z.sqlite3" }

// framed is data as a run hands it over: its length, then itself.
func framed(length uint64, data []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, length), data...)
}

// TestKeepCopy: what the run hands over (its account's, so anything)
// becomes a copy only when it is a whole SQLite file of the length it
// announced; else nothing is left in the directory but what was there.
func TestKeepCopy(t *testing.T) {
	db := sqliteFile(t)
	pages := bytes.Clone(db)
	binary.BigEndian.PutUint32(pages[28:32], 7) // a header that counts 7 pages
	for _, c := range []struct {
		name   string
		stream []byte
		want   string // in the error; "" for a copy kept
	}{
		{"a database", framed(uint64(len(db)), db), ""},
		{"nothing", nil, "EOF"},
		{"a cut length", []byte{0, 0, 1}, "length was cut off"},
		{"a cut copy", framed(uint64(len(db)), db[:100]), "cut off after 100"},
		{"a length past any disk", framed(1<<62, db), "bytes free"},
		{"not SQLite", framed(4096, bytes.Repeat([]byte("x"), 4096)), "not a SQLite database"},
		{"too short", framed(10, db[:10]), "too short"},
		{"half a page", framed(uint64(len(db)-100), db[:len(db)-100]), "not whole pages"},
		{"pages the header does not count", framed(uint64(len(pages)), pages), "header says 7 pages"},
	} {
		t.Run(c.name, func(t *testing.T) {
			to := t.TempDir()
			dir, err := os.Open(to)
			if err != nil {
				t.Fatal(err)
			}
			defer dir.Close()
			_, size, err := keepCopy(dir, fixedName, bytes.NewReader(c.stream))
			entries, _ := os.ReadDir(to)
			if c.want == "" {
				kept, _ := os.ReadFile(filepath.Join(to, "site-20261206T000000000Z.sqlite3"))
				if err != nil || size != int64(len(db)) || !bytes.Equal(kept, db) || len(entries) != 1 {
					t.Errorf("a whole database: %v, %d bytes, %v", err, size, entries)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error saying %q", err, c.want)
			}
			if len(entries) != 0 {
				t.Errorf("a refused copy left %v", entries)
			}
		})
	}
}

// TestKeepCopyNeverReplaces: a name already taken (a link put there by
// whoever could) is never written through nor replaced.
func TestKeepCopyNeverReplaces(t *testing.T) {
	db := sqliteFile(t)
	to := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	must(t, os.WriteFile(victim, []byte("untouched"), 0o600))
	dir, err := os.Open(to)
	must(t, err)
	defer dir.Close()
	for _, name := range []string{".site-20261206T000000000Z.sqlite3.partial", "site-20261206T000000000Z.sqlite3"} {
		path := filepath.Join(to, name)
		must(t, os.Symlink(victim, path))
		if _, _, err := keepCopy(dir, fixedName, bytes.NewReader(framed(uint64(len(db)), db))); err == nil {
			t.Errorf("a copy was kept over the link %s", name)
		}
		if data, _ := os.ReadFile(victim); string(data) != "untouched" {
			t.Fatalf("written through the link %s", name)
		}
		if target, err := os.Readlink(path); err != nil || target != victim {
			t.Errorf("the link %s was replaced", name)
		}
		os.Remove(path)
	}
}

// FuzzKeepCopy: any bytes from a run leave either no file, or a copy
// that is exactly the announced bytes and passes the header check.
func FuzzKeepCopy(f *testing.F) {
	db := sqliteFile(f)
	f.Add(framed(uint64(len(db)), db))
	f.Add(framed(100, db[:100]))
	f.Add([]byte{})
	f.Add(framed(1<<40, nil))
	f.Fuzz(func(t *testing.T, stream []byte) {
		to := t.TempDir()
		dir, err := os.Open(to)
		if err != nil {
			t.Fatal(err)
		}
		defer dir.Close()
		_, size, err := keepCopy(dir, fixedName, bytes.NewReader(stream))
		entries, _ := os.ReadDir(to)
		if err != nil {
			if len(entries) != 0 {
				t.Fatalf("%v, and left %v", err, entries)
			}
			if err == io.EOF && len(stream) != 0 {
				t.Fatalf("EOF (no copy begun) for %d bytes", len(stream))
			}
			return
		}
		kept, _ := os.ReadFile(filepath.Join(to, "site-20261206T000000000Z.sqlite3"))
		if len(entries) != 1 || size != int64(len(kept)) || !bytes.Equal(kept, stream[8:8+size]) {
			t.Fatalf("kept %d bytes, %v", size, entries)
		}
		k, _ := os.Open(filepath.Join(to, "site-20261206T000000000Z.sqlite3"))
		defer k.Close()
		if err := wholeSQLite(k, size); err != nil {
			t.Fatalf("kept a copy that fails the check: %v", err)
		}
	})
}

// TestCopyThatDoesNotFitFailsAtOnce: a copy Caddy refuses (here: its disk
// has no room for it) ends the run at once, saying why, with nothing
// left behind: not a run waiting for Caddy's answer until its timeout
// (a restore holds the app's requests meanwhile).
func TestCopyThatDoesNotFitFailsAtOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a small tmpfs")
	}
	base := t.TempDir()
	to := filepath.Join(base, "small")
	must(t, os.Mkdir(to, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", to).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", to).Run() })
	db := filepath.Join(base, "big.sqlite3")
	out, err := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("create table t(x)")
db.executemany("insert into t values (?)", [("x" * 1000,) for _ in range(1000)]); db.commit()`, db).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	spec, err := (&BackupConfig{Name: "big", Path: db, To: to, Timeout: caddy.Duration(time.Minute)}).ResolveBackup(nil, "")
	must(t, err)
	run := runBackup(t, spec, "")
	if run.Result != Failed || !strings.Contains(run.Output, "bytes free") {
		t.Errorf("a copy past the disk's room: %s %q, want it failed at once, saying the room left", run.Result, run.Output)
	}
	if entries, _ := os.ReadDir(to); len(entries) != 0 {
		t.Errorf("left in the backup directory: %v", entries)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 2 {
		t.Errorf("left beside the database: %v", entries)
	}
}

// TestRestoreTakesOnlyCaddysCopies: a copy in the backup directory that
// another account owns (an older Hearth's copies were the app's
// account's), that another may write, or that has another name (a hard
// link) could change until the restore reads it: refused, saying what
// to check and do.
func TestRestoreTakesOnlyCaddysCopies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("makes a copy of another account's")
	}
	base := t.TempDir()
	db := filepath.Join(base, "site.sqlite3")
	makeDB(t, db, "current")
	to := filepath.Join(base, "copies")
	must(t, os.Mkdir(to, 0o700))
	spec, err := (&BackupConfig{Name: "site", Path: db, To: to}).ResolveBackup(nil, "")
	must(t, err)
	copy := func(name string) string {
		path := filepath.Join(to, name)
		makeDB(t, path, "the copy's rows")
		return path
	}
	others := copy("site-20200101T000000000Z.sqlite3")
	must(t, os.Chown(others, 65534, 65534))
	open := copy("site-20200102T000000000Z.sqlite3")
	must(t, os.Chmod(open, 0o666))
	linked := copy("site-20200103T000000000Z.sqlite3")
	must(t, os.Link(linked, filepath.Join(base, "elsewhere.sqlite3")))
	for _, c := range []struct{ copy, want string }{
		{others, "belongs to nobody (uid 65534)"}, {open, "mode 0666"}, {linked, "2 names"},
	} {
		if err := restoreRefused(spec, c.copy); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "sudo chown 0 "+c.copy) {
			t.Errorf("restore %s: %v, want refused saying %q and the fix", c.copy, err, c.want)
		}
	}
	if err := restoreRefused(spec, copy("site-20200104T000000000Z.sqlite3")); err != nil {
		t.Errorf("a copy of Caddy's: %v", err)
	}
	if data, _ := os.ReadFile(db); !strings.Contains(string(data), "the copy's rows") {
		t.Errorf("the copy of Caddy's was not restored")
	}
}

// TestStaleWorkspacesAreRemoved: what a run killed by its timeout left
// (a whole copy of the database, in its workspace) is removed by the next
// run, also where the database's directory is reached through a link;
// only the workspace's own files go.
func TestStaleWorkspacesAreRemoved(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	must(t, os.Mkdir(real, 0o755))
	must(t, os.Symlink(real, filepath.Join(base, "link")))
	db := filepath.Join(base, "link", "site.sqlite3")
	makeDB(t, db, "row")
	stale := filepath.Join(real, ".hearth-backup-site~killed")
	must(t, os.Mkdir(stale, 0o700))
	for _, f := range []string{"copy.sqlite3", "copy.sqlite3-journal"} {
		must(t, os.WriteFile(filepath.Join(stale, f), []byte("a killed run's copy"), 0o600))
	}
	other := filepath.Join(real, ".hearth-backup-site-2~killed") // another backup's (site-2)
	must(t, os.Mkdir(other, 0o700))
	spec, err := (&BackupConfig{Name: "site", Path: db, To: filepath.Join(base, "copies")}).ResolveBackup(nil, "")
	must(t, err)
	if run := runBackup(t, spec, ""); run.Result != OK {
		t.Fatalf("the backup: %s %q", run.Result, run.Output)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Errorf("the killed run's workspace is still there")
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("another backup's workspace was removed")
	}
}

// TestOneRunOfABackupAtATime: a run of a backup that a reload dropped
// (its Job destructed, its history gone) still keeps the backup's next
// Job, a reload later, from starting another into the same directory.
func TestOneRunOfABackupAtATime(t *testing.T) {
	base := t.TempDir()
	db := filepath.Join(base, "site.sqlite3")
	makeDB(t, db, "row")
	spec, err := (&BackupConfig{Name: "once", Path: db, To: filepath.Join(base, "copies")}).ResolveBackup(nil, "")
	must(t, err)
	j := New(spec, zap.NewNop())
	defer j.Destruct()
	id, err := j.RunNow()
	must(t, err)
	first := waitRun(t, j, id)
	last := lastBackup([]Run{first})
	if first.Result != OK || last == nil {
		t.Fatalf("the first copy: %s %q", first.Result, first.Output)
	}
	if !startBackupRun("once") { // a dropped Job's run, under way
		t.Fatal("a backup run is marked after the run's end")
	}
	if _, err := j.RunNow(); !errors.Is(err, ErrRunning) {
		t.Errorf("a second run of the backup beside the first: %v, want ErrRunning", err)
	}
	if _, err := restoreFile(j, last.File); !errors.Is(err, ErrRunning) {
		t.Errorf("a restore beside a run of the backup: %v, want ErrRunning", err)
	}
	endBackupRun("once")
	id, err = j.RunNow()
	must(t, err)
	if run := waitRun(t, j, id); run.Result != OK {
		t.Errorf("once the first ended: %s %q", run.Result, run.Output)
	}
	if !startBackupRun("once") {
		t.Errorf("the run's end did not unmark the backup")
	}
	endBackupRun("once")
}

// TestCheckCopies: what Caddy's start warns of (the copies would fail a
// day later otherwise), making nothing, and the fix it says for each.
func TestCheckCopies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("makes directories of another account's")
	}
	base := t.TempDir()
	app := filepath.Join(base, "app")
	must(t, os.Mkdir(app, 0o755))
	must(t, os.Chown(app, 65534, 65534))
	old := filepath.Join(base, "old-copies") // an older Hearth's: the app's account's
	must(t, os.Mkdir(old, 0o700))
	must(t, os.Chown(old, 65534, 65534))
	for _, c := range []struct{ to, want string }{
		{filepath.Join(base, "new-copies"), ""},
		{old, "sudo chown 0 " + old},
		{filepath.Join(app, "backups"), "would be made in " + app},
	} {
		err := checkCopies(c.to)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.to, err, c.want)
		}
		if c.want == "" || c.to != old {
			if _, err := os.Lstat(c.to); err == nil {
				t.Errorf("%s was made by the check", c.to)
			}
		}
	}
	if err := checkCopies(filepath.Join(app, "backups")); err == nil || strings.Contains(err.Error(), "install -d") {
		t.Errorf("a root command inside the app's directory is suggested: %v", err)
	}
}
