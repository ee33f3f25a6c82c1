package hearth

import (
	"slices"
	"testing"

	"github.com/caddyserver/certmagic"
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
