package ddns

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the app from the `ddns` global option:
//
//	ddns {
//		provider  <name> { … }
//		domains   { <zone> <name…> }
//		ip_source static <ip> | command <cmd…> | http <url> | interface <name> | upnp [<url>]  [timeout <d>]
//		versions  ipv4 ipv6
//		interval  <duration>
//		ttl       <duration>
//		recheck_every <n>
//		dry_run
//		dns_challenge on|off
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.Errf("ddns takes no arguments, got %q; put options inside a { } block", d.Val())
	}
	for d.NextBlock(0) {
		if err := a.unmarshalOption(d); err != nil {
			return err
		}
	}
	return nil
}

func (a *App) unmarshalOption(d *caddyfile.Dispenser) error {
	switch option := d.Val(); option {
	case "provider":
		if !d.NextArg() {
			return d.Err("provider needs a DNS provider name, like `provider rfc2136 { … }`")
		}
		name := d.Val()
		unm, err := caddyfile.UnmarshalModule(d, "dns.providers."+name)
		if err != nil {
			return err
		}
		a.ProviderRaw = caddyconfig.JSONModuleObject(unm, "name", name, nil)
	case "domains":
		if d.NextArg() {
			return d.Err("domains takes a block: `domains { example.net @ home }`")
		}
		if a.Domains == nil {
			a.Domains = map[string][]string{}
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			zone := d.Val()
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.Errf("zone %s lists no names; use @ for the zone itself, like `%s @ home`", zone, zone)
			}
			a.Domains[zone] = append(a.Domains[zone], names...)
		}
	case "ip_source":
		src, err := parseSource(d)
		if err != nil {
			return err
		}
		a.IPSources = append(a.IPSources, src)
	case "versions":
		a.Versions = d.RemainingArgs()
		if len(a.Versions) == 0 {
			return d.Err("versions needs ipv4 and/or ipv6")
		}
		if err := checkVersions(a.Versions); err != nil {
			return d.Err(err.Error())
		}
	case "interval", "ttl":
		if !d.NextArg() {
			return d.Errf("%s needs a duration, like 5m", option)
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur <= 0 {
			return d.Errf("%s %q is not a duration; write it like 5m", option, d.Val())
		}
		if d.NextArg() {
			return d.Errf("%s takes one duration, got another value: %q", option, d.Val())
		}
		if option == "ttl" && (dur < time.Second || dur > maxTTL) {
			return d.Errf("ttl %s is not between 1s and %s (a record's TTL is a whole number of seconds below 2^31)", dur, maxTTL)
		}
		if option == "interval" {
			a.Interval = caddy.Duration(dur)
		} else {
			a.TTL = caddy.Duration(dur)
		}
	case "recheck_every":
		if !d.NextArg() {
			return d.Err("recheck_every needs a number of checks")
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil || n < 1 {
			return d.Errf("recheck_every %q is not a positive number", d.Val())
		}
		if d.NextArg() {
			return d.Errf("recheck_every takes one number, got another value: %q", d.Val())
		}
		a.RecheckEvery = n
	case "dry_run":
		if d.NextArg() {
			return d.Errf("dry_run takes no value, got %q: write `dry_run` alone to write nothing, or leave it out", d.Val())
		}
		a.DryRun = true
	case "dns_challenge":
		if !d.NextArg() || (d.Val() != "on" && d.Val() != DNSChallengeOff) || d.NextArg() {
			return d.Err("dns_challenge takes on or off: `dns_challenge off` leaves these names' certificates to Caddy's defaults (HTTP and TLS-ALPN challenges on ports 80 and 443)")
		}
		a.DNSChallenge = d.Val()
	default:
		return d.Errf("unknown ddns option %q; valid ones are provider, domains, ip_source, versions, interval, ttl, recheck_every, dry_run, dns_challenge", option)
	}
	return nil
}

func parseSource(d *caddyfile.Dispenser) (IPSource, error) {
	if !d.NextArg() {
		return IPSource{}, d.Err("ip_source needs a kind: static, command, http, interface or upnp")
	}
	src := IPSource{Source: d.Val()}
	args := d.RemainingArgs()
	if n := len(args); n >= 2 && args[n-2] == "timeout" {
		dur, err := caddy.ParseDuration(args[n-1])
		if err != nil || dur <= 0 {
			return src, d.Errf("ip_source timeout %q is not a duration, like 5s", args[n-1])
		}
		src.Timeout, args = caddy.Duration(dur), args[:n-2]
	}
	switch {
	case src.Source == "upnp" && len(args) > 1:
		return src, d.Errf("ip_source upnp takes at most one argument (the router's description URL), not %d (%s); a timeout is written `timeout 5s` at the end", len(args), (*redactor)(nil).text(strings.Join(args, " ")))
	case (src.Source == "static" || src.Source == "http" || src.Source == "interface") && len(args) > 1:
		return src, d.Errf("ip_source %s takes one argument, not %d (%s); a timeout is written `timeout 5s` at the end", src.Source, len(args), (*redactor)(nil).text(strings.Join(args, " ")))
	}
	switch src.Source {
	case "static":
		if len(args) == 1 {
			src.IP = args[0]
		}
	case "command":
		src.Command = args
	case "http", "upnp":
		if len(args) == 1 {
			src.URL = args[0]
		}
	case "interface":
		if len(args) == 1 {
			src.Interface = args[0]
		}
	}
	if err := src.check(); err != nil {
		return src, d.Errf("ip_source: %s", (*redactor)(nil).text(err.Error())) // a URL's query may hold a token
	}
	return src, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
