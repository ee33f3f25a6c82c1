package ddns

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/soap"
)

// The upnp source asks the router for its external address. Everything a
// router says is checked first, because on a home network anything can
// answer a discovery in its place (a guest's phone, a compromised camera):
//   - discovery takes only an answer whose description URL is on a default
//     gateway of this machine (and that came from it), so no other device
//     on the network can name the address the DNS records get. A device
//     that forges the gateway's address on its answer (UDP) can still pick
//     the port and path, but only on the gateway: Caddy's connection goes
//     to the real router;
//   - nothing in a description can send Caddy elsewhere: its control URLs
//     must be on the host and port of the description (one naming
//     http://127.0.0.1:2019/stop would otherwise have Caddy post to its own
//     admin API), with the description's scheme (one fetched over https
//     cannot send the answer that decides the address to plain http);
//     a host name in them is resolved for each request, like any URL;
//   - replies are bounded in size, number and time, redirects are not
//     followed, and no proxy from the environment is used.

const (
	// ssdpGroup is where SSDP discovery sends its search (UPnP Device
	// Architecture 1.1, 1.3.2).
	ssdpGroup = "239.255.255.250:1900"
	// ssdpWait is how long discovery listens for the gateway's answer.
	ssdpWait = 2 * time.Second
	// upnpDescriptionLimit bounds a device description (a router's is a
	// few KiB).
	upnpDescriptionLimit = 64 << 10
	// upnpMaxServices bounds how many WAN connection services are asked.
	upnpMaxServices = 3
	// upnpMaxErrors bounds the errors kept for the message, each cut to
	// upnpErrorBytes.
	upnpMaxErrors, upnpErrorBytes = 3, 200
	// upnpReplyLimit bounds a control (SOAP) reply.
	upnpReplyLimit = 64 << 10
	// upnpStepTimeout bounds each exchange with the router.
	upnpStepTimeout = 5 * time.Second
)

// upnpServices are the WAN connection services that know the external
// address, in the order they are asked.
var upnpServices = []string{
	"urn:schemas-upnp-org:service:WANIPConnection:1",
	"urn:schemas-upnp-org:service:WANIPConnection:2",
	"urn:schemas-upnp-org:service:WANPPPConnection:1",
}

// upnpSearchTargets are the device types discovery searches for.
var upnpSearchTargets = []string{
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
}

// upnpClient asks routers for their external address.
type upnpClient struct {
	// group is where the discovery search is sent.
	group netip.AddrPort
	// gateways returns this machine's default gateways: the only hosts
	// whose discovery answers are taken.
	gateways func() ([]netip.Addr, error)
	// http talks to the router.
	http *http.Client
	// wait is how long discovery listens for the gateway's answer.
	wait time.Duration
}

// routerUPnP is the client of the upnp source.
var routerUPnP = upnpClient{
	group:    netip.MustParseAddrPort(ssdpGroup),
	gateways: defaultGateways,
	http:     routerHTTPClient(),
	wait:     ssdpWait,
}

// routerHTTPClient is an HTTP client for talking to a router: no proxy, no
// redirects, bounded headers and time.
func routerHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // a router on the LAN is never reached through a proxy
			DialContext:            (&net.Dialer{Timeout: upnpStepTimeout}).DialContext,
			ResponseHeaderTimeout:  upnpStepTimeout,
			MaxResponseHeaderBytes: 64 << 10,
			DisableKeepAlives:      true,
		},
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			return fmt.Errorf("the router redirected to %s, which is not followed: give the final URL of its device description", req.URL.Redacted())
		},
		Timeout: upnpStepTimeout,
	}
}

// externalIPs asks the router for its external addresses: the router whose
// device description is at location, or the default gateway found by SSDP
// discovery when location is empty.
func (u upnpClient) externalIPs(ctx context.Context, location string) ([]netip.Addr, error) {
	var loc *url.URL
	discovered := location == ""
	if discovered {
		var err error
		if loc, err = u.discover(ctx); err != nil {
			return nil, err
		}
	} else {
		var err error
		if loc, err = descriptionURL(location); err != nil {
			return nil, err
		}
	}
	root, err := u.description(ctx, loc)
	if err != nil {
		return nil, err
	}
	var errs boundedErrors
	found, asked := 0, 0
	for _, urn := range upnpServices {
		for _, srv := range root.Device.FindService(urn) {
			found++
			if asked == upnpMaxServices || ctx.Err() != nil {
				break
			}
			if !srv.ControlURL.Ok {
				errs.add(fmt.Errorf("the router's %s service has no usable control URL (%q)", urn, truncate(srv.ControlURL.Str, 64)))
				continue
			}
			control := srv.ControlURL.URL
			if err := sameHost(loc, &control, discovered); err != nil {
				errs.add(err)
				continue
			}
			asked++
			text, err := u.getExternalIP(ctx, control, urn)
			if err != nil {
				errs.add(err)
				continue
			}
			ip, err := netip.ParseAddr(strings.TrimSpace(text))
			if err != nil {
				errs.add(fmt.Errorf("the router's external address %q is not an IP address", truncate(text, 64)))
				continue
			}
			return []netip.Addr{ip}, nil
		}
	}
	if found == 0 {
		return nil, fmt.Errorf("the router at %s has no WAN connection service (WANIPConnection or WANPPPConnection): is it the Internet gateway?", loc.Redacted())
	}
	if err := ctx.Err(); err != nil {
		errs.add(err)
	}
	return nil, fmt.Errorf("the router at %s did not give its external address: %w", loc.Redacted(), errs.join())
}

