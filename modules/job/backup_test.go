package job

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// makeDB writes a SQLite database holding row.
func makeDB(t testing.TB, path, row string) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("create table t(x)"); db.execute("insert into t values (?)", (sys.argv[2],)); db.commit()`, path, row).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// runBackup runs the backup's job once (a copy, or with restore a
// restore) and returns the run.
func runBackup(t *testing.T, spec *Spec, restore string) Run {
	t.Helper()
	j := New(spec, zap.NewNop())
	defer j.Destruct()
	var id int64
	var err error
	if restore != "" {
		id, err = restoreFile(j, restore)
	} else {
		id, err = j.RunNow()
	}
	if err != nil {
		t.Fatal(err)
	}
	return waitRun(t, j, id)
}

// restoreFile starts a restore of the copy file, as the admin API does.
func restoreFile(j *Job, file string) (int64, error) {
	copy, err := j.OpenCopy(file)
	if err != nil {
		return 0, err
	}
	return j.Restore(copy)
}

// restoreRefused is the error of a restore of copy that does not start
// (nil: it started, and ran).
func restoreRefused(spec *Spec, copy string) error {
	j := New(spec, zap.NewNop())
	defer j.Destruct()
	id, err := restoreFile(j, copy)
	if err == nil {
		for r, _ := j.Run(id); r.Result == Running; r, _ = j.Run(id) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return err
}

// waitRun waits for the run id of j to end, and returns it.
func waitRun(t *testing.T, j *Job, id int64) Run {
	t.Helper()
	var run Run
	waitFor(t, "the run to end", func() bool {
		r, ok := j.Run(id)
		run = r
		return ok && r.Result != Running
	})
	return run
}

// A backup without an app runs as Caddy's account, root under `sudo caddy
// run`, in directories an app's account may own. Nothing that account
// does there makes root run its code, read a file for it, or write
// through its links: the copy runs as the database's owner, and stays
// root only for a database root owns where only root changes anything.
func TestBackupInDirectoriesAnotherAccountOwns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the attacks are on a backup that runs as root")
	}
	const appUID = 65534 // nobody: the app's account
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755) // the app's account reaches its directories
	owned := func(path string) string { // a directory of the app's account
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, appUID, appUID); err != nil {
			t.Fatal(err)
		}
		return path
	}
	asApp := func(name string, arg ...string) error { // a command of the app's account
		cmd := exec.Command(name, arg...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
		return cmd.Run()
	}
	project := owned(filepath.Join(base, "project"))
	db := filepath.Join(project, "db.sqlite3")
	makeDB(t, db, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIATTACKER attacker")
	victimDir := filepath.Join(base, "root-only")
	if err := os.Mkdir(victimDir, 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(victimDir, "authorized_keys")

	t.Run("a module in the working directory", func(t *testing.T) {
		marker := filepath.Join(base, "ran")
		os.WriteFile(filepath.Join(project, "json.py"), []byte("open("+strconv.Quote(marker)+", 'w').write('ran')\n"), 0o644)
		defer os.Remove(filepath.Join(project, "json.py"))
		old, _ := os.Getwd()
		if err := os.Chdir(project); err != nil { // `sudo caddy run` in the project
			t.Fatal(err)
		}
		spec, err := (&BackupConfig{Name: "site", Path: db, To: filepath.Join(base, "copies")}).ResolveBackup(nil, "")
		os.Chdir(old)
		if err != nil {
			t.Fatal(err)
		}
		runBackup(t, spec, "")
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("json.py of the working directory ran during the backup")
		}
	})

	t.Run("the app's account can neither remove nor plant a copy", func(t *testing.T) {
		// the database is the app's account's, read as that account (a
		// compromised app's); the copies are Caddy's
		own := filepath.Join(project, "own.sqlite3")
		makeDB(t, own, "the app's rows")
		os.Chown(own, appUID, appUID)
		to := filepath.Join(base, "own-copies")
		spec, err := (&BackupConfig{Name: "own", Path: own, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		copies, _ := filepath.Glob(filepath.Join(to, "own-*.sqlite3"))
		if run.Result != OK || len(copies) != 1 {
			t.Fatalf("the backup: %s %s %v", run.Result, run.Output, copies)
		}
		if st, err := os.Stat(copies[0]); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Mode().Perm() != 0o600 {
			t.Errorf("the copy %s: %v %v, want Caddy's account's (root), 0600", copies[0], st.Mode(), err)
		}
		planted := filepath.Join(to, "own-20200101T000000000Z.sqlite3")
		if asApp("/bin/rm", "-f", copies[0]) == nil || asApp("/bin/cp", own, planted) == nil || asApp("/bin/chmod", "777", to) == nil {
			t.Errorf("the app's account changed the backup directory")
		}
		if _, err := os.Stat(copies[0]); err != nil {
			t.Errorf("the app's account removed the copy: %v", err)
		}
		if _, err := os.Lstat(planted); err == nil {
			t.Errorf("the app's account planted a copy")
		}
		if entries, _ := os.ReadDir(project); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), ".hearth-backup-") }) {
			t.Errorf("the run left its temporary directory in %s: %v", project, entries)
		}
	})

	t.Run("a database directory others can write holds no workspace", func(t *testing.T) {
		// another account could swap the workspace for a link while SQLite
		// opens the copy there by path: the copy is made in $TMPDIR then,
		// and nothing there is touched (a workspace a killed run left is
		// removed only where the run's account alone writes)
		shared := filepath.Join(base, "shared-db")
		os.Mkdir(shared, 0o755)
		os.Chmod(shared, 0o777)
		sharedDB := filepath.Join(shared, "db.sqlite3")
		makeDB(t, sharedDB, "the app's rows")
		os.Chown(sharedDB, appUID, appUID)
		stale := owned(filepath.Join(shared, ".hearth-backup-shared~planted"))
		must(t, os.WriteFile(filepath.Join(stale, "copy.sqlite3"), []byte("another account's"), 0o644))
		os.Chown(filepath.Join(stale, "copy.sqlite3"), appUID, appUID)
		spec, err := (&BackupConfig{Name: "shared", Path: sharedDB, To: filepath.Join(base, "shared-copies")}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if run := runBackup(t, spec, ""); run.Result != OK {
			t.Fatalf("the backup: %s %q", run.Result, run.Output)
		}
		if data, _ := os.ReadFile(filepath.Join(stale, "copy.sqlite3")); string(data) != "another account's" {
			t.Errorf("the run worked in a directory other accounts can write")
		}
	})

	t.Run("a backup directory of the app's account is refused", func(t *testing.T) {
		// what an older Hearth made: the copies the app's account's
		to := owned(filepath.Join(base, "app-copies"))
		now := time.Now().UTC()
		for ms := 0; ms < 3000; ms++ { // and links where the next copy may be written
			at := now.Add(time.Duration(ms) * time.Millisecond)
			os.Symlink(victim, filepath.Join(to, fmt.Sprintf(".site-%s%03dZ.sqlite3.partial", at.Format("20060102T150405"), at.Nanosecond()/1e6)))
		}
		spec, err := (&BackupConfig{Name: "site", Path: db, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		if _, err := os.Lstat(victim); err == nil {
			t.Fatalf("the backup (%s) wrote %s through a link the app's account planted", run.Result, victim)
		}
		if run.Result != Failed || !strings.Contains(run.Output, "chown 0 "+to) {
			t.Errorf("a backup directory of the app's account: %s %q", run.Result, run.Output)
		}
		copied := filepath.Join(to, "site-20261202T000000000Z.sqlite3")
		makeDB(t, copied, "ATTACKER rows")
		os.Chown(copied, appUID, appUID)
		if err := restoreRefused(spec, copied); err == nil || !strings.Contains(err.Error(), "chown 0 "+to) {
			t.Errorf("a restore from a directory of the app's account: %v", err)
		}
	})

	t.Run("a link of the app's account to a database of root's", func(t *testing.T) {
		secret := filepath.Join(victimDir, "secret.sqlite3")
		makeDB(t, secret, "root's secret rows")
		defer os.Remove(secret)
		link := filepath.Join(project, "stolen.sqlite3")
		os.Symlink(secret, link)
		os.Lchown(link, appUID, appUID)
		to := filepath.Join(base, "stolen-copies")
		spec, err := (&BackupConfig{Name: "stolen", Path: link, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		filepath.Walk(base, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && path != secret {
				if data, _ := os.ReadFile(path); strings.Contains(string(data), "root's secret rows") {
					t.Errorf("root's database was copied to %s (%s)", path, run.Result)
				}
			}
			return nil
		})
		if run.Result != Failed {
			t.Errorf("a backup through the app's link to root's database: %s %q", run.Result, run.Output)
		}
	})

	t.Run("a database of root's that another account may write", func(t *testing.T) {
		// root's name all the way, but the file's mode lets the app's
		// account write what root would then read as a database
		dir := filepath.Join(base, "root-dir")
		must(t, os.Mkdir(dir, 0o700))
		open := filepath.Join(dir, "open.sqlite3")
		makeDB(t, open, "rows anyone may write")
		must(t, os.Chmod(open, 0o666))
		spec, err := (&BackupConfig{Name: "open", Path: open, To: filepath.Join(base, "open-copies")}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if run := runBackup(t, spec, ""); run.Result != Failed || !strings.Contains(run.Output, "another account may write it (mode 666)") {
			t.Errorf("a root database others may write: %s %q", run.Result, run.Output)
		}
	})

	t.Run("a restore's copy that is a link to root's database", func(t *testing.T) {
		secret := filepath.Join(victimDir, "secret2.sqlite3")
		makeDB(t, secret, "root's secret rows")
		defer os.Remove(secret)
		own := filepath.Join(project, "restored.sqlite3")
		makeDB(t, own, "the app's rows")
		os.Chown(own, appUID, appUID)
		to := filepath.Join(base, "restore-copies")
		os.Mkdir(to, 0o700)
		copied := filepath.Join(to, "restored-20261202T000000000Z.sqlite3")
		os.Symlink(secret, copied)
		spec, err := (&BackupConfig{Name: "restored", Path: own, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := restoreRefused(spec, copied); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("a restore of a link to root's database: %v", err)
		}
		if data, _ := os.ReadFile(own); strings.Contains(string(data), "root's secret rows") {
			t.Fatalf("the restore read root's database into the app's")
		}
	})

	t.Run("root's database in a directory every account may write", func(t *testing.T) {
		sticky := filepath.Join(base, "sticky")
		os.Mkdir(sticky, 0o755)
		os.Chmod(sticky, 0o777|os.ModeSticky)
		shared := filepath.Join(sticky, "shared.sqlite3")
		makeDB(t, shared, "root's rows")
		spec, err := (&BackupConfig{Name: "shared", Path: shared, To: filepath.Join(base, "shared-copies")}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		if run.Result != Failed || !strings.Contains(run.Output, "mode 1777") {
			t.Errorf("root's database in a sticky directory: %s %q", run.Result, run.Output)
		}
	})

	t.Run("a path through the app's account into a third account's files", func(t *testing.T) {
		const thirdUID = 33 // www-data
		home := owned(filepath.Join(base, "home3"))
		other := filepath.Join(base, "other")
		os.MkdirAll(filepath.Join(other, "data"), 0o755)
		os.Chown(other, thirdUID, thirdUID)
		os.Chown(filepath.Join(other, "data"), thirdUID, thirdUID)
		link := filepath.Join(home, "project")
		os.Symlink(other, link)
		os.Lchown(link, appUID, appUID)
		to := filepath.Join(base, "third-copies")
		os.Mkdir(to, 0o700)
		copied := filepath.Join(to, "third-20261202T000000000Z.sqlite3")
		makeDB(t, copied, "ATTACKER rows")
		spec, err := (&BackupConfig{Name: "third", Path: filepath.Join(link, "data", "db.sqlite3"), To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, copied)
		if _, err := os.Lstat(filepath.Join(other, "data", "db.sqlite3")); err == nil {
			t.Fatalf("the restore (%s) wrote a database into the third account's directory", run.Result)
		}
		if run.Result != Failed || !strings.Contains(run.Output, "uid 33 after names of uid 65534") {
			t.Errorf("a path into a third account's files: %s %q", run.Result, run.Output)
		}
	})

	t.Run("a link of root's leading through one of the app's account", func(t *testing.T) {
		secretDir := filepath.Join(base, "secret-dir")
		os.Mkdir(secretDir, 0o700)
		makeDB(t, filepath.Join(secretDir, "db.sqlite3"), "root's secret rows")
		home := owned(filepath.Join(base, "home4"))
		appLink := filepath.Join(home, "project")
		os.Symlink(secretDir, appLink)
		os.Lchown(appLink, appUID, appUID)
		srv := filepath.Join(base, "srv")
		os.Mkdir(srv, 0o755)
		rootLink := filepath.Join(srv, "app")
		os.Symlink(appLink, rootLink)
		to := filepath.Join(base, "chain-copies")
		spec, err := (&BackupConfig{Name: "chain", Path: filepath.Join(rootLink, "db.sqlite3"), To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		if copies, _ := filepath.Glob(filepath.Join(to, "chain-*")); len(copies) != 0 || run.Result != Failed {
			t.Errorf("a link chain through the app's account: %s %q, copies %v (made as root)", run.Result, run.Output, copies)
		}
	})

	t.Run("a backup directory to be made under a sticky directory", func(t *testing.T) {
		rootDir := filepath.Join(base, "root-db")
		os.Mkdir(rootDir, 0o700)
		rootDB := filepath.Join(rootDir, "db.sqlite3")
		makeDB(t, rootDB, "root's rows")
		sticky := filepath.Join(base, "sticky2")
		os.Mkdir(sticky, 0o755)
		os.Chmod(sticky, 0o777|os.ModeSticky)
		spec, err := (&BackupConfig{Name: "later", Path: rootDB, To: filepath.Join(sticky, "a", "backups")}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		if _, err := os.Lstat(filepath.Join(sticky, "a")); err == nil || run.Result != Failed || !strings.Contains(run.Output, sticky+" is writable by group or others") {
			t.Errorf("a backup directory to be made in a sticky directory: %s %q", run.Result, run.Output)
		}
	})

	t.Run("the backup directory is a link", func(t *testing.T) {
		to := filepath.Join(project, "copies-link")
		os.Symlink(victimDir, to)
		spec, err := (&BackupConfig{Name: "site", Path: db, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		if entries, _ := os.ReadDir(victimDir); len(entries) != 0 {
			t.Fatalf("the backup (%s) wrote into %s through a link: %v", run.Result, victimDir, entries)
		}
		if run.Result != Failed || !strings.Contains(run.Output, project+" is owned by nobody") {
			t.Errorf("a backup directory that is a link: %s %q", run.Result, run.Output)
		}
	})

	t.Run("root's database copied into a directory under the app's account", func(t *testing.T) {
		// the directory itself root's, as the first run made it: the app's
		// account owns the one above, so it can swap it for its own while
		// SQLite opens the copy by path
		rootDir := filepath.Join(base, "root-db3")
		os.Mkdir(rootDir, 0o700)
		rootDB := filepath.Join(rootDir, "db.sqlite3")
		makeDB(t, rootDB, "root's secret rows")
		to := filepath.Join(project, "root-backups")
		if err := os.Mkdir(to, 0o700); err != nil {
			t.Fatal(err)
		}
		spec, err := (&BackupConfig{Name: "rootdb", Path: rootDB, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		if entries, _ := os.ReadDir(to); len(entries) != 0 || run.Result != Failed || !strings.Contains(run.Output, project+" is owned by nobody") {
			t.Errorf("root's database into the app's directory: %s %q, made %v", run.Result, run.Output, entries)
		}
	})

	// Failures are messages that say what to do, never a traceback, and
	// leave no partial copy.
	noTraceback := func(t *testing.T, run Run, want string) {
		t.Helper()
		if run.Result != Failed || strings.Contains(run.Output, "Traceback") || !strings.Contains(run.Output, want) {
			t.Errorf("%s %q: want a failure saying %q, no traceback", run.Result, run.Output, want)
		}
	}
	appDB := filepath.Join(project, "app.sqlite3")
	makeDB(t, appDB, "the app's rows")
	os.Chown(appDB, appUID, appUID)

	t.Run("a backup directory that is a dangling link", func(t *testing.T) {
		to := filepath.Join(project, "dangling")
		os.Symlink(filepath.Join(base, "nowhere"), to)
		os.Lchown(to, appUID, appUID)
		spec, err := (&BackupConfig{Name: "app", Path: appDB, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		noTraceback(t, runBackup(t, spec, ""), project+" is owned by nobody (uid 65534); the copies must be where only root")
	})

	t.Run("a database that is not SQLite", func(t *testing.T) {
		garbage := filepath.Join(project, "garbage.sqlite3")
		os.WriteFile(garbage, []byte(strings.Repeat("not a database\n", 200)), 0o600)
		os.Chown(garbage, appUID, appUID)
		to := filepath.Join(base, "garbage-copies")
		os.Mkdir(to, 0o700)
		spec, err := (&BackupConfig{Name: "garbage", Path: garbage, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		noTraceback(t, runBackup(t, spec, ""), "is it a SQLite database")
		if entries, _ := os.ReadDir(to); len(entries) != 0 {
			t.Errorf("a failed copy left %v behind", entries)
		}
	})

	t.Run("a database the account cannot read", func(t *testing.T) {
		closed := filepath.Join(project, "closed.sqlite3")
		makeDB(t, closed, "root's rows")
		os.Chmod(closed, 0o600) // root's, in the app's directory: copied as the app's account
		to := filepath.Join(base, "closed-copies")
		os.Mkdir(to, 0o700)
		spec, err := (&BackupConfig{Name: "closed", Path: closed, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		noTraceback(t, runBackup(t, spec, ""), "as uid 65534")
		if entries, _ := os.ReadDir(to); len(entries) != 0 {
			t.Errorf("a failed copy left %v behind", entries)
		}
	})

	t.Run("a partial copy a killed run left is removed", func(t *testing.T) {
		to := filepath.Join(base, "partial-copies")
		os.Mkdir(to, 0o700)
		stale := filepath.Join(to, ".app-20261202T000000000Z.sqlite3.partial")
		os.WriteFile(stale, []byte("half a database"), 0o600)
		spec, err := (&BackupConfig{Name: "app", Path: appDB, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, "")
		copies, _ := filepath.Glob(filepath.Join(to, "app-*.sqlite3"))
		if _, err := os.Lstat(stale); err == nil || run.Result != OK || len(copies) != 1 {
			t.Errorf("%s %q: the stale partial copy is still there, or no copy was made (%v)", run.Result, run.Output, copies)
		}
	})

	t.Run("a restore of a copy only Caddy's account can read", func(t *testing.T) {
		to := filepath.Join(base, "unreadable-copies")
		os.Mkdir(to, 0o700)
		copied := filepath.Join(to, "app-20261202T000000000Z.sqlite3")
		makeDB(t, copied, "the copy's rows")
		os.Chmod(copied, 0o600) // Caddy hands it to the run
		spec, err := (&BackupConfig{Name: "app", Path: appDB, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if run := runBackup(t, spec, copied); run.Result != OK || !strings.Contains(run.Output, `"kept_aside":"`+to) {
			t.Fatalf("the restore: %s %q", run.Result, run.Output)
		}
		if data, _ := os.ReadFile(appDB); !strings.Contains(string(data), "the copy's rows") {
			t.Errorf("the copy was not restored")
		}
		if st, err := os.Stat(appDB); err != nil || st.Sys().(*syscall.Stat_t).Uid != appUID {
			t.Errorf("the restored database is no longer the app's account's: %v", err)
		}
	})

	t.Run("a restore into a database the account cannot write", func(t *testing.T) {
		readOnly := filepath.Join(project, "readonly.sqlite3")
		makeDB(t, readOnly, "root's rows")
		os.Chmod(readOnly, 0o644)
		to := filepath.Join(base, "readonly-copies")
		os.Mkdir(to, 0o700)
		copied := filepath.Join(to, "ro-20261202T000000000Z.sqlite3")
		makeDB(t, copied, "the copy's rows")
		spec, err := (&BackupConfig{Name: "ro", Path: readOnly, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		noTraceback(t, runBackup(t, spec, copied), "was not replaced")
		if data, _ := os.ReadFile(readOnly); !strings.Contains(string(data), "root's rows") {
			t.Errorf("the database was changed")
		}
	})

	t.Run("a restore into a linked database", func(t *testing.T) {
		other := filepath.Join(victimDir, "other.sqlite3")
		makeDB(t, other, "another app's rows")
		defer os.Remove(other)
		linked := filepath.Join(project, "linked.sqlite3")
		os.Symlink(other, linked)
		to := filepath.Join(base, "copies-2")
		if err := os.Mkdir(to, 0o700); err != nil {
			t.Fatal(err)
		}
		copied := filepath.Join(to, "site-20261202T000000000Z.sqlite3")
		makeDB(t, copied, "the copy's rows")
		spec, err := (&BackupConfig{Name: "site", Path: linked, To: to}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		run := runBackup(t, spec, copied)
		if data, _ := os.ReadFile(other); !strings.Contains(string(data), "another app's rows") {
			t.Fatalf("the restore (%s) wrote into the database the link leads to", run.Result)
		}
		if run.Result != Failed {
			t.Errorf("a restore into a link: %s %q", run.Result, run.Output)
		}
	})
}

// Under the unit Caddy runs as its own account, which is in the apps'
// groups and so reads every app's database. A backup without an app runs
// as that account: one app's account must not make it copy another's
// database as its own (a link in its directory), nor restore through
// that link. Names of Caddy's account (and root's) are taken as before.
func TestBackupAsCaddysAccountTakesNoOtherAccountsNames(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the test runs the backup as two accounts of its own")
	}
	const caddyUID, appUID = 65533, 65534 // Caddy's account (no name), the app's (nobody)
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	dirOf := func(name string, uid int) string {
		dir := filepath.Join(base, name)
		must(t, os.Mkdir(dir, 0o755))
		must(t, os.Chown(dir, uid, uid))
		return dir
	}
	// another app's database, which Caddy's account may read
	other := filepath.Join(dirOf("other-app", caddyUID), "db.sqlite3")
	makeDB(t, other, "the other app's rows")
	must(t, os.Chown(other, caddyUID, caddyUID))
	backup := func(name, path string) (*Spec, Run) {
		spec, err := (&BackupConfig{Name: name, Path: path, To: filepath.Join(base, name+"-copies")}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		spec.Credential = &syscall.Credential{Uid: caddyUID, Gid: caddyUID} // as Caddy's account runs it
		return spec, runBackup(t, spec, "")
	}

	t.Run("a database of Caddy's account", func(t *testing.T) {
		if _, run := backup("other", other); run.Result != OK {
			t.Errorf("the backup: %+v", run)
		}
	})
	t.Run("a link of the app's account to another app's database", func(t *testing.T) {
		link := filepath.Join(dirOf("app", appUID), "db.sqlite3")
		must(t, os.Symlink(other, link))
		must(t, os.Lchown(link, appUID, appUID))
		spec, run := backup("app", link)
		copies, _ := filepath.Glob(filepath.Join(base, "app-copies", "*.sqlite3"))
		if run.Result != Failed || len(copies) != 0 || !strings.Contains(run.Output, "Give the backup `app <name>`") {
			t.Errorf("a backup through another account's link: %s %q, copies %v", run.Result, run.Output, copies)
		}
		// a restore through the link would write the other app's database
		copied := filepath.Join(base, "app-copies", "app-20261202T000000000Z.sqlite3")
		must(t, os.MkdirAll(filepath.Dir(copied), 0o700))
		makeDB(t, copied, "the app's chosen rows")
		must(t, os.Chmod(copied, 0o600))
		j := New(spec, zap.NewNop())
		defer j.Destruct()
		id, err := restoreFile(j, copied)
		if err != nil {
			t.Fatal(err)
		}
		if r := waitRun(t, j, id); r.Result != Failed {
			t.Errorf("a restore through another account's link: %s %q", r.Result, r.Output)
		}
		out, err := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select x from t").fetchall())`, other).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "the other app's rows") {
			t.Errorf("the other app's database after the restore: %s %v", out, err)
		}
	})
	t.Run("group-writable, even by the group of Caddy's account's name", func(t *testing.T) {
		// who holds a group is not all in /etc/group: the apps Caddy's
		// unit runs with Caddy's group (HEARTH_DEFAULT_USER
		// hearth-apps:caddy) could write a directory of it, and swap
		// what the run opens by name
		www, err := user.Lookup("www-data")
		if err != nil {
			t.Skip("no www-data account")
		}
		uid, _ := strconv.Atoi(www.Uid)
		gid, _ := strconv.Atoi(www.Gid)
		dir := filepath.Join(base, "www-own")
		must(t, os.Mkdir(dir, 0o775))
		must(t, os.Chmod(dir, 0o775))
		must(t, os.Chown(dir, uid, gid))
		db := filepath.Join(dir, "db.sqlite3")
		makeDB(t, db, "rows")
		must(t, os.Chown(db, uid, gid))
		spec, err := (&BackupConfig{Name: "www", Path: db, To: filepath.Join(base, "www-copies")}).ResolveBackup(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		spec.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if run := runBackup(t, spec, ""); run.Result != Failed || !strings.Contains(run.Output, "chmod go-w "+dir) {
			t.Errorf("a backup in a directory its group may write: %s %q", run.Result, run.Output)
		}
	})
	t.Run("a directory of the app's account on the way", func(t *testing.T) {
		dir := dirOf("app-dir", appUID)
		db := filepath.Join(dir, "db.sqlite3")
		makeDB(t, db, "rows")
		must(t, os.Chown(db, caddyUID, caddyUID))
		if _, run := backup("appdir", db); run.Result != Failed || !strings.Contains(run.Output, "of uid 65534") {
			t.Errorf("a backup under a directory of the app's account: %s %q", run.Result, run.Output)
		}
	})
}

// TestBackupPruning: the copy a run just made is never pruned, whatever
// the other copies' names say (copies made while the clock was ahead sort
// after it: they are kept, and said), only regular files are pruned (a
// directory named like a copy does not stop the pruning for good), and
// the run's result line stays whole in the output tail after many removals.
func TestBackupPruning(t *testing.T) {
	base := t.TempDir()
	db := filepath.Join(base, "site.sqlite3")
	makeDB(t, db, "row")
	to := filepath.Join(base, "copies")
	if err := os.Mkdir(to, 0o700); err != nil {
		t.Fatal(err)
	}
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(to, name), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	touch("site-20990101T000000000Z.sqlite3") // made while the clock said 2099
	touch("site-20990102T000000000Z.sqlite3")
	for i := range 300 { // many old copies: the removed list must not push the result out of the tail
		touch(fmt.Sprintf("site-2020%02d%02dT000000000Z.sqlite3", 1+i/28, 1+i%28))
	}
	if err := os.Mkdir(filepath.Join(to, "site-20000101T000000000Z.sqlite3"), 0o700); err != nil {
		t.Fatal(err)
	}
	spec, err := (&BackupConfig{Name: "site", Path: db, To: to, Keep: 2}).ResolveBackup(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	run := runBackup(t, spec, "")
	if run.Result != OK || strings.Contains(run.Output, "Traceback") {
		t.Fatalf("backup: %+v", run)
	}
	if !strings.Contains(run.Output, "later than now") || !strings.Contains(run.Output, "site-20990101T000000000Z.sqlite3") {
		t.Errorf("the copies dated after now are not said: %s", run.Output)
	}
	last := lastBackup([]Run{run})
	if last == nil {
		t.Fatalf("no copy read from the output tail: %q", run.Output)
	}
	if _, err := os.Stat(last.File); err != nil {
		t.Fatalf("the copy just made was pruned: %v", err)
	}
	entries, _ := os.ReadDir(to)
	var kept []string
	for _, e := range entries {
		kept = append(kept, e.Name())
	}
	// keep 2: the new copy and the newest real one before it; the copies
	// dated after now are kept, not counted; the directory is left alone
	newestReal := fmt.Sprintf("site-2020%02d%02dT000000000Z.sqlite3", 1+299/28, 1+299%28)
	if len(kept) != 5 || !slices.Contains(kept, filepath.Base(last.File)) || !slices.Contains(kept, newestReal) ||
		!slices.Contains(kept, "site-20990101T000000000Z.sqlite3") || !slices.Contains(kept, "site-20990102T000000000Z.sqlite3") ||
		!slices.Contains(kept, "site-20000101T000000000Z.sqlite3") {
		t.Errorf("kept %v", kept)
	}
}

// TestBackupSettingsThatFail: a Django project whose settings raise gives a
// line saying so, never a traceback (it quotes settings.py, secrets and all).
func TestBackupSettingsThatFail(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "brokensettings.py"), []byte("PASSWORD = 'hunter2-in-settings'\nraise KeyError(PASSWORD[:0] + 'DATABASE_URL')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "copies")
	app := &supervisor.Command{Path: "/usr/bin/python3", Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}}
	spec, err := (&BackupConfig{Name: "site", Database: "default", To: to}).ResolveBackup(app, "brokensettings")
	if err != nil {
		t.Fatal(err)
	}
	run := runBackup(t, spec, "")
	if run.Result != Failed || strings.Contains(run.Output, "Traceback") || strings.Contains(run.Output, "hunter2") ||
		!strings.Contains(run.Output, "could not be loaded") || !strings.Contains(run.Output, "KeyError") {
		t.Errorf("settings that raise: %+v", run)
	}
}

// TestRestoreChecksTheCopyItself: a restore takes only a regular file in
// the backup's directory, whatever reached it (the admin API checks it
// too): Caddy opens it there, without following a link.
func TestRestoreChecksTheCopyItself(t *testing.T) {
	base := t.TempDir()
	db := filepath.Join(base, "site.sqlite3")
	makeDB(t, db, "current")
	elsewhere := filepath.Join(base, "other.sqlite3")
	makeDB(t, elsewhere, "not a copy")
	to := filepath.Join(base, "copies")
	spec, err := (&BackupConfig{Name: "site", Path: db, To: to}).ResolveBackup(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if run := runBackup(t, spec, ""); run.Result != OK {
		t.Fatalf("backup: %+v", run)
	}
	link := filepath.Join(to, "site-20990101T000000000Z.sqlite3")
	must(t, os.Symlink(elsewhere, link))
	must(t, os.Mkdir(filepath.Join(to, "site-20990102T000000000Z.sqlite3"), 0o700))
	for copy, want := range map[string]string{link: "is a symbolic link", elsewhere: "is not there",
		filepath.Join(to, "site-20990102T000000000Z.sqlite3"): "not a regular file"} {
		if err := restoreRefused(spec, copy); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("restore %s: %v, want refused saying %q", copy, err, want)
		}
	}
	out, err := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select x from t").fetchone()[0])`, db).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "current" {
		t.Errorf("the database after refused restores: %s %v", out, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRestoreIsNotABackupRun: a restore is listed among the backup's runs,
// but neither its success nor its failure counts as one of the backup's:
// a monitor of the last successful backup (last_success, the metrics) is
// not told a copy was made when one was restored.
func TestRestoreIsNotABackupRun(t *testing.T) {
	base := t.TempDir()
	db := filepath.Join(base, "site.sqlite3")
	makeDB(t, db, "current")
	spec, err := (&BackupConfig{Name: "site", Path: db, To: filepath.Join(base, "copies")}).ResolveBackup(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	j := New(spec, zap.NewNop())
	defer j.Destruct()
	wait := func(id int64, err error) Run {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return waitRun(t, j, id)
	}
	if run := wait(j.RunNow()); run.Result != OK {
		t.Fatalf("backup: %+v", run)
	}
	runs, failures, _, last, _ := j.Metrics()
	copies, _ := filepath.Glob(filepath.Join(base, "copies", "site-*"))
	if len(copies) != 1 {
		t.Fatalf("copies: %v", copies)
	}
	if run := wait(restoreFile(j, copies[0])); run.Result != OK || run.Trigger != TriggerRestore {
		t.Fatalf("restore: %+v", run)
	}
	damaged := filepath.Join(base, "copies", "site-20200101T000000000Z.sqlite3")
	must(t, os.WriteFile(damaged, []byte("SQLite format 3\x00 and then no database"), 0o600))
	if run := wait(restoreFile(j, damaged)); run.Result != Failed || !strings.Contains(run.Output, "integrity_check") {
		t.Fatalf("restore of a damaged copy: %+v", run)
	}
	runs2, failures2, _, last2, _ := j.Metrics()
	if runs2 != runs || failures2 != failures || !last2.Equal(last) {
		t.Errorf("after two restores the backup counts %d runs, %d failures, last success %v; before them %d, %d, %v",
			runs2, failures2, last2, runs, failures, last)
	}
	if st := j.Status(); len(st.Recent) != 3 {
		t.Errorf("the restores are not listed with the backup's runs: %+v", st.Recent)
	}
}
