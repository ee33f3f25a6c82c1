package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sqliteWriter writes to the SQLite database at path until stopped:
// transactions of two rows (n, 0) and (n, 1), so a copy taken in the
// middle of one shows a half pair; it prints each n once committed.
const sqliteWriter = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute('CREATE TABLE IF NOT EXISTS pairs (n INTEGER, half INTEGER, pad TEXT)')
n = 0
while True:
    n += 1
    db.execute('BEGIN IMMEDIATE')
    db.execute('INSERT INTO pairs VALUES (?, 0, ?)', (n, 'x' * 200))
    db.execute('INSERT INTO pairs VALUES (?, 1, ?)', (n, 'y' * 200))
    db.execute('COMMIT')
    print(n, flush=True)
`

// copyFacts opens a copy with Python's sqlite3 and reports its integrity
// check, its highest pair and whether every pair is whole.
const copyFacts = `
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])  # read-write: a killed writer's hot journal is rolled back first
check = db.execute('PRAGMA integrity_check').fetchone()[0]
top = db.execute('SELECT COALESCE(MAX(n), 0) FROM pairs').fetchone()[0]
halves = db.execute('SELECT COUNT(*) FROM pairs').fetchone()[0]
print(json.dumps({'check': check, 'top': top, 'whole': halves == 2 * top}))
`

// backupStatus mirrors a backup in GET /hearth/backups.
type backupStatus struct {
	Name       string `json:"name"`
	Runs       int    `json:"runs"`
	Failures   int    `json:"failures"`
	LastResult string `json:"last_result"`
	LastError  string `json:"last_error"`
	Backup     struct {
		To   string `json:"to"`
		Keep int    `json:"keep"`
	} `json:"backup"`
	LastBackup *struct {
		File string `json:"file"`
		Size int64  `json:"size"`
	} `json:"last_backup"`
	Recent []struct {
		Result string `json:"result"`
		Exit   string `json:"exit"`
		Output string `json:"output_tail"`
	} `json:"recent_runs"`
}

func (c *caddyProc) backups() map[string]backupStatus {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/hearth/backups")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Backups []backupStatus `json:"backups"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	out := map[string]backupStatus{}
	for _, b := range body.Backups {
		out[b.Name] = b
	}
	return out
}

