package ddns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

// IPSource is one way to learn this machine's public IP.
type IPSource struct {
	// Source is static, command, http, interface or upnp.
	Source string `json:"source"`
	// IP is the address of a static source.
	IP string `json:"ip,omitempty"`
	// Command is the program and arguments of a command source; it prints
	// the IP on its standard output.
	Command []string `json:"command,omitempty"`
	// URL of an http source, answering the caller's IP in plain text; for
	// a upnp source, the router's device description (found by SSDP
	// discovery when empty).
	URL string `json:"url,omitempty"`
	// Interface is the network interface of an interface source.
	Interface string `json:"interface,omitempty"`
	// Timeout bounds an http or command source. Default: 15s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

func (s IPSource) check() error {
	switch s.Source {
	case "static":
		if _, err := netip.ParseAddr(s.IP); err != nil {
			return fmt.Errorf("static %q is not an IP address", s.IP)
		}
	case "command":
		if len(s.Command) == 0 {
			return errors.New("command needs a program, like `ip_source command curl -s https://ifconfig.me`")
		}
	case "http":
		if u, err := url.Parse(s.URL); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("http %q is not an http(s) URL, like https://api.ipify.org", s.URL)
		} else if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return fmt.Errorf("http %s is plain http: anyone on the way (a device on the LAN, any network between) could answer another address, and the names would point there; use https://%s", u.Redacted(), u.Host)
		}
	case "interface":
		if s.Interface == "" {
			return errors.New("interface needs an interface name, like `ip_source interface eth0`")
		}
	case "upnp":
		if s.URL != "" {
			if _, err := descriptionURL(s.URL); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown ip_source %q; use static, command, http, interface or upnp", s.Source)
	}
	return nil
}

// errCarrierNAT explains a CGNAT address.
var errCarrierNAT = errors.New("this connection is behind carrier NAT (a 100.64.0.0/10 address): port forwarding cannot work, ask your provider for a public IP or use a tunnel")

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// notRoutable are special-purpose ranges netip's predicates let through:
// "this network", reserved and broadcast, benchmarking, IETF protocol
// assignments (192.0.0.2 is the WAN address a DS-Lite router reports),
// the retired 6to4 relay anycast, IPv4-compatible and IPv4-translated
// IPv6, NAT64's well-known and local prefixes (IPv4 addresses in
// disguise), discard-only, and the retired site-local IPv6 range.
var notRoutable = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("192.0.0.0/24"), netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("::/96"), netip.MustParsePrefix("::ffff:0:0:0/96"),
	netip.MustParsePrefix("64:ff9b::/96"), netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"), netip.MustParsePrefix("fec0::/10")}

// sixToFour is 6to4's prefix: such an address carries the IPv4 address it
// is reached through, which must be public itself.
var sixToFour = netip.MustParsePrefix("2002::/16")

// publicIP rejects addresses the internet cannot reach. An IPv4 address
// written as IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address it is.
func publicIP(ip netip.Addr) error {
	ip = ip.Unmap()
	switch {
	case ip.Zone() != "":
		return fmt.Errorf("%s is not a public address (it names a network interface)", ip)
	case cgnat.Contains(ip):
		return errCarrierNAT
	case ip.IsPrivate(), ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsUnspecified(),
		ip.IsMulticast(), ip.IsLinkLocalMulticast(), !ip.IsGlobalUnicast():
		return fmt.Errorf("%s is not a public address", ip)
	}
	for _, p := range notRoutable {
		if p.Contains(ip) {
			return fmt.Errorf("%s is not a public address (%s is reserved)", ip, p)
		}
	}
	if sixToFour.Contains(ip) {
		b := ip.As16()
		if err := publicIP(netip.AddrFrom4([4]byte(b[2:6]))); err != nil {
			return fmt.Errorf("%s is not a public address (6to4 through %s: %w)", ip, netip.AddrFrom4([4]byte(b[2:6])), err)
		}
	}
	return nil
}

func wantVersion(ip netip.Addr, version string) bool {
	return version == "ipv6" && ip.Is6() && !ip.Is4In6() || version == "ipv4" && (ip.Is4() || ip.Is4In6())
}

// vouchedByTheNetwork reports whether a source's answer is only what the
// local network says: a router's UPnP answer (whoever holds the default
// gateway's address on the network gives it) or an interface's address
// (any device on the network may announce an IPv6 prefix, and the
// machine takes an address in it).
func vouchedByTheNetwork(source string) bool { return source == "upnp" || source == "interface" }

