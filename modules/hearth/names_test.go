package hearth

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/service"
)

// placedPool is a pool of an app in a directory, for UsePool.
type placedPool struct {
	name, dir string
	placed    bool
	destructs *int
}

func (p *placedPool) Destruct() error { *p.destructs++; return nil }
func (p *placedPool) Start() error    { return nil }
func (p *placedPool) Name() string    { return p.name }
func (p *placedPool) Status() any     { return nil }
func (p *placedPool) Running() bool   { return true }
func (p *placedPool) Restart() error  { return nil }
func (p *placedPool) Scale(int) error { return nil }
func (p *placedPool) AppDir() string  { return p.dir }

// unplaced hides AppDir: a pool that has no directory (such as a process
// upstream's).
type unplaced struct{ *placedPool }

func (u unplaced) AppDir() {}

// TestConfigRefusesTwoAppsOfOneName: within one config, two apps of one
// name in different directories are refused naming both directories and
// the fix, and so is a name two pools share when one has no directory (a
// process upstream); the same app used twice and apps of other names are
// not.
func TestConfigRefusesTwoAppsOfOneName(t *testing.T) {
	for i, tc := range []struct {
		name  string
		pools []*placedPool
		err   []string // in the error of the last UsePool; none: all accepted
	}{
		{"same name, same directory", []*placedPool{{name: "app", dir: "/srv/a", placed: true}, {name: "app", dir: "/srv/a", placed: true}}, nil},
		{"other names", []*placedPool{{name: "a", dir: "/srv/a", placed: true}, {name: "b", dir: "/srv/b", placed: true}}, nil},
		{"same name, two directories", []*placedPool{{name: "app", dir: "/srv/a", placed: true}, {name: "other", dir: "/srv/c", placed: true}, {name: "app", dir: "/srv/b", placed: true}},
			[]string{`two apps are named "app"`, "/srv/a", "/srv/b", "`name <another>`"}},
		// two process upstreams running `node a.js` and `node b.js`: one
		// restart or scale through the admin API would reach both
		{"same name, no directories", []*placedPool{{name: "node", dir: "/srv/a"}, {name: "node", dir: "/srv/b"}},
			[]string{`two apps are named "node"`, "`name <another>`", "named after its program"}},
		{"same name, one with a directory", []*placedPool{{name: "app", dir: "/srv/a", placed: true}, {name: "app", dir: "/srv/a"}},
			[]string{`two apps are named "app"`, "`name <another>`"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &App{keys: map[Pool]string{}, logger: zap.NewNop()}
			destructs := 0
			var keys []string
			var err error
			for j, p := range tc.pools {
				p.destructs = &destructs
				key := fmt.Sprintf("names-test-%d-%d", i, j)
				var pool Pool = p
				if !p.placed {
					pool = unplaced{p}
				}
				_, err = a.UsePool(key, func() (Pool, error) { return pool, nil })
				if err != nil {
					if j != len(tc.pools)-1 {
						t.Fatalf("pool %d refused: %v", j+1, err)
					}
					break
				}
				keys = append(keys, key)
			}
			if len(tc.err) == 0 && err != nil {
				t.Fatalf("refused: %v", err)
			}
			for _, want := range tc.err {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v lacks %q", err, want)
				}
			}
			if err != nil && (destructs != 1 || len(a.used) != len(tc.pools)-1) {
				t.Errorf("the refused pool was kept: %d destructed, %d used", destructs, len(a.used))
			}
			for _, key := range keys {
				ReleasePool(key)
			}
		})
	}
}

// TestAppName: the one rule for an app's name, used by the handlers, the
// process upstream and the commands that read a config (ports, systemd).
func TestAppName(t *testing.T) {
	for _, tc := range []struct{ name, kind, source, want string }{
		{"shop", "python", "mysite.wsgi:application", "shop"},
		{"", "python", "mysite.wsgi:application", "mysite"},
		{"", "python", "mysite.wsgi", "mysite"},
		{"", "python", "hello:application", "hello"},
		{"", "python", "hello", "hello"},
		{"", "process", "/usr/bin/python3.11", "python3.11"},
		{"", "process", "node", "node"},
		{"api", "process", "node", "api"},
	} {
		if got := AppName(tc.name, tc.kind, tc.source); got != tc.want {
			t.Errorf("AppName(%q, %q, %q) = %q, want %q", tc.name, tc.kind, tc.source, got, tc.want)
		}
	}
	a, b := PoolKey("python", map[string]int{"workers": 2}), PoolKey("python", map[string]int{"workers": 3})
	if a == b || !strings.HasPrefix(a, "python:") || a != PoolKey("python", map[string]int{"workers": 2}) {
		t.Errorf("PoolKey: %q, %q", a, b)
	}
}

// A job's (and a service's) key holds its account: a reload that changes only an app's
// group (or a renumbered uid) makes the job anew, instead of keeping the
// one that runs as before.
func TestJobKeyHoldsTheAccount(t *testing.T) {
	spec := func(gid uint32) *job.Spec {
		return &job.Spec{Name: "nightly", Kind: job.KindJob, Path: "/bin/true", Credential: &syscall.Credential{Uid: 1000, Gid: gid}}
	}
	if PoolKey("job", spec(1000)) == PoolKey("job", spec(33)) {
		t.Error("two jobs that differ only in their group share a key")
	}
	service := func(gid uint32) *service.Spec {
		return &service.Spec{Name: "worker", Path: "/bin/true", Credential: &syscall.Credential{Uid: 1000, Gid: gid}}
	}
	if PoolKey("service", service(1000)) == PoolKey("service", service(33)) {
		t.Error("two services that differ only in their group share a key")
	}
}