// TestSQLiteBackups: copies of a database that another process writes
// continuously are each consistent (integrity_check ok, no transaction
// half there) and hold the rows up to the moment of the copy; keep holds;
// `caddy hearth backup` makes one now; `caddy hearth restore` refuses a
// damaged copy and puts a good one back, keeping the database it replaces
// aside; a database that is not there is a failed run that says so.
func TestSQLiteBackups(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "site.sqlite3")
	writer := exec.Command(pythonPath(), "-c", sqliteWriter, db)
	out, err := writer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = writer.Process.Kill(); _ = writer.Wait() }()
	written := make(chan int, 1<<16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n, _ := strconv.Atoi(sc.Text())
			select {
			case written <- n:
			default:
			}
		}
	}()
	latest := 0
	drain := func() int {
		for {
			select {
			case n := <-written:
				latest = n
			default:
				return latest
			}
		}
	}
	waitFor(t, 10*time.Second, "the writer's first rows", func() bool { return drain() > 100 })

	c := launchCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		backup site {
			path %s
			to %s
			every 1s
			keep 3
		}
		backup missing {
			path %s
			to %s
			every 1h
		}
	}
}
`, db, filepath.Join(dir, "backups"), filepath.Join(dir, "nothing-here.sqlite3"), filepath.Join(dir, "missing")))
	waitFor(t, 30*time.Second, "caddy serving the config (it has no app)", func() bool {
		return strings.Contains(c.log.String(), "serving initial configuration")
	})

	before := drain()
	// a copy a second; on a loaded machine one copy took 11 s
	waitFor(t, 90*time.Second, "five copies made", func() bool { return c.backups()["site"].Runs >= 5 })
	after := drain()
	st := c.backups()["site"]
	if st.Failures != 0 || st.LastResult != "ok" || st.LastBackup == nil || st.LastBackup.Size < 4096 || st.Backup.Keep != 3 {
		t.Fatalf("site backup status: %+v", st)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "backups", "site-*.sqlite3"))
	sort.Strings(files)
	if len(files) != 3 {
		t.Fatalf("keep 3 left %d copies: %v", len(files), files)
	}
	if partial, _ := filepath.Glob(filepath.Join(dir, "backups", ".*")); len(partial) != 0 {
		t.Errorf("partial copies left: %v", partial)
	}
	prev := 0
	for _, f := range files {
		info, _ := os.Stat(f)
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, info.Mode().Perm())
		}
		raw, err := exec.Command(pythonPath(), "-c", copyFacts, f).CombinedOutput()
		if err != nil {
			t.Fatalf("reading %s: %v %s", f, err, raw)
		}
		var facts struct {
			Check string `json:"check"`
			Top   int    `json:"top"`
			Whole bool   `json:"whole"`
		}
		if err := json.Unmarshal(raw, &facts); err != nil {
			t.Fatal(err)
		}
		if facts.Check != "ok" || !facts.Whole {
			t.Errorf("%s is not a consistent copy: %+v", f, facts)
		}
		// rows up to the moment of the copy: more than before the copies
		// began, never more than written since, never fewer than the copy before
		if facts.Top < prev || facts.Top <= before || facts.Top > drain() {
			t.Errorf("%s holds pairs up to %d: want after %d (the copy before) and %d (written before the first), at most %d", f, facts.Top, prev, before, after)
		}
		prev = facts.Top
	}

	code, cli := hearthCLI(t, c.dir, t.TempDir(), "backup", "site", "--address", c.admin)
	if code != 0 || !strings.Contains(cli, "backup site, run") || !strings.Contains(cli, ": ok") {
		t.Errorf("caddy hearth backup site: %d\n%s", code, cli)
	}

	// restore the oldest copy kept, with the writer stopped: the database
	// holds what the copy holds, and what it held before is kept aside
	_ = writer.Process.Kill()
	_ = writer.Wait()
	files, _ = filepath.Glob(filepath.Join(dir, "backups", "site-*.sqlite3"))
	sort.Strings(files)
	oldest := filepath.Join(dir, "backups", "chosen.sqlite3") // a name that keep does not prune
	if data, err := os.ReadFile(files[0]); err != nil || os.WriteFile(oldest, data, 0o600) != nil {
		t.Fatalf("copying %s: %v", files[0], err)
	}
	facts := func(path string) (top int, check string) {
		raw, err := exec.Command(pythonPath(), "-c", copyFacts, path).CombinedOutput()
		var f struct {
			Check string `json:"check"`
			Top   int    `json:"top"`
		}
		if err != nil || json.Unmarshal(raw, &f) != nil {
			t.Fatalf("reading %s: %v %s", path, err, raw)
		}
		return f.Top, f.Check
	}
	liveTop, _ := facts(db)
	copyTop, _ := facts(oldest)
	garbage := filepath.Join(dir, "backups", "garbage.sqlite3")
	writeFile(t, garbage, "SQLite format 3\x00 but not really")
	if code, cli := hearthCLI(t, c.dir, t.TempDir(), "restore", "site", garbage, "--address", c.admin); code == 0 || !strings.Contains(cli, "integrity_check") {
		t.Errorf("restoring a damaged copy: exit %d\n%s", code, cli)
	}
	if top, _ := facts(db); top != liveTop {
		t.Errorf("a refused restore changed the database: %d → %d pairs", liveTop, top)
	}
	code, cli = hearthCLI(t, c.dir, t.TempDir(), "restore", "site", oldest, "--address", c.admin)
	if code != 0 || !strings.Contains(cli, "kept_aside") {
		t.Fatalf("caddy hearth restore site %s: exit %d\n%s", oldest, code, cli)
	}
	if top, check := facts(db); top != copyTop || check != "ok" || copyTop >= liveTop {
		t.Errorf("after the restore the database holds %d pairs (%s), want the copy's %d (it held %d)", top, check, copyTop, liveTop)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "backups", "site-before-restore-*.sqlite3"))
	if len(aside) != 1 {
		t.Fatalf("the database before the restore was not kept aside: %v", aside)
	}
	if top, _ := facts(aside[0]); top != liveTop {
		t.Errorf("the copy kept aside holds %d pairs, the database held %d", top, liveTop)
	}

	code, cli = hearthCLI(t, c.dir, t.TempDir(), "backup", "missing", "--address", c.admin)
	missing := c.backups()["missing"]
	if code == 0 || missing.Failures != 1 || !strings.Contains(missing.Recent[0].Output, "does not exist") || !strings.Contains(cli, "does not exist") ||
		!strings.Contains(missing.LastError, "exit status 1: the database") {
		t.Errorf("a backup of a missing database: exit %d, %+v\n%s", code, missing, cli)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		if entries, _ := os.ReadDir(filepath.Join(dir, "missing")); len(entries) != 0 {
			t.Errorf("a failed backup left files: %v", entries)
		}
	}
}

// TestBackupInsideServedDirRefused: a backup whose copies would land in a
// directory file_server serves is refused, saying where and what to do,
// and the running config goes on. The attack it stops: a copy there is
// the whole database, there for anyone to download (shown first with a
// file put there by hand).
func TestBackupInsideServedDirRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	public := filepath.Join(dir, "public")
	if err := os.MkdirAll(filepath.Join(public, "backups"), 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "site.sqlite3")
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	config := func(to string) string {
		return fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		backup site {
			path %s
			to %s
			every 1h
		}
	}
}
:%d {
	bind 127.0.0.1
	root * %s
	file_server
}
`, db, to, port, public)
	}
	c := launchCaddy(t, config(filepath.Join(dir, "backups")))
	waitFor(t, 30*time.Second, "caddy serving the config (it has no app)", func() bool {
		return strings.Contains(c.log.String(), "serving initial configuration")
	})
	leak := filepath.Join(public, "backups", "site-20261202T000000Z.sqlite3")
	if err := os.WriteFile(leak, []byte("SQLite format 3\x00 every row"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := freshConnClient.Get(fmt.Sprintf("http://127.0.0.1:%d/backups/%s", port, filepath.Base(leak)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "every row") {
		t.Fatalf("a file in the served directory: %d %q (the attack this guards against needs it downloadable)", resp.StatusCode, body)
	}

	for _, to := range []string{filepath.Join(public, "backups"), public, filepath.Join(dir, "link-into-public")} {
		if strings.HasSuffix(to, "link-into-public") {
			if err := os.Symlink(filepath.Join(public, "backups"), to); err != nil {
				t.Fatal(err)
			}
		}
		code, msg := c.load(config(to))
		if code == 200 || !strings.Contains(msg, "backup site") || !strings.Contains(msg, public) ||
			!strings.Contains(msg, "file_server serves") || !strings.Contains(msg, "outside every root") {
			t.Errorf("backup to %s: %d %s\nwant it refused, naming the backup, the served root and the fix", to, code, msg)
		}
		if strings.HasSuffix(to, "link-into-public") && !strings.Contains(msg, "once its links are followed") {
			t.Errorf("backup to a link: %s\nwant it to say where the link leads", msg)
		}
	}
	// a file_server with no root serves Caddy's working directory
	cwd, err := os.Getwd() // launchCaddy's caddy runs where the test does
	if err != nil {
		t.Fatal(err)
	}
	bare := strings.Replace(config(filepath.Join(cwd, "backups")), "\troot * "+public+"\n", "", 1)
	if code, msg := c.load(bare); code == 200 || !strings.Contains(msg, "inside "+cwd+",") {
		t.Errorf("backup to Caddy's working directory with a file_server that has no root: %d %s\nwant it refused, naming %s", code, msg, cwd)
	}
	// the config that ran before goes on
	resp, err = freshConnClient.Get(fmt.Sprintf("http://127.0.0.1:%d/backups/%s", port, filepath.Base(leak)))
	if err != nil {
		t.Fatalf("the running config stopped serving after the refused loads: %v", err)
	}
	resp.Body.Close()
	if _, ok := c.backups()["site"]; !ok {
		t.Error("the running config's backup is gone after the refused loads")
	}

	// a root set for some paths only leaves file_server on the working
	// directory for the others: a file there can be downloaded ...
	partial := func(to string) string {
		return strings.Replace(config(to), "\troot * "+public+"\n", "\troot /static/* "+public+"\n", 1)
	}
	if code, msg := c.load(partial(filepath.Join(dir, "backups"))); code != 200 {
		t.Fatalf("a config with a root for /static/* only: %d %s", code, msg)
	}
	resp, err = freshConnClient.Get(fmt.Sprintf("http://127.0.0.1:%d/backups_test.go", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "TestBackupInsideServedDirRefused") {
		t.Fatalf("a file of Caddy's working directory under a root for /static/* only: %d (the attack needs it downloadable)", resp.StatusCode)
	}
	// ... so a backup there is refused, by a load and by `caddy hearth check`
	if code, msg := c.load(partial(filepath.Join(cwd, "backups"))); code == 200 || !strings.Contains(msg, "inside "+cwd+",") {
		t.Errorf("backup to Caddy's working directory under a root for /static/* only: %d %s\nwant it refused, naming %s", code, msg, cwd)
	}
	if code, msg := c.load(strings.Replace(partial(filepath.Join(cwd, "backups")), "\tfile_server\n", "\tfile_server /static/*\n", 1)); code != 200 {
		t.Errorf("backup to the working directory with file_server and root on the same paths: %d %s\nwant it loaded (the directory is not served)", code, msg)
	}
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	check := func(config string) (int, string) {
		writeFile(t, caddyfile, strings.Replace(config, "{ADMIN}", "off", 1))
		return checkConfig(t, caddyfile, "")
	}
	for _, bad := range []string{config(filepath.Join(public, "backups")), partial(filepath.Join(cwd, "backups"))} {
		if code, out := check(bad); code != 1 || !strings.Contains(out, "would be refused") || !strings.Contains(out, "backup site") || !strings.Contains(out, "outside every root") {
			t.Errorf("caddy hearth check of a backup into a served directory: exit %d\n%s\nwant exit 1, the backup named and the fix", code, out)
		}
	}
	if code, out := check(partial(filepath.Join(dir, "backups"))); code != 0 {
		t.Errorf("caddy hearth check of a backup outside every served directory: exit %d\n%s", code, out)
	}
}

// TestRestoreOutlivesItsClient: a restore goes on to its end when the
// client leaves (a Ctrl-C of `caddy hearth restore`): the app's workers are
// restarted once the database is replaced, and its requests were held until
// then. Before, the handler gave up with its client, which let the held
// requests run against the database being replaced and left the workers
// with what they had read before.
func TestRestoreOutlivesItsClient(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "backups"), 0o700); err != nil {
		t.Fatal(err)
	}
	db, copied := filepath.Join(dir, "site.sqlite3"), filepath.Join(dir, "backups", "copy.sqlite3")
	const fill = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('CREATE TABLE blobs (b BLOB)')
db.executemany('INSERT INTO blobs VALUES (?)', ((bytes(100000),) for _ in range(500)))
db.commit()`
	for _, path := range []string{db, copied} { // ~50 MB each: a restore takes a while
		if out, err := exec.Command(pythonPath(), "-c", fill, path).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	port := freePort(t)
	c := startCaddy(t, helloWithBackup(db, filepath.Join(dir, "backups"), port, ""))
	before := c.workerPIDs()
	impatient := &http.Client{Timeout: 50 * time.Millisecond}
	resp, err := impatient.Post("http://"+c.admin+"/hearth/backups/site/restore?file="+copied, "", nil)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("the restore answered within 50 ms (%d %s): the test needs a slower one", resp.StatusCode, body)
	}
	waitFor(t, 60*time.Second, "the restore to end", func() bool {
		st := c.backups()["site"]
		return len(st.Recent) > 0 && st.Recent[0].Result != "running"
	})
	if st := c.backups()["site"]; st.Recent[0].Result != "ok" {
		t.Fatalf("the restore: %+v", st.Recent[0])
	}
	waitFor(t, 30*time.Second, "the app's workers to be restarted after the restore", func() bool {
		now := c.workerPIDs()
		return len(now) == 1 && len(before) == 1 && now[0] != before[0]
	})
	if resp, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); resp.StatusCode != 200 {
		t.Errorf("the app after the restore: %d", resp.StatusCode)
	}
}

// TestRestoreWhileStarting: a reload brings a new version of the app,
// whose before_start (the migrations) is still at work while the old one
// serves. A restore asked for then is refused with what to do, and
// nothing is restored: the copy would be swapped in under the migration.
func TestRestoreWhileStarting(t *testing.T) {
	t.Parallel()
	dir, db, copied := liveAndCopy(t)
	port := freePort(t)
	starts := filepath.Join(dir, "starts")  // the app's service, which a refused restore leaves running
	config := func(release string) string { // before_start waits (up to a minute) for the file release
		return strings.Replace(helloWithBackup(db, filepath.Join(dir, "backups"), port,
			fmt.Sprintf(`before_start {PYTHON} -c "import os, time; [time.sleep(0.1) for _ in range(600) if not os.path.exists('%s')]"`, release)),
			"\t\tbackup site {", fmt.Sprintf("\t\tservice worker {\n\t\t\tapp hello\n\t\t\tcommand python -c \"import os, time; print(os.getpid(), file=open('%s', 'a'), flush=True); time.sleep(3600)\"\n\t\t\tstop_timeout 5s\n\t\t}\n\t\tbackup site {", starts), 1)
	}
	pids := func() []string {
		data, _ := os.ReadFile(starts)
		return strings.Fields(string(data))
	}
	first := filepath.Join(dir, "first")
	if err := os.WriteFile(first, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := startCaddy(t, config(first))
	waitFor(t, 20*time.Second, "the service started", func() bool { return len(pids()) == 1 })
	release := filepath.Join(dir, "migrated")
	reloaded := make(chan int, 1)
	go func() { code, _ := c.load(config(release)); reloaded <- code }()
	waitFor(t, 30*time.Second, "the new version starting beside the old", func() bool {
		apps, err := c.apps()
		if err != nil {
			return false
		}
		for _, a := range apps {
			if a.Name == "hello" && a.State == "starting" {
				return true
			}
		}
		return false
	})
	code, body := adminPost(t, c, "/hearth/backups/site/restore?file="+copied, "")
	if code != http.StatusConflict || !strings.Contains(body, "is starting") {
		t.Errorf("a restore while the app's new version starts: %d %s, want 409 saying it is starting", code, body)
	}
	// (the reload then replaces the service with the app it belongs to)
	if pid, _ := strconv.Atoi(pids()[0]); len(pids()) != 1 || syscall.Kill(pid, 0) != nil {
		t.Errorf("the app's service was stopped for a restore refused: %v", pids())
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := <-reloaded; code != 200 {
		t.Fatalf("the reload: %d", code)
	}
	if out, err := rowOf(db); err != nil || out != "live" {
		t.Errorf("the database after the refused restore: %s %v", out, err)
	}
}

// helloWithBackup is a config of the hello app (one worker, name hello,
// on port, with more options in its block) and a backup "site" of the
// database db as the app, its copies in to.
func helloWithBackup(db, to string, port int, more string) string {
	return fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		backup site {
			app hello
			path %s
			to %s
			every 1h
		}
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi hello:application {
		name hello
		dir {APPS}
		python {PYTHON}
		workers 1
		%s
	}
}
`, db, to, port, more)
}

