package python

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestScriptName(t *testing.T) {
	mounts := []string{"/blog", "/api/v1"}
	for _, tc := range []struct{ orig, now, want string }{
		{"/blog/post/1", "/post/1", "/blog"},
		{"/blog/", "/", "/blog"},
		{"/BLOG/x", "/x", "/blog"}, // strip_prefix matches in any case; the mount is as configured
		{"/api/v1/items", "/items", "/api/v1"},
		{"/same", "/same", ""},
		{"/a/b", "/other", ""},
		// another rewrite (`rewrite /legacy/* /landing`): what the client
		// wrote before the new path is not a mount point
		{"/legacy///evil.example/landing", "/landing", ""},
		{"/blog//evil.example/x", "/x", ""},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.Path = tc.orig
		orig := *r
		orig.URL = &(*r.URL)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, orig))
		u := *r.URL
		u.Path = tc.now
		r.URL = &u
		if got := scriptName(r, mounts); got != tc.want {
			t.Errorf("%s → %s: SCRIPT_NAME %q, want %q", tc.orig, tc.now, got, tc.want)
		}
	}
}
