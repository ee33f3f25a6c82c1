package ddns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeIGD is a router speaking UPnP IGD: its device description and the
// WANIPConnection:1 service's GetExternalIPAddress action.
func fakeIGD(t *testing.T, external string) string {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/desc.xml":
			fmt.Fprintf(w, `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
 <specVersion><major>1</major><minor>0</minor></specVersion>
 <URLBase>%s/</URLBase>
 <device>
  <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
  <friendlyName>Test gateway</friendlyName><UDN>uuid:igd</UDN>
  <deviceList><device>
   <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:wan</UDN>
   <deviceList><device>
    <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:conn</UDN>
    <serviceList><service>
     <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
     <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
     <controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL><SCPDURL>/scpd.xml</SCPDURL>
    </service></serviceList>
   </device></deviceList>
  </device></deviceList>
 </device>
</root>`, srv.URL)
		case "/ctl":
			body, _ := io.ReadAll(r.Body)
			if !strings.Contains(r.Header.Get("SOAPAction"), "WANIPConnection:1#GetExternalIPAddress") || !strings.Contains(string(body), "GetExternalIPAddress") {
				t.Errorf("unexpected SOAP call %q: %s", r.Header.Get("SOAPAction"), body)
			}
			w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
			fmt.Fprintf(w, `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>
<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>%s</NewExternalIPAddress></u:GetExternalIPAddressResponse>
</s:Body></s:Envelope>`, external)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/desc.xml"
}

func TestUPnPSource(t *testing.T) {
	ctx := context.Background()
	app := &App{IPSources: []IPSource{{Source: "upnp", URL: fakeIGD(t, "203.0.113.44")}}}
	if ip, err := app.detect(ctx, "ipv4"); err != nil || ip.String() != "203.0.113.44" {
		t.Fatalf("upnp: %v %v", ip, err)
	}
	// a router that is itself behind carrier NAT says so
	app.IPSources = []IPSource{{Source: "upnp", URL: fakeIGD(t, "100.80.3.4")}}
	if _, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "carrier NAT") {
		t.Errorf("a CGNAT external address: %v", err)
	}
	// no gateway at that address
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	app.IPSources = []IPSource{{Source: "upnp", URL: dead.URL + "/desc.xml"}}
	if _, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "UPnP") {
		t.Errorf("no gateway: %v", err)
	}
}

// igdDescription is a gateway's device description with one
// WANIPConnection:1 service; urlBase and control are written as given.
func igdDescription(urlBase, control string) string {
	base := ""
	if urlBase != "" {
		base = "<URLBase>" + urlBase + "</URLBase>"
	}
	return `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">` + base + `
 <device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><UDN>uuid:igd</UDN>
  <serviceList><service>
   <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
   <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
   <controlURL>` + control + `</controlURL>
  </service></serviceList>
 </device>
</root>`
}

// soapReply is GetExternalIPAddress's answer.
func soapReply(ip string) string {
	return `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>` + ip + `</NewExternalIPAddress></u:GetExternalIPAddressResponse>
</s:Body></s:Envelope>`
}

// hostServer is an HTTP server listening on the loopback address ip (any
// of 127/8), counting the requests it gets.
type hostServer struct {
	*httptest.Server
	hits atomic.Int64
}

func serveOn(t *testing.T, ip string, handler func(srv *hostServer, w http.ResponseWriter, r *http.Request)) *hostServer {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listening on %s: %v", ip, err)
	}
	hs := &hostServer{}
	hs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.hits.Add(1)
		handler(hs, w, r)
	}))
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return hs
}

// gateway serves a description at /desc.xml whose service is controlled at
// /ctl on itself, answering external.
func gateway(t *testing.T, ip, external string) *hostServer {
	return serveOn(t, ip, func(srv *hostServer, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/desc.xml":
			fmt.Fprint(w, igdDescription("", "/ctl"))
		case "/ctl":
			fmt.Fprint(w, soapReply(external))
		default:
			http.NotFound(w, r)
		}
	})
}

// ssdpAnswer is one answer the fake network sends to a search: from the
// address, naming the description location.
type ssdpAnswer struct {
	from, location string
}

