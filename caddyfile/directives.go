// Package caddyfile registers Hearth's Caddyfile directives and their order.
// Each directive's syntax is parsed by its module's UnmarshalCaddyfile.
package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hearth-dev/hearth/modules/ddns"
	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/python"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wsgi", parseWSGI)
	// like reverse_proxy: a terminal handler, after handle_path and
	// friends, before file_server
	httpcaddyfile.RegisterDirectiveOrder("wsgi", httpcaddyfile.After, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("asgi", parseASGI)
	httpcaddyfile.RegisterDirectiveOrder("asgi", httpcaddyfile.After, "reverse_proxy")
	httpcaddyfile.RegisterGlobalOption("hearth", parseHearthOption)
	httpcaddyfile.RegisterGlobalOption("ddns", parseDDNSOption)
	httpcaddyfile.RegisterHandlerDirective("guard", parseGuard)
	// first of the response-shaping handlers: it sees every response
	httpcaddyfile.RegisterDirectiveOrder("guard", httpcaddyfile.Before, "header")
}

func parseASGI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(python.ASGI)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// onceOnly refuses a global option block given a second time: Caddy
// hands each block the value of the one before (existing), which the
// second would replace whole, silently dropping the first's settings.
func onceOnly(d *caddyfile.Dispenser, existing any) error {
	if existing == nil {
		return nil
	}
	d.Next() // onto the option's name, where the error points
	name := d.Val()
	return d.Errf("the global option %s is given twice: a second %s { } block would replace the first whole; put everything in one %s { } block", name, name, name)
}

func parseHearthOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if err := onceOnly(d, existing); err != nil {
		return nil, err
	}
	app := new(hearth.App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "hearth", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseDDNSOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if err := onceOnly(d, existing); err != nil {
		return nil, err
	}
	app := new(ddns.App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "ddns", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseGuard(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(guard.Guard)
	err := g.UnmarshalCaddyfile(h.Dispenser)
	return g, err
}

func parseWSGI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	w := new(python.WSGI)
	err := w.UnmarshalCaddyfile(h.Dispenser)
	return w, err
}