// boundedErrors keeps the first few errors, each cut short: a router's
// description may list thousands of services, each failing, and the error
// ends up in every record's status.
type boundedErrors struct {
	errs    []error
	dropped int
}

func (b *boundedErrors) add(err error) {
	if len(b.errs) == upnpMaxErrors {
		b.dropped++
		return
	}
	if text := err.Error(); len(text) > upnpErrorBytes {
		err = errors.New(truncate(text, upnpErrorBytes))
	}
	b.errs = append(b.errs, err)
}

func (b *boundedErrors) join() error {
	errs := b.errs
	if b.dropped > 0 {
		errs = append(errs[:len(errs):len(errs)], fmt.Errorf("and %d more", b.dropped))
	}
	return errors.Join(errs...)
}

// descriptionURL parses a configured description URL. Over http the
// router must be named by its address: a name can be answered for by any
// device on the network (router.local over mDNS, a rebinding DNS answer),
// which would then choose the "public" address the records get.
func descriptionURL(location string) (*url.URL, error) {
	loc, err := url.Parse(location)
	if err != nil || loc.Scheme != "http" && loc.Scheme != "https" || loc.Host == "" {
		return nil, fmt.Errorf("upnp %q is not the http URL of a gateway's device description, like http://192.168.1.1:5000/rootDesc.xml", location)
	}
	if _, err := netip.ParseAddr(loc.Hostname()); err != nil && loc.Scheme == "http" {
		return nil, fmt.Errorf("upnp %s names the router %s over plain http, which any device on the network could answer for: give its address, like http://192.168.1.1:5000/rootDesc.xml", loc.Redacted(), loc.Hostname())
	}
	return loc, nil // an address; or, over https, a name the certificate is checked against
}

// portOf is a URL's port, or its scheme's default.
func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// description fetches and reads the router's device description, and
// resolves its URLs.
func (u upnpClient) description(ctx context.Context, loc *url.URL) (*goupnp.RootDevice, error) {
	if loc.Scheme != "http" && loc.Scheme != "https" {
		return nil, fmt.Errorf("the device description %s is not an http(s) URL", loc.Redacted())
	}
	ctx, cancel := context.WithTimeout(ctx, upnpStepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := u.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no UPnP Internet gateway answered at %s (is UPnP enabled on the router?): %s", loc.Redacted(), truncate(err.Error(), upnpErrorBytes))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("no UPnP Internet gateway at %s: it answered %s", loc.Redacted(), truncate(resp.Status, 64))
	}
	body, err := readBounded(resp.Body, upnpDescriptionLimit, "the router's device description")
	if err != nil {
		return nil, err
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("the device description at %s is not one (%s)", loc.Redacted(), truncate(err.Error(), upnpErrorBytes))
	}
	root.Device.VisitServices(func(srv *goupnp.Service) { // as routers write them, padded
		srv.ControlURL.Str = strings.TrimSpace(srv.ControlURL.Str)
	})
	base := loc
	if root.URLBaseStr != "" {
		// UPnP 1.0's URLBase: relative URLs resolve against it; the
		// control URLs are checked once resolved, wherever it points
		if base, err = loc.Parse(strings.TrimSpace(root.URLBaseStr)); err != nil {
			return nil, fmt.Errorf("the device description at %s has a bad URLBase: %w", loc.Redacted(), err)
		}
	}
	root.SetURLBase(base)
	return root, nil
}

// getExternalIP asks one WAN connection service for its external address.
func (u upnpClient) getExternalIP(ctx context.Context, control url.URL, urn string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, upnpStepTimeout)
	defer cancel()
	client := soap.NewSOAPClient(control)
	client.HTTPClient = *u.http
	client.HTTPClient.Transport = boundedBodies{next: u.http.Transport, limit: upnpReplyLimit}
	var reply struct {
		NewExternalIPAddress string
	}
	if err := client.PerformActionCtx(ctx, urn, "GetExternalIPAddress", nil, &reply); err != nil {
		return "", err
	}
	return reply.NewExternalIPAddress, nil
}

// sameHost refuses a URL of the router's description that leads to
// another scheme, host or port than the description's own.
func sameHost(loc, target *url.URL, discovered bool) error {
	if target.Scheme != "http" && target.Scheme != "https" || !strings.EqualFold(target.Scheme, loc.Scheme) || !strings.EqualFold(target.Hostname(), loc.Hostname()) || portOf(target) != portOf(loc) {
		hint := ""
		if discovered {
			hint = " (a device that is not the router may have answered)"
		}
		return fmt.Errorf("the router's description at %s sends its control to %s, not with that scheme, host and port: refused%s", loc.Redacted(), truncate(target.Redacted(), 100), hint)
	}
	return nil
}