// fakeSSDP stands for the multicast group: it takes one search and has
// each answer sent from its own address, in order. It returns where the
// search goes and the search it got.
func fakeSSDP(t *testing.T, answers ...ssdpAnswer) (netip.AddrPort, <-chan string) {
	t.Helper()
	group, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { group.Close() })
	senders := map[string]*net.UDPConn{}
	for _, a := range answers {
		if senders[a.from] == nil {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(a.from)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			senders[a.from] = c
		}
	}
	searches := make(chan string, 1)
	go func() {
		buf := make([]byte, 2048)
		n, searcher, err := group.ReadFromUDP(buf)
		if err != nil {
			return
		}
		searches <- string(buf[:n])
		for _, a := range answers {
			msg := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:x\r\nEXT:\r\nLOCATION: " + a.location + "\r\n\r\n"
			senders[a.from].WriteToUDP([]byte(msg), searcher)
		}
	}()
	return group.LocalAddr().(*net.UDPAddr).AddrPort(), searches
}

func gatewayIs(ip string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr(ip)}, nil }
}

// On a home network anything can answer a discovery: only the default
// gateway's answer, naming a description on the gateway, is taken.
func TestUPnPDiscoveryTakesOnlyTheGateway(t *testing.T) {
	router := gateway(t, "127.0.0.1", "203.0.113.44")
	intruder := gateway(t, "127.0.0.2", "198.51.100.66")
	tests := []struct {
		name    string
		answers []ssdpAnswer
		want    string // the address taken, or "" for none
		wantErr string
	}{
		{"the intruder answers first", []ssdpAnswer{
			{"127.0.0.2", intruder.URL + "/desc.xml"},
			{"127.0.0.2", router.URL + "/desc.xml"}, // naming the router's URL does not make it the router
			{"127.0.0.1", router.URL + "/desc.xml"},
		}, "203.0.113.44", ""},
		{"only the intruder answers", []ssdpAnswer{
			{"127.0.0.2", intruder.URL + "/desc.xml"},
		}, "", "127.0.0.2 is not the default gateway"},
		{"the gateway's answer names another host", []ssdpAnswer{
			{"127.0.0.1", intruder.URL + "/desc.xml"},
		}, "", "named a description on another host"},
		{"the gateway's answer names no http URL", []ssdpAnswer{
			{"127.0.0.1", "file:///etc/shadow"},
		}, "", "named no http description URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			intruder.hits.Store(0)
			group, searches := fakeSSDP(t, tt.answers...)
			u := upnpClient{group: group, gateways: gatewayIs("127.0.0.1"), http: routerHTTPClient(), wait: 500 * time.Millisecond}
			ips, err := u.externalIPs(context.Background(), "")
			search := <-searches
			if !strings.HasPrefix(search, "M-SEARCH * HTTP/1.1\r\n") || !strings.Contains(search, `MAN: "ssdp:discover"`) || !strings.Contains(search, "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1") {
				t.Errorf("search: %q", search)
			}
			if tt.want != "" {
				if err != nil || len(ips) != 1 || ips[0].String() != tt.want {
					t.Fatalf("got %v, %v; want %s", ips, err, tt.want)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "ip_source upnp http://") {
					t.Fatalf("got %v, %v; want an error with %q and the fix", ips, err, tt.wantErr)
				}
			}
			if n := intruder.hits.Load(); n != 0 {
				t.Errorf("the intruder was asked %d times", n)
			}
		})
	}
}

func TestUPnPDiscoveryWithoutGateway(t *testing.T) {
	u := upnpClient{group: netip.MustParseAddrPort("127.0.0.1:9"), gateways: func() ([]netip.Addr, error) { return nil, nil }, http: routerHTTPClient()}
	if _, err := u.externalIPs(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "no IPv4 default gateway") {
		t.Fatalf("no gateway: %v", err)
	}
}

