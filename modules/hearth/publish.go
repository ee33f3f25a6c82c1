package hearth

import "sync/atomic"

// current is the newest started hearth app, whose config the status (GET
// /hearth/services, the certificates, the dashboard) shows.
var current atomic.Pointer[App]

// publish makes a, starting, the config the status shows, and remembers
// the app it replaces.
func (a *App) publish() {
	a.replaced = current.Swap(a)
	services.Store(a.services)
	currentCerts.Store(a.certs)
}

// withdraw undoes publish as a stops (or fails to start: Caddy stops
// only the apps that started). When a is still the newest, its config
// was refused (Caddy stops the new config's apps and keeps the old) or
// Caddy stops: the app it replaced is shown again while that one runs,
// and the pools both configs use are told again what the running config
// told them (their site: SCRIPT_NAME, the hosts; their storage). An app
// replaced by a newer one changes nothing.
func (a *App) withdraw() {
	if atomic.SwapUint32(&a.stopped, 1) == 1 {
		return
	}
	back := a.replaced
	if back != nil && atomic.LoadUint32(&back.stopped) == 1 {
		back = nil
	}
	if current.CompareAndSwap(a, back) {
		var view *serviceView
		var certs *certSource
		if back != nil {
			view, certs = back.services, back.certs
			for i := len(a.undo) - 1; i >= 0; i-- { // last first: a pool two handlers use was told twice
				a.undo[i]()
			}
		}
		services.Store(view)
		currentCerts.Store(certs)
	}
	if cur := current.Load(); cur != nil && cur.replaced == a {
		cur.replaced = nil // (it would hold a's whole config until cur stops)
	}
	a.replaced, a.undo = nil, nil
}
