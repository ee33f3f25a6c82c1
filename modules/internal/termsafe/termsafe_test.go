package termsafe

import "testing"

// TestLine: what a terminal would take for a command is shown as '?'.
func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, line, lines string }{
		{"GET /static/app.css", "GET /static/app.css", "GET /static/app.css"},
		{"Not Found: /\x1b]52;c;Y3VybCBldmlsfHNo\x07", "Not Found: /?]52;c;Y3VybCBldmlsfHNo?", "Not Found: /?]52;c;Y3VybCBldmlsfHNo?"},
		{"a\u009b31mred", "a?31mred", "a?31mred"},                 // C1 CSI
		{"admin\u202egnp.exe", "admin?gnp.exe", "admin?gnp.exe"},  // right-to-left override
		{"one\r\ntwo\tthree", "one  two three", "one\ntwo three"}, // line breaks
		{"bad \xff byte", "bad ? byte", "bad ? byte"},
		{"café ☕", "café ☕", "café ☕"},
	} {
		if got := Line(tc.in); got != tc.line {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.line)
		}
		if got := Lines(tc.in); got != tc.lines {
			t.Errorf("Lines(%q) = %q, want %q", tc.in, got, tc.lines)
		}
	}
}