// Nothing a router's description says can send Caddy to another host (its
// own admin API, say), and its replies are bounded.
func TestUPnPRouterCannotSendCaddyElsewhere(t *testing.T) {
	admin := serveOn(t, "127.0.0.2", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, soapReply("198.51.100.66"))
	})
	// a server on the router's own address, on another port
	local := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, soapReply("198.51.100.67"))
	})
	big := strings.Repeat("x", upnpReplyLimit+1)
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		wantErr string
	}{
		{"an absolute control URL on another host", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, igdDescription("", admin.URL+"/stop"))
		}, "not with that scheme, host"},
		{"a URLBase on another host", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, igdDescription(admin.URL+"/", "/stop"))
		}, "not with that scheme, host"},
		{"a control URL of another scheme", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, igdDescription("", "file:///stop"))
		}, "not with that scheme, host"},
		{"a redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, admin.URL+"/desc.xml", http.StatusFound)
		}, "not followed"},
		{"a description too large", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, igdDescription("", "/ctl")[:50])
			for i := 0; i <= upnpDescriptionLimit/len(big); i++ {
				io.WriteString(w, big)
			}
		}, "description is larger than 64 KiB"},
		{"a control URL on another port of the host", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, igdDescription("", local.URL+"/stop"))
		}, "not with that scheme, host and port"},
		{"a reply too large", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/desc.xml" {
				fmt.Fprint(w, igdDescription("", "/ctl"))
				return
			}
			fmt.Fprint(w, soapReply(big))
		}, "larger than 64 KiB"},
		{"a reply that is no address", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/desc.xml" {
				fmt.Fprint(w, igdDescription("", "/ctl"))
				return
			}
			fmt.Fprint(w, soapReply("not-an-ip"))
		}, `"not-an-ip" is not an IP address`},
		{"no WAN service", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, strings.ReplaceAll(igdDescription("", "/ctl"), "WANIPConnection", "Layer3Forwarding"))
		}, "no WAN connection service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admin.hits.Store(0)
			local.hits.Store(0)
			router := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) { tt.handler(w, r) })
			u := upnpClient{gateways: gatewayIs("127.0.0.1"), http: routerHTTPClient()}
			ips, err := u.externalIPs(context.Background(), router.URL+"/desc.xml")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, %v; want an error with %q", ips, err, tt.wantErr)
			}
			if n := admin.hits.Load() + local.hits.Load(); n != 0 {
				t.Errorf("the other host or port was sent %d requests", n)
			}
		})
	}
}

// A description listing hundreds of services has at most three asked,
// and the error stays short.
func TestUPnPManyServices(t *testing.T) {
	for _, control := range []string{"/ctl", "http://127.0.0.2:9/ctl"} {
		t.Run(control, func(t *testing.T) {
			var controls atomic.Int64
			router := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/desc.xml" {
					one := igdDescription("", control)
					i, j := strings.Index(one, "<service>"), strings.Index(one, "</service>")+len("</service>")
					fmt.Fprint(w, one[:i]+strings.Repeat(one[i:j], 200)+one[j:])
					return
				}
				controls.Add(1)
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprint(w, strings.Repeat("no ", 5000))
			})
			u := upnpClient{http: routerHTTPClient()}
			_, err := u.externalIPs(context.Background(), router.URL+"/desc.xml")
			if err == nil || !strings.Contains(err.Error(), "did not give its external address") {
				t.Fatalf("got %v", err)
			}
			if n := controls.Load(); n > upnpMaxServices {
				t.Errorf("%d services asked, want at most %d", n, upnpMaxServices)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("an error of %d bytes", len(err.Error()))
			}
		})
	}
}

// Routers pad their URLs with white space.
func TestUPnPPaddedControlURL(t *testing.T) {
	router := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/desc.xml" {
			fmt.Fprint(w, igdDescription("", "\n   /ctl\n  "))
			return
		}
		fmt.Fprint(w, soapReply("203.0.113.44"))
	})
	u := upnpClient{http: routerHTTPClient()}
	if ips, err := u.externalIPs(context.Background(), router.URL+"/desc.xml"); err != nil || len(ips) != 1 || ips[0].String() != "203.0.113.44" {
		t.Fatalf("got %v, %v", ips, err)
	}
}

