package job

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/safedir"
)

// A schedule counts from the last time the job was due, and that time is
// kept on this machine (in Caddy's data directory, beside the instance
// locks: like them, it belongs to the machine whose jobs ran, not to a
// storage other hosts may share), so that neither a restart of Caddy nor
// a reload that changes the job's block starts the count again: a home
// machine switched off every night would otherwise never reach an
// `every 24h` backup, and a `0 3 * * *` job would never run on it.

// catchUpDelay is how long after Caddy starts (or the machine wakes) a
// run missed meanwhile is made: the apps' own start goes first.
const catchUpDelay = 30 * time.Second

// lastDueDir is where the jobs' last due times are kept.
func lastDueDir() string { return filepath.Join(caddy.AppDataDir(), "hearth", "jobs") }

// lastDueFile is the file of the job's last due time in dir.
func (s *Spec) lastDueFile(dir string) string {
	return filepath.Join(dir, string(s.Kind)+"-"+s.Name+".last") // names.Check: no '/'
}

// loadLastDue reads the last due time kept in dir; ok is false when there
// is none (a job new to this machine) or it cannot be read (said in err).
func (s *Spec) loadLastDue(dir string) (last time.Time, ok bool, err error) {
	data, err := os.ReadFile(s.lastDueFile(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, false, nil
	}
	if err == nil && len(data) > 64 {
		err = fmt.Errorf("%d bytes, not one time", len(data))
	}
	if err == nil {
		last, err = time.Parse(time.RFC3339Nano, strings.TrimSpace(string(data)))
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("job %s: its last due time (%s) cannot be read, so its schedule counts from now: %w", s.Name, s.lastDueFile(dir), err)
	}
	return last, true, nil
}

// saveLastDue keeps t as the job's last due time in dir: written whole to a
// new file, then renamed over the old one, so that a crash leaves one or
// the other.
func (s *Spec) saveLastDue(dir string, t time.Time) error {
	dir, err := safedir.Ensure(dir, 0o700)
	if err != nil {
		return fmt.Errorf("job %s: keeping its last due time: %w", s.Name, err)
	}
	name := s.lastDueFile(dir)
	tmp, err := os.CreateTemp(dir, filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("job %s: keeping its last due time: %w", s.Name, err)
	}
	_, err = tmp.WriteString(t.Round(0).Format(time.RFC3339Nano) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("job %s: keeping its last due time: %w", s.Name, err)
	}
	return nil
}