// confirms reports whether an http source's answer confirms local, the
// answer of a source the network vouches for: the same address, or for
// IPv6 one in the same /64 (the machine's connections to the service may
// leave from a temporary address of its prefix, privacy extensions, while
// the name gets its stable one).
func confirms(answer, local netip.Addr) bool {
	if answer == local {
		return true
	}
	if !answer.Is6() || !local.Is6() || answer.Is4In6() || local.Is4In6() {
		return false
	}
	a, _ := answer.Prefix(64)
	l, _ := local.Prefix(64)
	return a == l
}

// detect asks the sources, in order, for a public IP of the version. With
// more than one http source, two of them must agree; with any http
// source, the answer of a source only the local network vouches for
// (vouchedByTheNetwork) is taken when one of them agrees, so that a device
// on the network cannot choose where the name points (and get its
// certificates).
func (a *App) detect(ctx context.Context, version string) (netip.Addr, error) {
	var errs []error
	httpVotes := map[netip.Addr]int{}
	httpSources := 0
	for _, src := range a.IPSources {
		if src.Source == "http" {
			httpSources++
		}
	}
	var local netip.Addr // the first answer of a source the network vouches for, to confirm
	localSource := ""
	for _, src := range a.IPSources {
		ips, err := src.lookup(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s source: %w", src.Source, err))
			continue
		}
		var ip netip.Addr
		var reject error
		for _, candidate := range ips {
			if !wantVersion(candidate, version) {
				continue
			}
			if err := publicIP(candidate); err != nil {
				reject = err
				continue
			}
			ip = candidate.Unmap()
			break
		}
		if !ip.IsValid() {
			// the machine's or router's own view of its address (upnp,
			// interface, static, command) is a diagnosis; an echo service
			// sees the public side of carrier NAT, so one answering
			// 100.64/10 is wrong, and one wrong source vetoes nothing
			if errors.Is(reject, errCarrierNAT) && src.Source != "http" {
				return netip.Addr{}, reject
			}
			if reject == nil {
				reject = fmt.Errorf("no %s address", version)
			}
			errs = append(errs, fmt.Errorf("%s source: %w", src.Source, reject))
			continue
		}
		switch {
		case vouchedByTheNetwork(src.Source) && httpSources > 0:
			if !local.IsValid() {
				local, localSource = ip, src.Source
				for vote := range httpVotes {
					if confirms(vote, local) {
						return local, nil // an http source said so before
					}
				}
			}
			continue
		case src.Source == "http" && local.IsValid() && confirms(ip, local):
			return local, nil
		case src.Source == "http" && httpSources > 1:
			httpVotes[ip]++
			if httpVotes[ip] >= 2 {
				return ip, nil
			}
			continue
		case src.Source == "http" && local.IsValid():
			httpVotes[ip]++
			continue // one http source that disagrees with the network's answer
		}
		return ip, nil
	}
	if local.IsValid() {
		if len(httpVotes) == 0 {
			return netip.Addr{}, fmt.Errorf("no public %s address: the %s source answered %s, but no http source answered to confirm it (an address only the local network vouches for is taken when one does: a device on the network could answer in the router's place, or announce an IPv6 prefix of its own): %w",
				version, localSource, local, errors.Join(errs...))
		}
		why := "a device on the local network may be announcing a prefix of its own"
		if localSource == "upnp" {
			why = "a device on the local network may be answering in the router's place; or the router is itself behind another NAT, whose address the http sources see"
		}
		return netip.Addr{}, fmt.Errorf("no public %s address: the %s source answered %s, but the http sources %s (%s): find out which is right, and list only the sources that tell it",
			version, localSource, local, describeVotes(httpVotes), why)
	}
	switch {
	case httpSources > 1 && len(httpVotes) == 1:
		errs = append(errs, fmt.Errorf("only one of the %d http sources answered with an address; with several, two must agree (list one http source to trust it alone)", httpSources))
	case httpSources > 1 && len(httpVotes) > 1:
		errs = append(errs, errors.New("the http sources do not agree"))
	}
	return netip.Addr{}, fmt.Errorf("no public %s address: %w", version, errors.Join(errs...))
}

// describeVotes lists the addresses the http sources answered.
func describeVotes(votes map[netip.Addr]int) string {
	var list []string
	for ip, n := range votes {
		list = append(list, fmt.Sprintf("%s (%d)", ip, n))
	}
	slices.Sort(list)
	return "answered " + strings.Join(list, ", ")
}