// A configured description URL names the router by its address over
// http; a name only over https, where the certificate vouches for it.
func TestDescriptionURL(t *testing.T) {
	for _, in := range []string{"http://192.168.1.1:5000/rootDesc.xml", "http://192.168.1.1/rootDesc.xml", "http://[fe80::1%25eth0]:5000/d.xml",
		"https://router.example/desc.xml"} { // the certificate names it
		if got, err := descriptionURL(in); err != nil || got.String() != in {
			t.Errorf("descriptionURL(%s) = %v, %v; want it as it is", in, got, err)
		}
	}
	// a name over http: any device that answers mDNS for router.local
	// would choose the address the records get
	for _, in := range []string{"http://router.local:5000/rootDesc.xml", "http://localhost:5000/rootDesc.xml"} {
		if _, err := descriptionURL(in); err == nil || !strings.Contains(err.Error(), "give its address, like http://192.168.1.1:5000/rootDesc.xml") {
			t.Errorf("descriptionURL(%s): %v", in, err)
		}
		if err := (IPSource{Source: "upnp", URL: in}).check(); err == nil {
			t.Errorf("ip_source upnp %s passed the config's check", in)
		}
	}
	for _, bad := range []string{"ftp://192.168.1.1/d.xml", "/rootDesc.xml", "http://[::1/d.xml"} {
		if _, err := descriptionURL(bad); err == nil {
			t.Errorf("descriptionURL(%s) took it", bad)
		}
	}
}

// A router that does not answer does not hold the source beyond the
// client's timeout.
func TestUPnPRouterThatDoesNotAnswer(t *testing.T) {
	release := make(chan struct{})
	router := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/desc.xml" {
			fmt.Fprint(w, igdDescription("", "/ctl"))
			return
		}
		<-release
	})
	defer close(release)
	client := routerHTTPClient()
	client.Timeout = 300 * time.Millisecond
	u := upnpClient{http: client}
	start := time.Now()
	_, err := u.externalIPs(context.Background(), router.URL+"/desc.xml")
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a control call that never answers: %v after %s", err, time.Since(start))
	}
}

func TestParseRoutes(t *testing.T) {
	const table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" + // default via 192.168.1.1
		"eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n" + // the LAN, no gateway
		"wg0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n" + // default on a link, no gateway
		"eth1\t00000000\t0100000A\t0002\t0\t0\t200\t00000000\t0\t0\t0\n" + // not up
		"eth0\t0000000A\t0201A8C0\t0003\t0\t0\t100\t000000FF\t0\t0\t0\n" + // 10/8 via 192.168.1.2: not default
		"eth2\t00000000\t0101A8C0\t0003\t0\t0\t300\t00000000\t0\t0\t0\n" + // the same gateway again
		"eth3\t00000000\tzz\t0003\t0\t0\t300\t00000000\t0\t0\t0\n" // garbage
	got := parseRoutes([]byte(table))
	if len(got) != 1 || got[0].String() != "192.168.1.1" {
		t.Fatalf("gateways %v, want [192.168.1.1]", got)
	}
}

// What gatewayLocation takes is always an http URL on the host that sent
// the answer, and that host a gateway.
func FuzzGatewayLocation(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"), "192.168.1.1")
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://[::ffff:192.168.1.1]/d\r\n\r\n"), "192.168.1.1")
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://evil@192.168.1.1@10.0.0.1/\r\n\r\n"), "192.168.1.1")
	f.Fuzz(func(t *testing.T, datagram []byte, fromText string) {
		from, err := netip.ParseAddr(fromText)
		if err != nil {
			return
		}
		gateways := []netip.Addr{netip.MustParseAddr("192.168.1.1")}
		loc, err := gatewayLocation(datagram, from.Unmap(), gateways)
		if err != nil {
			return
		}
		host, perr := netip.ParseAddr(loc.Hostname())
		if loc.Scheme != "http" || perr != nil || host.Unmap() != from.Unmap() || !containsAddr(gateways, host.Unmap()) {
			t.Fatalf("took %s from %s", loc, from)
		}
	})
}

