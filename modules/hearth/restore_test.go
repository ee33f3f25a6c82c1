package hearth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// heldPool is a pool that records whether its requests are held.
type heldPool struct {
	placedPool
	mu     sync.Mutex
	held   bool
	pauses int
}

func (p *heldPool) Pause(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = true
	p.pauses++
	return nil
}

// Starting: the pool runs.
func (p *heldPool) Starting() bool { return false }

func (p *heldPool) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = false
}

func (p *heldPool) state() (held bool, pauses int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held, p.pauses
}

func sqliteFile(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("create table t(x)"); db.commit()`, path).CombinedOutput()
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// restoreSetup registers app shop (a pool that can be held) and backup
// shopdb of its database; it returns the pool, the database and a copy
// in the backup's directory.
func restoreSetup(t *testing.T) (*heldPool, string, string) {
	t.Helper()
	dir := t.TempDir()
	db, to := filepath.Join(dir, "shop.sqlite3"), filepath.Join(dir, "backups")
	if err := os.Mkdir(to, 0o700); err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(to, "shopdb-20261202T000000000Z.sqlite3")
	sqliteFile(t, db)
	sqliteFile(t, copied)
	n := 0
	p := &heldPool{placedPool: placedPool{name: "shop", destructs: &n}}
	pools.LoadOrNew("restore-test-pool", func() (caddy.Destructor, error) { return p, nil })
	t.Cleanup(func() { pools.Delete("restore-test-pool") })
	spec, err := (&job.BackupConfig{Name: "shopdb", App: "shop", Path: db, To: to}).ResolveBackup(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	j, _, _ := jobs.LoadOrNew("restore-test-job", func() (caddy.Destructor, error) { return job.New(spec, zap.NewNop()), nil })
	t.Cleanup(func() { jobs.Delete("restore-test-job") })
	if err := j.(*job.Job).Start(); err != nil {
		t.Fatal(err)
	}
	return p, db, copied
}

func restoreRequest(file string) error {
	r := httptest.NewRequest("POST", "/hearth/backups/shopdb/restore?file="+file, nil)
	return adminAPI{}.serve(httptest.NewRecorder(), r)
}

// A second restore while one runs is refused without letting go of the
// requests the first one holds.
func TestSecondRestoreLeavesTheFirstsHold(t *testing.T) {
	p, db, copied := restoreSetup(t)
	// a write lock on the database keeps the first restore going
	locker := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None); db.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); time.sleep(2)`, db)
	out, _ := locker.StdoutPipe()
	if err := locker.Start(); err != nil {
		t.Fatal(err)
	}
	defer locker.Wait()
	if _, err := out.Read(make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- restoreRequest(copied) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if held, _ := p.state(); held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first restore did not hold the app")
		}
	}
	err := restoreRequest(copied)
	if err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("a second restore: %v", err)
	}
	if held, pauses := p.state(); !held || pauses != 1 {
		t.Errorf("after the second restore's refusal: held %v, paused %d times; want still held by the first", held, pauses)
	}
	if err := <-first; err != nil {
		t.Errorf("the first restore: %v", err)
	}
	if held, _ := p.state(); held {
		t.Error("the app is still held after the restore")
	}
}

// A restore takes a copy of the backup's own directory, not one named as
// made later than now, and looks at it
// before holding the app.
func TestRestoreTakesOnlyTheBackupsCopies(t *testing.T) {
	p, _, copied := restoreSetup(t)
	link := filepath.Join(filepath.Dir(copied), "link.sqlite3")
	os.Symlink(copied, link)
	// a copy named later than now (planted by the app's account, which can
	// write the directory: it would sort as the newest copy)
	planted := filepath.Join(filepath.Dir(copied), "shopdb-20991231T235959999Z.sqlite3")
	if err := os.WriteFile(planted, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// copies that could change until the restore reads them: another
	// account's (an older Hearth's copies were the app's account's), and
	// one with a second name; refused before the app is held
	others := filepath.Join(filepath.Dir(copied), "shopdb-20200101T000000000Z.sqlite3")
	sqliteFile(t, others)
	if err := os.Chown(others, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(filepath.Dir(copied), "shopdb-20200102T000000000Z.sqlite3")
	sqliteFile(t, linked)
	if err := os.Link(linked, filepath.Join(t.TempDir(), "elsewhere")); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		others:        "belongs to nobody",
		linked:        "2 names",
		planted:       "later than now",
		"/etc/shadow": "is not there",
		filepath.Join(filepath.Dir(copied), "..", filepath.Base(filepath.Dir(copied)), "..", "shop.sqlite3"): "is not there",
		filepath.Join(filepath.Dir(copied), "missing.sqlite3"):                                               "no copy",
		link:               "symbolic link",
		"relative.sqlite3": "absolute path",
	} {
		if err := restoreRequest(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("restore of %s: %v, want %q", file, err, want)
		}
	}
	if _, pauses := p.state(); pauses != 0 {
		t.Errorf("refused restores held the app %d times", pauses)
	}
}

// newPool is a pool a reload brings, not running yet.
type newPool struct {
	placedPool
	starts int
}

func (p *newPool) Start() error  { p.starts++; return nil }
func (p *newPool) Running() bool { return false }

// TestNoStartDuringARestore: a reload that brings a new version of an app
// while a restore of its database runs does not start it (its
// before_start, the migrations, would run on the database being
// replaced): the config is refused, saying so. The restore refuses, the
// other way round, a version that is starting (TestRestoreWhileStarting).
func TestNoStartDuringARestore(t *testing.T) {
	restoring.Store("app shop", true)
	defer restoring.Delete("app shop")
	shop, other := &newPool{placedPool: placedPool{name: "shop"}}, &newPool{placedPool: placedPool{name: "blog"}}
	err := startPools([]Pool{shop, other}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), `app "shop": a restore of its database is in progress`) {
		t.Errorf("starting a pool of an app being restored: %v", err)
	}
	if shop.starts != 0 || other.starts != 1 {
		t.Errorf("started %d times the pool being restored, %d the other, want 0 and 1", shop.starts, other.starts)
	}
}

// goneAtRestart is a pool a reload takes out between the admin API's look
// and its Restart.
type goneAtRestart struct{ placedPool }

func (p *goneAtRestart) Restart() error {
	return fmt.Errorf("app %s is draining, %w", p.name, supervisor.ErrNotRunning)
}

// TestRestartRacingAReload: a restart that finds the app taken out by a
// reload meanwhile answers 409 (ask again), not 500.
func TestRestartRacingAReload(t *testing.T) {
	n := 0
	p := &goneAtRestart{placedPool{name: "racy", destructs: &n}}
	pools.LoadOrNew("restart-race-pool", func() (caddy.Destructor, error) { return p, nil })
	t.Cleanup(func() { pools.Delete("restart-race-pool") })
	err := adminAPI{}.restart(httptest.NewRecorder(), httptest.NewRequest("POST", "/hearth/apps/racy/restart", nil), "racy")
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusConflict || !strings.Contains(err.Error(), "ask again") {
		t.Errorf("a restart racing a reload: %v, want 409 saying to ask again", err)
	}
}