// lookup returns the addresses a source reports.
func (s IPSource) lookup(ctx context.Context) ([]netip.Addr, error) {
	timeout := time.Duration(s.Timeout)
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch s.Source {
	case "static":
		ip, err := netip.ParseAddr(s.IP)
		return []netip.Addr{ip}, err
	case "command":
		cmd := exec.CommandContext(ctx, s.Command[0], s.Command[1:]...)
		out, stderr := &firstBytes{limit: sourceOutputLimit}, &firstBytes{limit: 200}
		cmd.Stdout, cmd.Stderr = out, stderr
		// its own process group, ended with it: nothing it starts outlives
		// the check (a process left behind with the output open would
		// otherwise hold the source until it ended, and stay)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Env = commandEnv(os.Environ())
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what it left behind, if anything
		}
		if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
			if text := strings.TrimSpace(string(stderr.b)); text != "" {
				err = fmt.Errorf("%w: %s", err, text)
			}
			return nil, fmt.Errorf("%s: %w", s.Command[0], err) // its program only: arguments may hold a token
		}
		if out.over {
			return nil, fmt.Errorf("%s printed more than %d bytes: it should print only the address", s.Command[0], sourceOutputLimit)
		}
		return parseIPs(string(out.b))
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
		if err != nil {
			return nil, err
		}
		resp, err := ipEchoClient.Do(req) // the app redacts a token in the URL
		if err != nil {
			var uerr *url.Error
			if errors.As(err, &uerr) {
				uerr.URL = s.URL // Go puts a refused redirect's Location here, as the service sent it
			}
			return nil, errors.New(truncate(err.Error(), maxSourceError))
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, sourceOutputLimit+1))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s answered %s", s.URL, truncate(resp.Status, 64))
		}
		if len(body) > sourceOutputLimit {
			return nil, fmt.Errorf("%s answered more than %d bytes: it should answer only the address", s.URL, sourceOutputLimit)
		}
		return parseIPs(string(body))
	case "upnp":
		return routerUPnP.externalIPs(ctx, s.URL)
	case "interface":
		ips, err := interfaceAddrs(s.Interface)
		if err != nil {
			return nil, err
		}
		return stableAddrs(ips, ipv6Flags())
	}
	return nil, fmt.Errorf("unknown source %q", s.Source)
}

// interfaceAddrs returns the addresses of the network interface name.
var interfaceAddrs = func(name string) ([]netip.Addr, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, addr := range addrs {
		if prefix, err := netip.ParsePrefix(addr.String()); err == nil {
			ips = append(ips, prefix.Addr())
		}
	}
	return ips, nil
}

// IPv6 address flags the kernel lists in /proc/net/if_inet6 (IFA_F_*).
const (
	ifaTemporary  = 0x01 // a privacy address, replaced every day or so
	ifaDADFailed  = 0x08 // another host on the link has it
	ifaDeprecated = 0x20 // its prefix's preferred lifetime is over
	ifaTentative  = 0x40 // not yet checked to be unique on the link
)

// ipv6Flags reads the flags of the machine's IPv6 addresses (none known
// when /proc/net/if_inet6 cannot be read).
var ipv6Flags = func() map[netip.Addr]uint64 {
	// (through /proc/self: the unit's ProcSubset=pid hides /proc/net)
	data, err := os.ReadFile("/proc/self/net/if_inet6")
	if err != nil {
		return nil
	}
	return parseIPv6Flags(string(data))
}

// parseIPv6Flags reads /proc/net/if_inet6: per line, the address in 32
// hex digits, the interface's index, the prefix length, the scope and the
// flags (in hex), and the interface's name.
func parseIPv6Flags(text string) map[netip.Addr]uint64 {
	flags := map[netip.Addr]uint64{}
	for line := range strings.Lines(text) {
		fields := strings.Fields(line)
		if len(fields) < 6 || len(fields[0]) != 32 {
			continue
		}
		var b [16]byte
		ok := true
		for i := range b {
			n, err := strconv.ParseUint(fields[0][2*i:2*i+2], 16, 8)
			if err != nil {
				ok = false
				break
			}
			b[i] = byte(n)
		}
		f, err := strconv.ParseUint(fields[4], 16, 32)
		if ok && err == nil {
			flags[netip.AddrFrom16(b)] = f
		}
	}
	return flags
}