// discover finds the default gateway's device description by SSDP: the
// search goes to the multicast group, and only an answer from a default
// gateway of this machine, naming a description on that gateway, is taken.
func (u upnpClient) discover(ctx context.Context) (*url.URL, error) {
	gateways, err := u.gateways()
	if err != nil {
		return nil, fmt.Errorf("cannot read this machine's default gateway: %w", err)
	}
	if len(gateways) == 0 {
		return nil, errors.New("this machine has no IPv4 default gateway to ask over UPnP; give the router's device description: ip_source upnp http://<router>:<port>/<description>.xml")
	}
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return nil, fmt.Errorf("UPnP discovery: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(u.wait)); err != nil {
		return nil, fmt.Errorf("UPnP discovery: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	group := net.UDPAddrFromAddrPort(u.group)
	for _, st := range upnpSearchTargets {
		search := "M-SEARCH * HTTP/1.1\r\nHOST: " + ssdpGroup + "\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: " + st + "\r\n\r\n"
		if _, err := conn.WriteToUDP([]byte(search), group); err != nil {
			return nil, fmt.Errorf("UPnP discovery: sending the search to %s: %w", u.group, err)
		}
	}
	buf := make([]byte, 8<<10)
	var ignored []string
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() {
				break
			}
			return nil, fmt.Errorf("UPnP discovery: %w", err)
		}
		loc, err := gatewayLocation(buf[:n], from.Addr().Unmap(), gateways)
		if err != nil {
			if len(ignored) < 3 {
				ignored = append(ignored, err.Error())
			}
			continue
		}
		return loc, nil
	}
	msg := fmt.Sprintf("no UPnP Internet gateway answered from the default gateway (%s) within %s: is UPnP enabled on the router?", joinAddrs(gateways), u.wait)
	if len(ignored) > 0 {
		msg += " Answers ignored: " + strings.Join(ignored, "; ") + ". Only the default gateway is asked; if the router is another host, give its device description: ip_source upnp http://<router>:<port>/<description>.xml"
	}
	return nil, errors.New(msg)
}

// gatewayLocation reads an SSDP answer from the host from, and returns the
// description URL it names when both are a gateway's.
func gatewayLocation(datagram []byte, from netip.Addr, gateways []netip.Addr) (*url.URL, error) {
	if !containsAddr(gateways, from) {
		return nil, fmt.Errorf("%s is not the default gateway", from)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(datagram)), nil)
	if err != nil {
		return nil, fmt.Errorf("%s sent no SSDP answer", from)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", from, truncate(resp.Status, 64))
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Scheme != "http" || loc.Host == "" {
		return nil, fmt.Errorf("%s named no http description URL", from)
	}
	host, err := netip.ParseAddr(loc.Hostname())
	if err != nil || host.Unmap() != from {
		return nil, fmt.Errorf("%s named a description on another host (%s)", from, truncate(loc.Host, 64))
	}
	return loc, nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if b.Unmap() == a {
			return true
		}
	}
	return false
}

func joinAddrs(list []netip.Addr) string {
	s := make([]string, len(list))
	for i, a := range list {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// defaultGateways reads the IPv4 default routes' gateways from the kernel.
func defaultGateways() ([]netip.Addr, error) {
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil, err
	}
	return parseRoutes(data), nil
}

// parseRoutes reads /proc/net/route: the gateways of its default routes
// (destination and mask 0, RTF_UP and RTF_GATEWAY set).
func parseRoutes(data []byte) []netip.Addr {
	const rtfUp, rtfGateway = 0x1, 0x2
	var gateways []netip.Addr
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 16)
		if err != nil || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		// the kernel writes the address as a host-order (little-endian) word
		gw := netip.AddrFrom4([4]byte{raw[3], raw[2], raw[1], raw[0]})
		if gw.IsUnspecified() || containsAddr(gateways, gw) {
			continue
		}
		gateways = append(gateways, gw)
	}
	return gateways
}

// readBounded reads all of r, or fails when it holds more than limit bytes.
func readBounded(r io.Reader, limit int64, what string) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s is larger than %d KiB: refused", what, limit>>10)
	}
	return body, nil
}

// boundedBodies fails the reading of a response body past limit bytes.
type boundedBodies struct {
	next  http.RoundTripper
	limit int64
}

func (b boundedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, left: b.limit, limit: b.limit}
	return resp, nil
}

// boundedBody is a response body that fails once more than its limit has
// been read.
type boundedBody struct {
	io.ReadCloser
	left, limit int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("the router's reply is larger than %d KiB: refused", b.limit>>10)
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, fmt.Errorf("the router's reply is larger than %d KiB: refused", b.limit>>10)
	}
	return n, err
}
