package ddns

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// readOnlyProvider is a DNS provider that cannot set records.
type readOnlyProvider struct{}

func (readOnlyProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dns.providers.hearth_test_readonly", New: func() caddy.Module { return new(readOnlyProvider) }}
}

func init() { caddy.RegisterModule(readOnlyProvider{}) }

func TestProvisionErrors(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	base := func() *App {
		return &App{
			Domains:   map[string][]string{"example.net": {"@"}},
			IPSources: []IPSource{{Source: "static", IP: "203.0.113.1"}},
		}
	}
	for _, tc := range []struct {
		name   string
		modify func(*App)
		want   string
	}{
		{"read-only provider", func(a *App) { a.ProviderRaw = []byte(`{"name": "hearth_test_readonly"}`) }, "cannot set records"},
		{"unknown provider", func(a *App) { a.ProviderRaw = []byte(`{"name": "nosuch"}`) }, "nosuch"},
		{"no provider", func(a *App) {}, "no provider"},
		{"bad version", func(a *App) { a.Versions = []string{"ipv5"} }, "not ipv4 or ipv6"},
		{"no domains", func(a *App) { a.Domains = nil }, "no domains"},
		{"empty zone", func(a *App) { a.Domains = map[string][]string{"example.net": nil} }, "lists no names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := base()
			tc.modify(a)
			err := a.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
