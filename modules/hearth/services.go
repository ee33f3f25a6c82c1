package hearth

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"

	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

// Service is a site block that serves a Hearth pool, named after its app.
type Service struct {
	Name   string   `json:"name"`
	Listen []string `json:"listen"`
	Hosts  []string `json:"hosts"`
	Pools  []any    `json:"pools"`
	// DDNS lists the names the ddns app keeps pointed at this machine
	// that are among the service's hosts.
	DDNS []string `json:"ddns"`
	// DDNSDryRun says the ddns app runs in dry_run: it writes nothing.
	DDNSDryRun bool `json:"ddns_dry_run,omitempty"`
	// Certificates are those of the hosts, when the service is HTTPS.
	Certificates []CertificateState `json:"certificates"`

	https bool // its server terminates TLS
}

// services is the current config's service list, with its ddns app.
var services atomic.Pointer[serviceView]

// serviceView is what the status routes and the dashboard read: the
// services of the running config and the ddns app of that same config
// (nil without one), so that a reload that removes the ddns app removes
// its names from the status too.
type serviceView struct {
	list []Service
	ddns DDNSReporter
}

// DDNSReporter is what the hearth app learns from the config's ddns app,
// which it finds with ctx.AppIfConfigured("ddns") when it starts.
type DDNSReporter interface {
	// ManagedNames are the names it keeps pointed at this machine.
	ManagedNames() []string
	// WritesNothing reports dry_run.
	WritesNothing() bool
	// DashboardStatus is its status, as the dashboard shows it.
	DashboardStatus() any
	// Redact removes its provider's credentials from text (a DNS-01
	// error may quote a request).
	Redact(text string) string
}

// findDDNS returns the config's ddns app, or nil.
func findDDNS(ctx caddy.Context) DDNSReporter {
	app, err := ctx.AppIfConfigured("ddns")
	if err != nil {
		return nil
	}
	r, _ := app.(DDNSReporter)
	return r
}

// buildServices lists the config's services: per HTTP server, each pool
// its routes lead to.
func (a *App) buildServices(app *caddyhttp.App) {
	byKey := map[string]Pool{}
	for p, key := range a.keys {
		byKey[key] = p
	}
	list := []Service{}
	index := map[string]int{}
	for _, srv := range app.Servers {
		walkRoutes(srv.Routes, nil, func(key string, hosts []string) {
			p := byKey[key]
			if p == nil {
				return
			}
			id := p.Name() + "|" + strings.Join(srv.Listen, ",")
			i, ok := index[id]
			if !ok {
				i = len(list)
				index[id] = i
				list = append(list, Service{Name: p.Name(), Listen: srv.Listen, Hosts: []string{}, Pools: []any{p}, DDNS: []string{}, https: len(srv.TLSConnPolicies) > 0})
			}
			s := &list[i]
			for _, host := range hosts {
				if !slices.Contains(s.Hosts, host) {
					s.Hosts = append(s.Hosts, host)
				}
			}
		})
	}
	slices.SortFunc(list, func(x, y Service) int { return strings.Compare(x.Name, y.Name) })
	a.services = &serviceView{list: list, ddns: a.ddns}
}

// servicesStatus is the body of GET /hearth/services: the pools as their
// current status.
func servicesStatus() []Service {
	view := services.Load()
	if view == nil {
		return []Service{}
	}
	var managed []string
	dryRun := false
	if view.ddns != nil {
		managed, dryRun = view.ddns.ManagedNames(), view.ddns.WritesNothing()
	}
	out := make([]Service, len(view.list))
	for i, s := range view.list {
		s.DDNS = []string{}
		for _, host := range s.Hosts {
			if slices.Contains(managed, strings.ToLower(host)) {
				s.DDNS = append(s.DDNS, host)
			}
		}
		s.DDNSDryRun = len(s.DDNS) > 0 && dryRun
		s.Certificates = []CertificateState{}
		if s.https {
			s.Certificates = certificateStates(s.Hosts)
		}
		s.Pools = slices.Clone(s.Pools)
		for j, p := range s.Pools {
			s.Pools[j] = p.(Pool).Status()
		}
		out[i] = s
	}
	return out
}

