package hearth

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/service"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// sitePool is a pool that records what it is told of its site and
// storage, running (kept by a reload) or not (new).
type sitePool struct {
	placedPool
	running bool
	site    Site
	storage certmagic.Storage
}

func (p *sitePool) Running() bool                  { return p.running }
func (p *sitePool) SetSite(s Site)                 { p.site = s }
func (p *sitePool) Site() Site                     { return p.site }
func (p *sitePool) SetStorage(s certmagic.Storage) { p.storage = s }
func (p *sitePool) Storage() certmagic.Storage     { return p.storage }

// TestARefusedConfigLeavesTheRunningOneAsItWas: a config whose hearth
// app started, then was refused (another app of it failed to start), is
// stopped while the running config stays: the status shows the running
// config's services and certificates again, not the refused one's, and
// a pool both configs use has the site (SCRIPT_NAME, the hosts) and the
// storage the running config gave it. A reload that succeeds keeps the
// new config's.
func TestARefusedConfigLeavesTheRunningOneAsItWas(t *testing.T) {
	t.Cleanup(func() {
		current.Store(nil)
		services.Store(nil)
		currentCerts.Store(nil)
	})
	oldStorage, newStorage := &certmagic.FileStorage{Path: "/old"}, &certmagic.FileStorage{Path: "/new"}
	running := &App{services: &serviceView{list: []Service{{Name: "running"}}}, certs: &certSource{}}
	kept := &sitePool{running: true}
	running.tell(kept, &Site{Mounts: []string{"/app"}}, oldStorage)
	running.publish()

	refused := &App{services: &serviceView{list: []Service{{Name: "refused"}}}, certs: &certSource{}}
	fresh := &sitePool{}
	refused.tell(kept, &Site{}, newStorage)
	refused.tell(kept, &Site{}, newStorage) // (two handlers of the config use it)
	refused.tell(fresh, &Site{Mounts: []string{"/x"}}, newStorage)
	refused.publish()
	if services.Load() != refused.services || currentCerts.Load() != refused.certs || len(kept.site.Mounts) != 0 {
		t.Fatalf("the starting config is not the one shown and told")
	}
	refused.withdraw() // Caddy stops the refused config's started apps
	if services.Load() != running.services || currentCerts.Load() != running.certs {
		t.Errorf("the status shows the refused config's services or certificates")
	}
	if !slices.Equal(kept.site.Mounts, []string{"/app"}) || kept.storage != oldStorage {
		t.Errorf("the running config's pool kept the refused config's site %v or storage %v", kept.site, kept.storage)
	}
	refused.withdraw() // (again: nothing)

	next := &App{services: &serviceView{}, certs: &certSource{}}
	next.tell(kept, &Site{Mounts: []string{"/next"}}, newStorage)
	next.publish()
	running.withdraw() // a reload that succeeds stops the old config after
	if services.Load() != next.services || currentCerts.Load() != next.certs || !slices.Equal(kept.site.Mounts, []string{"/next"}) || kept.storage != newStorage {
		t.Errorf("a reload that succeeded: the status or the pool went back to the old config's")
	}
	next.withdraw() // Caddy stops
	if current.Load() != nil || services.Load() != nil {
		t.Errorf("after the last config stopped, the status still shows one")
	}
}

// envPool is a Python app's pool: services and jobs may run in it.
type envPool struct{ placedPool }

func (p *envPool) Environment() (supervisor.Command, error) { return supervisor.Command{}, nil }

// TestReferencesCheckedBeforeAnyPoolStarts: what startServices and
// startJobs would refuse once the config's pools started (a new pool's
// before_start runs its migrations first) is refused before: a service
// named like an app, and a service, job or backup in an app the config
// does not serve. The dashboard's address is checked when the config
// loads (`caddy validate` passed a port of 99999).
func TestReferencesCheckedBeforeAnyPoolStarts(t *testing.T) {
	web := &envPool{placedPool{name: "web"}}
	for _, tc := range []struct {
		name string
		app  App
		want string
	}{
		{"a service named like an app", App{Services: []*service.Config{{Name: "web"}}}, "service web has the name of an app"},
		{"a service in an app not served", App{Services: []*service.Config{{Name: "redis", App: "shop"}}}, "service redis runs in app shop, which this config does not serve; its Python apps: web"},
		{"a job in an app not served", App{Jobs: []*job.Config{{Name: "clean", App: "shop"}}}, "job clean runs in app shop"},
		{"a backup of an app not served", App{Backups: []*job.BackupConfig{{Name: "shop", Database: "default"}}}, "backup shop runs in app shop"},
		{"all in order", App{Jobs: []*job.Config{{Name: "clean", App: "web"}}, Services: []*service.Config{{Name: "redis"}}}, ""},
	} {
		a := tc.app
		a.used = []Pool{web}
		err := a.checkReferences()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := (&App{Dashboard: "127.0.0.1:99999"}).Provision(ctx); err == nil || !strings.Contains(err.Error(), `dashboard address "127.0.0.1:99999"`) {
		t.Errorf("a dashboard on port 99999: %v", err)
	}
	if err := (&App{Guard: "strict"}).Provision(ctx); err == nil || !strings.Contains(err.Error(), `hearth: guard "strict" is not one of enforce, warn, off`) {
		t.Errorf("a global guard mode that does not exist: %v", err)
	}
}

// settingsPool is a kept pool whose settings came from its site.
type settingsPool struct{ sitePool }

func (p *settingsPool) SettingsFromSite() bool { return true }

// TestKeptAppWithStaleSiteSettingsIsSaidSo: a reload that keeps an app
// whose `settings` were made from its site's hosts, with other hosts
// now, says so with the fix: its ALLOWED_HOSTS stay what they were (the
// new hosts get 421) until it starts anew.
func TestKeptAppWithStaleSiteSettingsIsSaidSo(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	kept := &settingsPool{sitePool{running: true, site: Site{Hosts: []string{"127.0.0.1"}}}}
	a := &App{logger: zap.New(core)}
	a.tell(kept, &Site{Hosts: []string{"127.0.0.1"}}, nil)
	kept.site.Hosts = []string{"localhost", "127.0.0.1"}
	a.tell(kept, &Site{Hosts: []string{"127.0.0.1", "localhost"}}, nil) // (in another order: two servers, a map)
	if logs.Len() != 0 {
		t.Fatalf("the same hosts: %v", logs.All())
	}
	kept.site.Hosts = []string{"127.0.0.1"}
	a.tell(kept, &Site{Hosts: []string{"127.0.0.1", "localhost"}}, nil)
	if logs.FilterMessageSnippet("kept running with the settings").Len() != 1 {
		t.Errorf("new hosts for a kept app whose settings came from them: %v", logs.All())
	}
	plain := &sitePool{running: true, site: Site{Hosts: []string{"a"}}}
	a.tell(plain, &Site{Hosts: []string{"b"}}, nil)
	if logs.Len() != 1 {
		t.Errorf("an app without site settings: %v", logs.All())
	}
}