// An http source follows a redirect on its own host only: an echo service
// cannot send Caddy to another (its admin API on loopback, say).
func TestHTTPSourceRedirects(t *testing.T) {
	other := serveOn(t, "127.0.0.2", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "198.51.100.66")
	})
	samePort := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "198.51.100.67")
	})
	echo := serveOn(t, "127.0.0.1", func(_ *hostServer, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/elsewhere":
			http.Redirect(w, r, other.URL+"/", http.StatusFound)
		case "/moved":
			http.Redirect(w, r, "/ip", http.StatusMovedPermanently)
		case "/ip":
			fmt.Fprint(w, "203.0.113.44\n")
		case "/port":
			http.Redirect(w, r, samePort.URL+"/", http.StatusFound)
		case "/huge-elsewhere":
			http.Redirect(w, r, other.URL+"/"+strings.Repeat("a", 60<<10), http.StatusFound)
		case "/unparsable":
			w.Header()["Location"] = []string{"http://[::1" + strings.Repeat("a", 60<<10)}
			w.WriteHeader(http.StatusFound)
		case "/big-header":
			w.Header().Set("X-Padding", strings.Repeat("a", 1<<20))
			fmt.Fprint(w, "203.0.113.44\n")
		}
	})
	ctx := context.Background()
	app := &App{IPSources: []IPSource{{Source: "http", URL: echo.URL + "/moved"}}}
	if ip, err := app.detect(ctx, "ipv4"); err != nil || ip.String() != "203.0.113.44" {
		t.Fatalf("a redirect on the same host: %v %v", ip, err)
	}
	app.IPSources = []IPSource{{Source: "http", URL: echo.URL + "/elsewhere"}}
	if ip, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "redirected to another host") {
		t.Fatalf("a redirect to another host: %v %v", ip, err)
	}
	if n := other.hits.Load(); n != 0 {
		t.Errorf("the other host was sent %d requests", n)
	}
	// the same host on another port (an app, the admin API) is elsewhere too
	app.IPSources = []IPSource{{Source: "http", URL: echo.URL + "/port"}}
	if ip, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "redirected to another port") {
		t.Fatalf("a redirect to another port: %v %v", ip, err)
	}
	if n := samePort.hits.Load(); n != 0 {
		t.Errorf("the other port was sent %d requests", n)
	}
	// a hostile service's Location is not quoted whole: every check logs
	// the error and each record keeps it
	for _, path := range []string{"/huge-elsewhere", "/unparsable"} {
		app.IPSources = []IPSource{{Source: "http", URL: echo.URL + path}}
		_, err := app.detect(ctx, "ipv4")
		if err == nil || len(err.Error()) > 1024 {
			t.Errorf("a 60 KiB Location (%s): an error of %d bytes", path, len(fmt.Sprint(err)))
		}
	}
	// a header larger than any echo service needs
	app.IPSources = []IPSource{{Source: "http", URL: echo.URL + "/big-header"}}
	if _, err := app.detect(ctx, "ipv4"); err == nil || len(err.Error()) > 1024 {
		t.Errorf("a 1 MiB header: %v", err)
	}
}

func TestTruncate(t *testing.T) {
	for in, want := range map[string]string{
		"short":                        "short",
		"exactly ten":                  "exactly te…",
		"héllo wörld, ünïcode":         "héllo wö…", // 10 bytes: the ö whole
		"bad \xff byte":                "bad  byte",
		"hé\u00e9\u00e9\u00e9\u00e9xx": "hé\u00e9\u00e9\u00e9…", // never half a character
	} {
		if got := truncate(in, 10); got != want {
			t.Errorf("truncate(%q, 10) = %q, want %q", in, got, want)
		}
	}
}

// TestSameHostKeepsTheScheme: a description fetched over https cannot
// send the control request, whose answer is the address published, to
// plain http on the same host and port (where anyone on the LAN could
// answer it); the description's own scheme, host and port are taken.
func TestSameHostKeepsTheScheme(t *testing.T) {
	parse := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		loc, target string
		ok          bool
	}{
		{"https://router.lan/desc.xml", "https://router.lan/ctl", true},
		{"http://192.168.1.1:5000/desc.xml", "http://192.168.1.1:5000/ctl", true},
		{"https://router.lan/desc.xml", "http://router.lan:443/ctl", false},
		{"http://192.168.1.1:5000/desc.xml", "https://192.168.1.1:5000/ctl", false},
		{"http://192.168.1.1:5000/desc.xml", "ftp://192.168.1.1:5000/ctl", false},
	} {
		if err := sameHost(parse(tc.loc), parse(tc.target), false); (err == nil) != tc.ok {
			t.Errorf("description %s, control %s: %v", tc.loc, tc.target, err)
		}
	}
}