// TestRestoreWaitsForTheAppsJobs: a restore of an app's database is
// refused while a job of that app runs (it may be writing to the
// database: what it wrote between the copy aside and the restore would be
// in neither), saying which; nothing is restored.
func TestRestoreWaitsForTheAppsJobs(t *testing.T) {
	t.Parallel()
	dir, db, copied := liveAndCopy(t)
	config := strings.Replace(helloWithBackup(db, filepath.Join(dir, "backups"), freePort(t), ""), "\t\tbackup site {",
		"\t\tjob writer {\n\t\t\tapp hello\n\t\t\tcommand /bin/sleep 30\n\t\t\tschedule \"0 3 1 1 *\"\n\t\t}\n\t\tbackup site {", 1)
	c := startCaddy(t, config)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post("http://"+c.admin+"/hearth/jobs/writer/run", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("running the job: %d", resp.StatusCode)
	}
	waitFor(t, 10*time.Second, "the job running", func() bool {
		return strings.Contains(adminGet(t, "http://"+c.admin+"/hearth/jobs/writer"), `"running": true`)
	})
	resp, err = client.Post("http://"+c.admin+"/hearth/backups/site/restore?file="+copied, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "job writer of app hello is running") {
		t.Errorf("a restore while the app's job runs: %d %s, want 409 naming the job", resp.StatusCode, body)
	}
	if out, err := rowOf(db); err != nil || out != "live" {
		t.Errorf("the database after the refused restore: %s %v", out, err)
	}
}

