package engine

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// monitorInterval is how often a pool samples its workers' memory and
// retires idle extra workers.
const monitorInterval = time.Second

// monitor runs the pool's periodic duties until the pool stops.
func (p *Pool) monitor() {
	ticker := time.NewTicker(monitorInterval)
	defer ticker.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-ticker.C:
		}
		p.sampleMemory()
		if p.opts.MaxWorkers > 0 {
			p.mu.Lock()
			if p.shrinkLocked(p.opts.IdleTimeout) {
				p.logger.Info("scaling down: a worker was idle for idle_timeout", zap.Duration("idle_timeout", p.opts.IdleTimeout))
			}
			p.mu.Unlock()
		}
	}
}

// sampleMemory records each worker's resident memory and recycles those
// over max_memory.
func (p *Pool) sampleMemory() {
	p.mu.Lock()
	workers := append([]*worker(nil), p.workers...)
	p.mu.Unlock()
	for _, w := range workers {
		rss := residentBytes(w.proc.Pid())
		p.mu.Lock()
		w.rss = rss
		limit := p.opts.MaxMemory
		if limit > 0 && w.serviceRSS > limit {
			// over it from the start: its replacement would be too, and
			// replacing it would import the app again every second; such a
			// worker is held to twice what it started with instead
			limit = 2 * w.serviceRSS
			if !p.memoryTooLowSaid {
				p.memoryTooLowSaid = true
				p.logger.Error("max_memory is below what a worker holds right after it starts: such workers are held to twice that instead",
					zap.Int("pid", w.proc.Pid()), zap.Int64("rss_bytes_at_start", w.serviceRSS), zap.Int64("max_memory", p.opts.MaxMemory),
					zap.String("fix", "raise max_memory above what the app needs (see rss_bytes in GET /hearth/apps), and reload"))
			}
		}
		if limit > 0 && rss > limit && w.state == workerServing {
			p.logger.Warn("worker over max_memory; replacing it after its current request",
				zap.Int("pid", w.proc.Pid()), zap.Int64("rss_bytes", rss), zap.Int64("max_memory", limit))
			w.requestRecycle("memory")
		}
		p.mu.Unlock()
	}
}

// residentBytes reads a process's resident set size; 0 if it is gone.
func residentBytes(pid int) int64 {
	data, err := supervisor.ReadProc(pid, "statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func skipWatchDir(path, name string) bool {
	switch name {
	case ".git", ".hg", "__pycache__", "node_modules", ".mypy_cache", ".pytest_cache", ".tox":
		return true
	}
	_, err := os.Stat(filepath.Join(path, "pyvenv.cfg")) // a virtualenv
	return err == nil
}

// matchesAny matches a slash-separated relative path against globs where
// a leading "**/" matches any number of directories.
func matchesAny(globs []string, rel string) bool {
	for _, g := range globs {
		if rest, ok := strings.CutPrefix(g, "**/"); ok {
			parts := strings.Split(rel, "/")
			for i := range parts {
				if ok, _ := filepath.Match(rest, strings.Join(parts[i:], "/")); ok {
					return true
				}
			}
			continue
		}
		if ok, _ := filepath.Match(g, rel); ok {
			return true
		}
	}
	return false
}
