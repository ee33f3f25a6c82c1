package ddns

import "testing"

// TestAdminRoutesFollowTheRunningApp: the admin routes serve the app that
// runs. A reload that Caddy refuses after the new config's app started
// (another app of that config failed to start) stops the new app and keeps
// the old one running: the routes serve the old one again, where they
// answered 404 ("no ddns app is running") until the next reload. After a
// reload that went through, the old app's stop changes nothing, and the
// new one's stop (Caddy's exit) leaves none, never the stopped old one.
func TestAdminRoutesFollowTheRunningApp(t *testing.T) {
	t.Cleanup(func() { current.Store(nil) })
	old, refused, next := &App{}, &App{}, &App{}
	publish(old)
	// a refused reload
	publish(refused)
	if current.Load() != refused {
		t.Fatal("the started app is not served")
	}
	withdraw(refused)
	if current.Load() != old {
		t.Fatalf("after a refused reload the routes serve %p, want the running app %p", current.Load(), old)
	}
	// a reload that went through: the new app starts, then the old stops
	publish(next)
	withdraw(old)
	if current.Load() != next {
		t.Fatalf("after a reload the routes serve %p, want the new app %p", current.Load(), next)
	}
	withdraw(next)
	if a := current.Load(); a != nil {
		t.Fatalf("after the last app stopped the routes serve %p (the stopped old one: %v)", a, a == old)
	}
}
