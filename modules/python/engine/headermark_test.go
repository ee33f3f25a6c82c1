package engine

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

func TestHeaderMarkRestores(t *testing.T) {
	many := http.Header{}
	for i := 0; i < 20; i++ {
		many[fmt.Sprintf("X-Caddy-%d", i)] = []string{"v"}
	}
	cases := []struct {
		name   string
		before http.Header
	}{
		{"empty", http.Header{}},
		{"Caddy's own", http.Header{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}}},
		{"a key with no value", http.Header{"Content-Type": nil}},
		{"more keys than the mark holds inline", many},
	}
	head := []byte("200\x00Set-Cookie\x00session=secret\x00Set-Cookie\x00b=2\x00Server\x00app\x00Content-Length\x00100\x00Location\x00/x\x00")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := c.before.Clone()
			m := markHeader(h)
			if _, err := parseResponseHead(head, h); err != nil {
				t.Fatal(err)
			}
			if h.Get("Set-Cookie") == "" {
				t.Fatalf("the app's head was not added: %v", h)
			}
			m.restore(h)
			if !reflect.DeepEqual(h, c.before) {
				t.Errorf("restored %v, want %v", h, c.before)
			}
		})
	}
}
