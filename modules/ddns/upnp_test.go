package ddns

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
