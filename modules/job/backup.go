package job

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// backupScript copies a SQLite database with SQLite's backup API (see the
// file); a backup is a job that runs it.
//
//go:embed sqlite_backup.py
var backupScript string

// Defaults of a backup block.
const (
	DefaultBackupEvery = 24 * time.Hour
	DefaultBackupKeep  = 7
	MaxBackupKeep      = 10000
)

// BackupConfig is one `backup` block of the `hearth` global option
// (JSON: an item of the hearth app's `backups`): an online, checked copy
// of a SQLite database at a fixed interval, the oldest beyond Keep removed.
type BackupConfig struct {
	// Name names the backup and its files (<name>-<UTC time>.sqlite3).
	// With Database, it is also the app whose database it is, unless App
	// is set.
	Name string `json:"name"`
	// App is the Python app whose environment reads the database (its
	// interpreter, settings, user: the user must be able to read it);
	// Caddy writes the copies into To.
	App string `json:"app,omitempty"`
	// Database is a Django DATABASES alias of the app ("default"); Path a
	// SQLite file instead. One of them is required.
	Database string `json:"database,omitempty"`
	Path     string `json:"path,omitempty"`
	// To is the directory the copies go to (created, mode 0700; copies
	// are 0600). Required.
	To string `json:"to"`
	// Every is the interval between copies (at least a second).
	// Default: 24h.
	Every caddy.Duration `json:"every,omitempty"`
	// Keep is how many copies are kept. Default: 7.
	Keep int `json:"keep,omitempty"`
	// Timeout bounds one copy. Default: 1h.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// AppName is the app whose environment the backup runs in ("" for none).
func (c *BackupConfig) AppName() string {
	if c.App == "" && c.Database != "" {
		return c.Name
	}
	return c.App
}

// Check validates the backup's config.
func (c *BackupConfig) Check() error {
	if err := names.Check("backup", c.Name, "backup <name> { … }"); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	switch {
	case strings.HasSuffix(c.Name, "-before-restore"):
		// its copies would be named as backup <name>'s copies from before
		// a restore (never pruned), and it would prune them
		return fmt.Errorf("backup %s: a name may not end in -before-restore, which marks the copies a restore keeps of backup %s; choose another name", c.Name, strings.TrimSuffix(c.Name, "-before-restore"))
	case c.Database == "" && c.Path == "":
		return fmt.Errorf("backup %s needs `database <alias>` (a Django DATABASES alias of app %s) or `path <SQLite file>`", c.Name, c.Name)
	case c.Database != "" && c.Path != "":
		return fmt.Errorf("backup %s: database and path are two ways to name the database; give one", c.Name)
	case c.Database != "" && (strings.ContainsAny(c.Database, " \t\n'\"\\") || len(c.Database) > 64):
		return fmt.Errorf("backup %s: %q is not a DATABASES alias", c.Name, c.Database)
	}
	if c.To == "" {
		return fmt.Errorf("backup %s needs `to <directory>`, where the copies go (outside every directory Caddy serves)", c.Name)
	}
	if c.Every != 0 && time.Duration(c.Every) < MinEvery {
		return fmt.Errorf("backup %s: every must be at least %s", c.Name, MinEvery)
	}
	if c.Keep < 0 || c.Keep > MaxBackupKeep {
		return fmt.Errorf("backup %s: keep must be from 1 to %d, got %d", c.Name, MaxBackupKeep, c.Keep)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("backup %s: timeout must be a positive duration", c.Name)
	}
	return nil
}

// Destination is the directory the copies go to: To, taken from dir (the
// app's directory, or Caddy's working directory without an app) when it
// is relative, and cleaned, so the directory checked (no `..` after a
// link) is the one written.
func (c *BackupConfig) Destination(dir string) string {
	to := c.To
	if !filepath.IsAbs(to) {
		to = filepath.Join(dir, to)
	}
	return filepath.Clean(to)
}

// ResolveBackup turns the config into the spec of the job that makes the
// copies. app is the environment of the app (nil without one: the
// system's python3 then copies the file in Caddy's own clean
// environment); settingsModule is the app's Django settings module, for
// Database.
func (c *BackupConfig) ResolveBackup(app *supervisor.Command, settingsModule string) (*Spec, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	if c.Database != "" && app == nil {
		return nil, fmt.Errorf("backup %s: `database %s` is an alias of a Django app's DATABASES: the config needs app %s", c.Name, c.Database, c.AppName())
	}
	every, keep, timeout := time.Duration(c.Every), c.Keep, time.Duration(c.Timeout)
	if every == 0 {
		every = DefaultBackupEvery
	}
	if keep == 0 {
		keep = DefaultBackupKeep
	}
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	place, python := app, []string{"-c", backupScript}
	if place == nil {
		own, err := (&supervisor.Placement{}).Resolve()
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", c.Name, err)
		}
		own.Path = systemPython()
		place = &own
		// isolated: no module from the working directory (Caddy's, which
		// may be an app's project) nor PYTHON* variables, as this may
		// run as root
		python = []string{"-I", "-c", backupScript}
	}
	to, path := c.Destination(place.Dir), c.Path
	if path != "" && !filepath.IsAbs(path) {
		path = filepath.Join(place.Dir, path)
	}
	// the run makes the copy and hands it to Caddy, which keeps it in to:
	// the script is not told where the copies are
	// caddys: the run is Caddy's own account's (no app), which takes no
	// database another account could have put in its way
	args, err := json.Marshal(map[string]any{"name": c.Name, "path": path,
		"alias": c.Database, "settings_module": settingsModule, "caddys": app == nil})
	if err != nil {
		return nil, err
	}
	schedule := "every " + every.String()
	sched, err := ParseSchedule(schedule)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", c.Name, err)
	}
	return &Spec{Name: c.Name, Kind: KindBackup, App: c.AppName(), Path: place.Path, Args: append(python, string(args)),
		Schedule: schedule, Timeout: timeout, Dir: place.Dir, Env: place.Env, Umask: place.Umask, Credential: place.Credential,
		schedule: sched, Backup: &BackupTarget{Database: c.Database, Path: path, To: to, Keep: keep}}, nil
}

