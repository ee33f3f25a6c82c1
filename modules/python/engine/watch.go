package engine

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// watchSettle is how long the watched files must stay quiet after a change
// before the workers restart: an editor's save or a `git checkout` is many
// events, and one restart.
const watchSettle = 200 * time.Millisecond

// watchFiles restarts the pool's workers when a file of the app directory
// that matches the watch globs is written, created, removed or renamed
// (inotify, through fsnotify). Directories of version control, caches and
// virtual environments are not watched; directories created later are.
func (p *Pool) watchFiles() {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		p.logger.Error("watch: cannot watch the app's files; the workers will not restart on changes (raise fs.inotify.max_user_instances)", zap.Error(err))
		<-p.ctx.Done()
		return
	}
	defer w.Close()
	p.watchTree(w, p.opts.Dir)
	settle := time.NewTimer(watchSettle)
	settle.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				settle.Reset(watchSettle) // events were lost: assume a change
				continue
			}
			p.logger.Warn("watch: error from the file watcher", zap.Error(err))
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) {
				if info, err := os.Lstat(ev.Name); err == nil && info.IsDir() {
					// files may be written in it before its watch is in
					// place: those found now count as a change
					if p.watchTree(w, ev.Name) {
						settle.Reset(watchSettle)
					}
					continue
				}
			}
			rel, err := filepath.Rel(p.opts.Dir, ev.Name)
			if err != nil || ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) || !matchesAny(p.opts.Watch, filepath.ToSlash(rel)) {
				continue
			}
			settle.Reset(watchSettle)
		case <-settle.C:
			p.logger.Info("watched files changed; restarting workers", zap.Strings("watch", p.opts.Watch))
			if err := p.Restart(); err != nil {
				p.logger.Error("restart after a file change failed; the old workers keep serving", zap.Error(err))
			}
		}
	}
}

// watchTree adds dir and the directories below it to w, skipping those
// skipWatchDir names, and reports whether it saw a file the watch globs
// match. A directory that cannot be watched (the inotify watch limit) is
// logged once, with the fix.
func (p *Pool) watchTree(w *fsnotify.Watcher, dir string) (matched bool) {
	warned := false
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() {
			if rel, err := filepath.Rel(p.opts.Dir, path); err == nil && matchesAny(p.opts.Watch, filepath.ToSlash(rel)) {
				matched = true
			}
			return nil
		}
		if path != p.opts.Dir && skipWatchDir(path, d.Name()) {
			return filepath.SkipDir
		}
		if err := w.Add(path); err != nil && !warned {
			warned = true
			p.logger.Warn("watch: a directory cannot be watched; changes in it will not restart the workers (raise fs.inotify.max_user_watches)",
				zap.String("dir", path), zap.Error(err))
		}
		return nil
	})
	return matched
}