// stableAddrs keeps, of an interface's addresses, those a name may point
// to: not an IPv6 address that is temporary (privacy extensions: it
// changes every day), deprecated, tentative or a duplicate. Public IPv6
// addresses left in more than one /64 are refused: which one the name
// should have cannot be told, and any device on the network may announce
// a prefix (its own, on the internet) that the machine takes an address
// in.
func stableAddrs(ips []netip.Addr, flags map[netip.Addr]uint64) ([]netip.Addr, error) {
	var kept []netip.Addr
	var prefixes []netip.Prefix
	for _, ip := range ips {
		if ip.Is6() && !ip.Is4In6() {
			if flags[ip]&(ifaTemporary|ifaDeprecated|ifaTentative|ifaDADFailed) != 0 {
				continue
			}
			if publicIP(ip) == nil {
				if p, _ := ip.Prefix(64); !slices.Contains(prefixes, p) {
					prefixes = append(prefixes, p)
				}
			}
		}
		kept = append(kept, ip)
	}
	if len(prefixes) > 1 {
		list := make([]string, len(prefixes))
		for i, p := range prefixes {
			list[i] = p.String()
		}
		return nil, fmt.Errorf("the interface has public IPv6 addresses in %d prefixes (%s): which one the name should have cannot be told, and a device on the network may have announced one of them; list an http source too (the address it confirms is taken), or a static address", len(prefixes), strings.Join(list, ", "))
	}
	return kept, nil
}

// commandEnv is the environment of a command source, from Caddy's: what
// finds programs and reaches the network (PATH, HOME, the locale, proxy
// settings), never the rest, which holds the DNS providers' keys and
// tokens (the unit's EnvironmentFile) and the admin API's address.
func commandEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(name) {
		case "path", "home", "lang", "lc_all", "tz", "http_proxy", "https_proxy", "no_proxy", "all_proxy":
			out = append(out, kv)
		}
	}
	return out
}

// maxSourceError bounds the text of a source's error: it is logged at
// every check and kept in each record's status, and a hostile echo
// service chooses what Go quotes of its answer (a redirect's Location).
const maxSourceError = 512

// ipEchoClient fetches an http source. It follows a redirect only on the
// source's own host and port (or to https on 443 from http): an echo
// service that sends Caddy elsewhere, to its own admin API or an app on
// loopback say, is refused instead of having the reply's first bytes
// quoted in an error. A response's header is bounded like its body.
var ipEchoClient = &http.Client{
	Transport: func() http.RoundTripper {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxResponseHeaderBytes = 64 << 10
		// never through HTTPS_PROXY or HTTP_PROXY: every echo service
		// would see the proxy's address, and agree on it
		t.Proxy = nil
		return t
	}(),
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		from := via[len(via)-1].URL
		to := truncate(req.URL.Redacted(), 200)
		switch {
		case len(via) >= 5:
			return errors.New("more than 5 redirects")
		case !strings.EqualFold(req.URL.Hostname(), via[0].URL.Hostname()):
			return fmt.Errorf("redirected to another host (%s), which is not followed: give that service's URL instead", to)
		case from.Scheme == "https" && req.URL.Scheme != "https":
			return fmt.Errorf("redirected from https to %s, which is not followed: anyone on the way could answer that", to)
		case portOf(req.URL) != portOf(from) && !(from.Scheme == "http" && req.URL.Scheme == "https" && portOf(req.URL) == "443"):
			return fmt.Errorf("redirected to another port (%s), which is not followed: give that service's URL instead", to)
		}
		return nil
	},
}

// firstBytes keeps the first limit bytes written to it and drops the rest.
type firstBytes struct {
	b     []byte
	limit int
	over  bool // more was written
}

func (f *firstBytes) Write(p []byte) (int, error) {
	room := max(0, f.limit-len(f.b))
	if len(p) > room {
		f.over = true
	}
	f.b = append(f.b, p[:min(len(p), room)]...)
	return len(p), nil
}

// sourceOutputLimit bounds what a command or http source may answer: an
// address and some white space. A cut answer could end inside an address
// and publish another one.
const sourceOutputLimit = 4096

// parseIPs reads whitespace-separated IP addresses.
func parseIPs(text string) ([]netip.Addr, error) {
	var ips []netip.Addr
	for _, field := range strings.Fields(text) {
		if ip, err := netip.ParseAddr(field); err == nil {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no IP address in %q", truncate(text, 80))
	}
	return ips, nil
}

// truncate cuts s to at most n bytes, at a character's boundary, and
// makes it valid UTF-8.
func truncate(s string, n int) string {
	return strings.ToValidUTF8(textcut.Shorten(s, n), "")
}