// systemPython is the interpreter of a backup without an app: the
// system's, not the first python3 on Caddy's PATH, which may be a pyenv
// shim or a virtualenv of whoever started Caddy, then run as root or as
// Caddy's account (which may not even reach it). Where the system has
// none there, PATH decides.
func systemPython() string {
	if info, err := os.Stat("/usr/bin/python3"); err == nil && info.Mode().IsRegular() {
		return "/usr/bin/python3"
	}
	return "python3"
}

// OpenCopy opens file, a copy in the backup's directory, for Restore (see
// openCopy): a restore checks it before it holds anything of the app.
func (j *Job) OpenCopy(file string) (*os.File, error) {
	if j.spec.Kind != KindBackup || j.spec.Backup == nil {
		return nil, fmt.Errorf("%s is not a backup", j.spec.Name)
	}
	return openCopy(j.spec.Backup.To, file)
}

// Restore starts a run that puts copy (from OpenCopy; Restore closes it)
// back into the backup's database (see sqlite_backup.py: Caddy hands the
// copy to the run; the run hands back the current database, which Caddy
// keeps aside, then writes the copy into it with SQLite's backup API, so
// the app's open connections see it whole), and returns its id, to follow
// with Run; ErrRunning while a backup or restore runs.
func (j *Job) Restore(copy *os.File) (int64, error) {
	last := len(j.spec.Args) - 1
	if j.spec.Kind != KindBackup || j.spec.Backup == nil || last < 2 {
		copy.Close()
		return 0, fmt.Errorf("%s is not a backup", j.spec.Name)
	}
	var spec map[string]any
	if err := json.Unmarshal([]byte(j.spec.Args[last]), &spec); err != nil {
		copy.Close()
		return 0, err
	}
	spec["restore"] = copy.Name()
	arg, err := json.Marshal(spec)
	if err != nil {
		copy.Close()
		return 0, err
	}
	id, err := j.start(TriggerRestore, append(slices.Clone(j.spec.Args[:last]), string(arg)), copy)
	if err != nil {
		copy.Close()
	}
	return id, err
}

// BackupTarget is what a backup copies, and where.
type BackupTarget struct {
	Database string `json:"database,omitempty"`
	Path     string `json:"path,omitempty"`
	To       string `json:"to"`
	Keep     int    `json:"keep"`
}

// BackupFile is a copy a backup made.
type BackupFile struct {
	File string    `json:"file"`
	Size int64     `json:"size"`
	At   time.Time `json:"at"`
}

// lastBackup is the newest copy in runs (newest first), read from what
// the script printed.
func lastBackup(runs []Run) *BackupFile {
	for _, r := range runs {
		if r.Result != OK {
			continue
		}
		lines := strings.Split(strings.TrimSpace(r.Output), "\n")
		var out struct {
			File string `json:"file"`
			Size int64  `json:"size"`
		}
		if json.Unmarshal([]byte(lines[len(lines)-1]), &out) == nil && out.File != "" {
			return &BackupFile{File: out.File, Size: out.Size, At: r.StartedAt.Add(time.Duration(r.Duration * float64(time.Second)))}
		}
	}
	return nil
}

// UnmarshalCaddyfile reads a `backup` block, the cursor on `backup`:
//
//	backup <name> {
//		database <alias> | path <SQLite file>
//		app      <python app>        # default: <name>, with database
//		to       <directory>
//		every    <duration>          # default 24h
//		keep     <n>                 # default 7
//		timeout  <duration>          # default 1h
//	}
func (c *BackupConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("backup needs a name: `backup <app> { database default … }`")
	}
	c.Name = d.Val()
	if d.NextArg() {
		return d.Errf("backup takes one name, got also %q; put its options inside a { } block", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		args := d.RemainingArgs()
		if len(args) != 1 {
			return d.Errf("%s takes one value", option)
		}
		switch option {
		case "app":
			c.App = args[0]
		case "database":
			c.Database = args[0]
		case "path":
			c.Path = args[0]
		case "to":
			c.To = args[0]
		case "every", "timeout":
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("%s %q is not a positive duration like 6h", option, args[0])
			}
			if option == "every" {
				c.Every = caddy.Duration(dur)
			} else {
				c.Timeout = caddy.Duration(dur)
			}
		case "keep":
			n, err := strconv.Atoi(args[0])
			c.Keep = n
			if err != nil || n < 1 {
				return d.Errf("keep takes a whole number of copies, at least 1, got %q", args[0])
			}
		default:
			return d.Errf("unknown backup option %q; valid ones are database, path, app, to, every, keep, timeout", option)
		}
	}
	if err := c.Check(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}
