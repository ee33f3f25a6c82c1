package linkfs

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkServe is what Caddy's file server asks of its file system for
// one small static file (a Stat, then an Open, a read and a Close),
// through the plain OS file system Caddy would use otherwise and through
// linkfs, each way it reaches paths.
func BenchmarkServe(b *testing.B) {
	dir := b.TempDir()
	name := filepath.Join(dir, "static", "css", "site.css")
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(name, []byte("body { color: red }\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	serve := func(b *testing.B, fsys interface {
		fs.StatFS
	}) {
		buf := make([]byte, 512)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := fsys.Stat(name); err != nil {
				b.Fatal(err)
			}
			f, err := fsys.Open(name)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Read(buf); err != nil && err != io.EOF {
				b.Fatal(err)
			}
			f.Close()
		}
	}
	b.Run("os", func(b *testing.B) { serve(b, osFS{}) })
	for _, mode := range resolveModes {
		b.Run("linkfs-"+mode.name, func(b *testing.B) {
			resolving(b, mode.with)
			serve(b, FS{})
		})
	}
}

// osFS is Caddy's default file system (caddy.osFS): the os package's calls.
type osFS struct{}

func (osFS) Open(name string) (fs.File, error)     { return os.Open(name) }
func (osFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }
