package engine

import (
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseResponseHead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		head   string
		status int
		want   http.Header
		err    string
	}{
		{"simple", "200 OK\x00Content-Type\x00text/plain", 200, http.Header{"Content-Type": {"text/plain"}}, ""},
		{"lowercase names canonicalized", "404 Not Found\x00content-type\x00text/html\x00x-custom-thing\x00v", 404,
			http.Header{"Content-Type": {"text/html"}, "X-Custom-Thing": {"v"}}, ""},
		{"repeated headers kept", "302 Found\x00Set-Cookie\x00a=1\x00Set-Cookie\x00b=2\x00Location\x00/x", 302,
			http.Header{"Set-Cookie": {"a=1", "b=2"}, "Location": {"/x"}, "Content-Type": nil}, ""},
		{"hop-by-hop dropped", "200 OK\x00Connection\x00close\x00Transfer-Encoding\x00chunked\x00Content-Type\x00a/b", 200,
			http.Header{"Content-Type": {"a/b"}}, ""},
		{"no content type: no sniffing", "204 No Content", 204, http.Header{"Content-Type": nil}, ""},
		{"bare code", "200", 200, http.Header{"Content-Type": nil}, ""},
		{"bad status", "OK 200", 0, nil, "invalid status line"},
		{"1xx refused", "100 Continue", 0, nil, "must be 200 or above"},
		{"odd fields", "200 OK\x00Content-Type", 0, nil, "malformed response head"},
		{"bad header name", "200 OK\x00Bad Name\x00v", 0, nil, "invalid response header name"},
		{"header injection", "200 OK\x00X-A\x00v\r\nSet-Cookie: evil=1", 0, nil, "control character (CR)"},
		{"empty", "", 0, nil, "malformed"},
		{"as many headers as allowed", "200 OK" + strings.Repeat("\x00X-A\x00v", maxResponseHeaders), 200,
			http.Header{"X-A": slices.Repeat([]string{"v"}, maxResponseHeaders), "Content-Type": nil}, ""},
		{"a header too many", "200 OK" + strings.Repeat("\x00X-A\x00v", maxResponseHeaders+1), 0, nil, "more than 1000 headers"},
		{"a megabyte of empty values", "200 OK" + strings.Repeat("\x00a\x00", 349000), 0, nil, "more than the 131072 a response head may have"},
		{"a head too long", "200 OK\x00X-A\x00" + strings.Repeat("v", maxResponseHeadBytes), 0, nil, "a response head may have"},
		{"a Content-Length in digits", "200 OK\x00Content-Length\x00 12 ", 200, http.Header{"Content-Length": {" 12 "}, "Content-Type": nil}, ""},
		{"a signed Content-Length", "200 OK\x00Content-Length\x00+5", 0, nil, "not a length in digits"},
		{"Python's underscores", "200 OK\x00Content-Length\x005_0", 0, nil, "not a length in digits"},
		{"a negative Content-Length", "200 OK\x00Content-Length\x00-1", 0, nil, "not a length in digits"},
		{"an empty Content-Length", "200 OK\x00Content-Length\x00\x00X-A\x00v", 0, nil, "not a length in digits"},
		{"a Content-Length past int64", "200 OK\x00Content-Length\x009999999999999999999", 0, nil, "not a length in digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			status, err := parseResponseHead([]byte(tc.head), hdr)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				if len(hdr) != 0 {
					t.Fatalf("headers set despite the error: %v", hdr)
				}
				return
			}
			if err != nil || status != tc.status {
				t.Fatalf("status %d err %v", status, err)
			}
			if len(hdr) != len(tc.want) {
				t.Fatalf("headers %v, want %v", hdr, tc.want)
			}
			for k, v := range tc.want {
				if strings.Join(hdr[k], "|") != strings.Join(v, "|") || (v == nil) != (hdr[k] == nil) {
					t.Errorf("%s = %q, want %q", k, hdr[k], v)
				}
			}
		})
	}
}

// FuzzParseResponseHead: whatever a worker sends as a response head is
// either refused or yields only valid header names and values.
func FuzzParseResponseHead(f *testing.F) {
	f.Add([]byte("200 OK\x00Content-Type\x00text/plain"))
	f.Add([]byte("500 x\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, head []byte) {
		hdr := http.Header{}
		// as a frame's payload is: a slice of a larger buffer, which must
		// not show through
		framed := append(append([]byte(nil), head...), "\x00Junk\x00after"...)[:len(head)]
		status, err := parseResponseHead(framed, hdr)
		if err != nil {
			return
		}
		// every header is the app's, value for value, in its order
		want := http.Header{}
		fields := bytes.Split(head, []byte{0})
		for i := 1; i+1 < len(fields); i += 2 {
			if name := textproto.CanonicalMIMEHeaderKey(string(fields[i])); !hopByHop[name] {
				want[name] = append(want[name], string(fields[i+1]))
			}
		}
		for name, vs := range hdr {
			if !slices.Equal(vs, want[name]) && !(name == "Content-Type" && vs == nil && want[name] == nil) {
				t.Fatalf("%s: %q, want %q", name, vs, want[name])
			}
		}
		for name := range want {
			if _, ok := hdr[name]; !ok {
				t.Fatalf("%s lost", name)
			}
		}
		if status < 200 || status > 999 {
			t.Fatalf("status %d accepted", status)
		}
		for k, vs := range hdr {
			if !validHeaderName([]byte(k)) {
				t.Fatalf("invalid name %q accepted", k)
			}
			for _, v := range vs {
				for _, c := range []byte(v) {
					if c < ' ' && c != '\t' || c == 0x7f {
						t.Fatalf("value %q with a control character accepted", v)
					}
				}
			}
		}
	})
}

func TestHeaderEnvironKey(t *testing.T) {
	for in, want := range map[string]string{"User-Agent": "HTTP_USER_AGENT", "X-Csrftoken": "HTTP_X_CSRFTOKEN", "Dnt": "HTTP_DNT", "x-lower": "HTTP_X_LOWER"} {
		if got := headerEnvironKey(in); got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
}

func TestSpoolSpillsAndKeepsOrder(t *testing.T) {
	sp := newSpool(2<<10, 1<<20)
	var want bytes.Buffer
	for i := 0; i < 100; i++ {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, i+1)
		sp.Write(chunk)
		want.Write(chunk)
		if i == 40 && sp.file != nil { // 861 bytes written
			t.Fatal("spilled to disk before the memory limit")
		}
	}
	if sp.file == nil || sp.memHeld > 2<<10 {
		t.Fatalf("memory not bounded: %d bytes in memory, file %v", sp.memHeld, sp.file)
	}
	sp.CloseWithError(nil)
	got := readSpool(t, sp)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("spool reordered or lost data: %d of %d bytes", len(got), want.Len())
	}
	sp.Close()
}

func TestSpoolReportsProducerError(t *testing.T) {
	sp := newSpool(1<<10, 1<<20)
	sp.Write([]byte("part"))
	sp.CloseWithError(io.ErrUnexpectedEOF)
	if chunk, _, err := sp.Next(); err != nil || string(chunk) != "part" {
		t.Fatalf("first: %q %v", chunk, err)
	}
	if _, _, err := sp.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("then: %v", err)
	}
}

// TestSpoolBoundsTheSpill: past spillLimit unread bytes on disk the
// producer waits for the consumer, whose reads let it go on; the data
// arrives whole and in order; a consumer that leaves releases a waiting
// producer.
func TestSpoolBoundsTheSpill(t *testing.T) {
	sp := newSpool(10, 100)
	var want bytes.Buffer
	wrote := make(chan int, 100)
	go func() {
		for i := 0; i < 60; i++ {
			chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 10)
			want.Write(chunk)
			sp.Write(chunk)
			wrote <- i
		}
		sp.CloseWithError(nil)
	}()
	last := -1
	for waited := false; !waited; {
		select {
		case last = <-wrote:
		case <-time.After(200 * time.Millisecond):
			waited = true
		}
	}
	sp.mu.Lock()
	unread := sp.fileW - sp.fileR
	sp.mu.Unlock()
	if last >= 20 || unread > 100 {
		t.Fatalf("the producer wrote %d chunks with nothing read (%d bytes unread on disk), want it to wait past 100", last+1, unread)
	}
	got := readSpool(t, sp)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("got %d bytes, want %d, in order", len(got), want.Len())
	}
	sp.Close()

	gone := newSpool(10, 100)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 60; i++ {
			gone.Write(make([]byte, 10))
		}
		close(done)
	}()
	time.Sleep(100 * time.Millisecond)
	gone.Discard()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a producer waiting for a consumer that left is still waiting")
	}
}

// readSpool reads sp to its end.
func readSpool(t *testing.T, sp *spool) []byte {
	t.Helper()
	var got bytes.Buffer
	for {
		chunk, _, err := sp.Next()
		if err == io.EOF {
			return got.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		got.Write(chunk)
	}
}

// A response head is decoded with two allocations (a string for its
// values, an array for their slices), not two per header, and each header
// keeps its own values: adding to one, or changing one, touches no other.
func TestParseResponseHeadAllocatesTwice(t *testing.T) {
	head := []byte("200 OK\x00Content-Type\x00text/html; charset=utf-8\x00X-Frame-Options\x00DENY\x00" +
		"Vary\x00Cookie\x00Content-Length\x005\x00X-Content-Type-Options\x00nosniff\x00" +
		"Referrer-Policy\x00same-origin\x00Cross-Origin-Opener-Policy\x00same-origin\x00Set-Cookie\x00a=1\x00Set-Cookie\x00b=2")
	hdr := http.Header{}
	if allocs := testing.AllocsPerRun(100, func() {
		clear(hdr)
		if _, err := parseResponseHead(head, hdr); err != nil {
			t.Fatal(err)
		}
	}); allocs > 3 { // two, and the second Set-Cookie's own array
		t.Errorf("%v allocations for a head of 9 headers, want 3", allocs)
	}
	hdr.Add("Vary", "Accept-Encoding")
	hdr["X-Frame-Options"][0] = "SAMEORIGIN"
	for name, want := range map[string][]string{
		"Vary":            {"Cookie", "Accept-Encoding"},
		"X-Frame-Options": {"SAMEORIGIN"},
		"Content-Length":  {"5"},
		"Set-Cookie":      {"a=1", "b=2"},
		"Referrer-Policy": {"same-origin"},
	} {
		if got := hdr[name]; !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}