// statusCommand is `caddy hearth status`: the services of the running
// instance, as a table.
func statusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--address <admin address>] [--json]",
		Short: "Shows the services of the running Caddy: ports, hosts, pools, findings, DDNS",
		Args:  cobra.NoArgs,
	}
	address := cmd.Flags().String("address", "", addressFlagHelp)
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		addr, err := caddycmd.DetermineAdminAPIAddress(*address, nil, "", "")
		if err != nil {
			return err
		}
		body, err := adminCall(addr, http.MethodGet, "/hearth/services")
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(cmd.OutOrStdout(), body)
		}
		var list []serviceRow
		if err := json.Unmarshal(body, &list); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		if err := printServices(cmd.OutOrStdout(), list); err != nil {
			return err
		}
		body, err = adminCall(addr, http.MethodGet, "/hearth/apps")
		if err != nil {
			return err
		}
		var apps struct {
			Apps []backgroundRow `json:"apps"`
		}
		if err := json.Unmarshal(body, &apps); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		return printBackground(cmd.OutOrStdout(), apps.Apps)
	}
	return cmd
}

// backgroundRow is what the status table shows of a background service
// (an app of kind "service" in GET /hearth/apps).
type backgroundRow struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind"`
	App       string            `json:"app"`
	State     string            `json:"state"`
	Workers   []json.RawMessage `json:"workers"`
	Restarts  map[string]int    `json:"restarts"`
	LastError string            `json:"last_error"`
}

// printBackground prints the background services, if there are any.
func printBackground(out io.Writer, apps []backgroundRow) error {
	var rows []backgroundRow
	for _, a := range apps {
		if a.Kind == "service" {
			rows = append(rows, a)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(terminalWriter{out}, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKGROUND SERVICE\tAPP\tSTATE\tPROCESSES\tRESTARTS\tLAST ERROR")
	for _, r := range rows {
		restarts := 0
		for _, n := range r.Restarts {
			restarts += n
		}
		lastError := textcut.Shorten(printable(r.LastError), 80) // it may quote a ready command's output
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", cells(r.Name, orDash(nonEmpty(r.App)), r.State, len(r.Workers), restarts, orDash(nonEmpty(lastError)))...)
	}
	return tw.Flush()
}

// nonEmpty is s as a list: none when empty.
func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// serviceRow is what the status table shows of a service.
type serviceRow struct {
	Name         string             `json:"name"`
	Listen       []string           `json:"listen"`
	Hosts        []string           `json:"hosts"`
	DDNS         []string           `json:"ddns"`
	DDNSDryRun   bool               `json:"ddns_dry_run"`
	Certificates []CertificateState `json:"certificates"`
	Pools        []struct {
		State    string            `json:"state"`
		Workers  []json.RawMessage `json:"workers"`
		Findings []json.RawMessage `json:"findings"`
		Restarts map[string]int    `json:"restarts"`
	} `json:"pools"`
}

func printServices(out io.Writer, list []serviceRow) error {
	tw := tabwriter.NewWriter(terminalWriter{out}, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tLISTEN\tHOSTS\tSTATE\tWORKERS\tRESTARTS\tFINDINGS\tDDNS\tCERTIFICATE")
	var failures []CertificateState
	for _, s := range list {
		certs, ok := certificateSummary(s.Certificates)
		for _, p := range s.Pools {
			restarts := 0
			for _, n := range p.Restarts {
				restarts += n
			}
			state := p.State
			if !ok && state == "running" {
				state = "running, no certificate" // visitors get a TLS alert
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", cells(s.Name, strings.Join(s.Listen, ","), orDash(s.Hosts),
				state, len(p.Workers), restarts, len(p.Findings), ddnsColumn(s.DDNS, s.DDNSDryRun), certs)...)
		}
		for _, c := range s.Certificates {
			if c.LastError != "" {
				failures = append(failures, c)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range failures {
		fmt.Fprintf(out, "\ncertificate of %s (%s): the last attempt failed: %s\n", printable(c.Name), printable(c.State), printable(c.LastError))
	}
	return nil
}

// certificateSummary is the CERTIFICATE column, and whether every host
// has a certificate to serve.
func certificateSummary(certs []CertificateState) (string, bool) {
	if len(certs) == 0 {
		return "-", true
	}
	var parts []string
	ok := true
	for _, c := range certs {
		switch c.State {
		case CertValid:
			to := "an unknown date" // (an answer without it: not this Caddy's)
			if c.NotAfter != nil {
				to = c.NotAfter.Format("2006-01-02")
			}
			parts = append(parts, fmt.Sprintf("%s: valid to %s (%s)", c.Name, to, c.Issuer))
		default:
			ok = false
			parts = append(parts, c.Name+": "+c.State)
		}
	}
	return strings.Join(parts, "; "), ok
}

// ddnsColumn is the DDNS column: the names, marked when nothing is written.
func ddnsColumn(names []string, dryRun bool) string {
	if dryRun && len(names) > 0 {
		return orDash(names) + " (dry_run: not written)"
	}
	return orDash(names)
}

func orDash(list []string) string {
	if len(list) == 0 {
		return "-"
	}
	return strings.Join(list, ",")
}