// TestRestoreStopsTheAppsServices: a restore of an app's database stops
// the app's services (a Celery worker writing to it) until the copy is in,
// then starts them again: what one wrote between the copy aside and the
// restore was in neither.
func TestRestoreStopsTheAppsServices(t *testing.T) {
	t.Parallel()
	dir, db, copied := liveAndCopy(t)
	starts := filepath.Join(dir, "starts")
	config := strings.Replace(helloWithBackup(db, filepath.Join(dir, "backups"), freePort(t), ""), "\t\tbackup site {",
		fmt.Sprintf("\t\tservice worker {\n\t\t\tapp hello\n\t\t\tcommand python -c \"import os, time; print(os.getpid(), file=open('%s', 'a'), flush=True); time.sleep(3600)\"\n\t\t\tstop_timeout 5s\n\t\t}\n\t\tbackup site {", starts), 1)
	c := startCaddy(t, config)
	pids := func() []string {
		data, _ := os.ReadFile(starts)
		return strings.Fields(string(data))
	}
	waitFor(t, 20*time.Second, "the service started", func() bool { return len(pids()) == 1 })
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Post("http://"+c.admin+"/hearth/backups/site/restore?file="+copied, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the restore: %d %s", resp.StatusCode, body)
	}
	waitFor(t, 20*time.Second, "the service stopped for the restore and started again", func() bool { return len(pids()) == 2 })
	first, _ := strconv.Atoi(pids()[0])
	if !waitGone(first, 5*time.Second) {
		t.Errorf("the service's first process %d still runs", first)
	}
	if out, err := rowOf(db); err != nil || out != "copy" {
		t.Errorf("the database after the restore: %s %v", out, err)
	}
}

// liveAndCopy makes, in a new directory, a database site.sqlite3 whose one
// row is "live", and in its backups directory a copy.sqlite3 whose row is
// "copy".
func liveAndCopy(t *testing.T) (dir, db, copied string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "backups"), 0o700); err != nil {
		t.Fatal(err)
	}
	db, copied = filepath.Join(dir, "site.sqlite3"), filepath.Join(dir, "backups", "copy.sqlite3")
	for path, row := range map[string]string{db: "live", copied: "copy"} {
		if out, err := exec.Command(pythonPath(), "-c", `import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("create table t(x)"); db.execute("insert into t values (?)", (sys.argv[2],)); db.commit()`, path, row).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	return dir, db, copied
}

// rowOf is the row of a database liveAndCopy made.
func rowOf(db string) (string, error) {
	out, err := exec.Command(pythonPath(), "-c", `import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select x from t").fetchone()[0])`, db).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
