package termsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

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

// TestFilter: what a command prints reaches the terminal with its colours
// and cursor movement, but without the sequences that act beyond the
// screen, however the writes split them.
func TestFilter(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"text", "Operations to perform:\r\n  Apply all migrations\n", "Operations to perform:\r\n  Apply all migrations\n"},
		{"colours and cursor", "\x1b[32;1mOK\x1b[0m\x1b[2K\x1b[1A\x1b(B\x1b7\x1b8", "\x1b[32;1mOK\x1b[0m\x1b[2K\x1b[1A\x1b(B\x1b7\x1b8"},
		{"the clipboard (OSC 52), ended by BEL", "a\x1b]52;c;Y3VybCBldmlsfHNo\x07b", "ab"},
		{"a title, ended by ST", "a\x1b]0;root@host\x1b\\b", "ab"},
		{"a link", "\x1b]8;;http://evil\x1b\\here\x1b]8;;\x1b\\", "here"},
		{"tmux passthrough (DCS)", "\x1bPtmux;\x1b\x1b]52;c;QQ==\x07\x1b\\after", "after"},
		{"APC, PM, SOS", "\x1b_x\x1b\\\x1b^y\x1b\\\x1bXz\x1b\\.", "."},
		{"an OSC never ended stops at the line's end", "\x1b]52;c;QQ==\nnext line\n", "\nnext line\n"},
		{"C1 controls in UTF-8", "a\u009b2Jb\u009d52;c;QQ==\u009cc", "a2Jb52;c;QQ==c"},
		{"other UTF-8", "café ☕ ¢", "café ☕ ¢"},
		{"C0 controls", "a\x0eb\x0fc\x00d\x7fe\bf\a", "abcde\bf\a"},
		{"a control cancels an escape", "\x1b\x0ex", "x"},
		{"bytes that are not UTF-8", "a\xff\x9d52;c;QQ==\x07b\xe1\x9dc\xc0\x80d\xed\xa0\x80e\xf4\x90\x80\x80f", "a52;c;QQ==\abcdef"},
		{"characters of every length", "$¢€😀\u00a0", "$¢€😀\u00a0"},
	} {
		for split := 0; split <= len(tc.in); split++ {
			var got strings.Builder
			f := NewFilter(&got)
			f.Write([]byte(tc.in[:split]))
			f.Write([]byte(tc.in[split:]))
			if got.String() != tc.want {
				t.Errorf("%s, split at %d: %q, want %q", tc.name, split, got.String(), tc.want)
				break
			}
		}
	}
}

// FuzzFilter: whatever a command prints, and however its writes split it,
// what passes starts no string sequence (OSC, DCS, SOS, PM, APC) and holds
// no C1 control, nor a C0 control but those kept; the same input split
// elsewhere gives the same output.
func FuzzFilter(f *testing.F) {
	for _, seed := range []string{"\x1b]52;c;QQ==\x07", "\x1b[31mred\x1b[0m", "\x1bPtmux;\x1b\x1b]52;c;QQ==\x07\x1b\\", "\u009d0;t\u009c", "\x1b\x1b]x", "\xc2\x1b]", "\x1b(\x1b]"} {
		f.Add([]byte(seed), 1)
	}
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		var whole, parts strings.Builder
		NewFilter(&whole).Write(in)
		split = min(max(split, 0), len(in))
		g := NewFilter(&parts)
		g.Write(in[:split])
		g.Write(in[split:])
		if whole.String() != parts.String() {
			t.Fatalf("split at %d: %q, whole: %q", split, parts.String(), whole.String())
		}
		out := whole.String()
		if !utf8.ValidString(out) {
			t.Fatalf("bytes that are not UTF-8 passed: %q", out)
		}
		for _, r := range out {
			if r >= 0x80 && r <= 0x9f {
				t.Fatalf("a C1 control passed: %q", out)
			}
		}
		for i := 0; i < len(out); i++ {
			b := out[i]
			switch {
			case b == 0x1b:
				if i+1 < len(out) && strings.IndexByte("]PX^_", out[i+1]) >= 0 {
					t.Fatalf("a string sequence passed: %q", out)
				}
			case b == 0xc2 && i+1 < len(out) && out[i+1] >= 0x80 && out[i+1] <= 0x9f:
				t.Fatalf("a C1 control passed: %q", out)
			case b < 0x20 && strings.IndexByte("\t\n\r\b\a", b) < 0, b == 0x7f:
				t.Fatalf("the control %#x passed: %q", b, out)
			}
		}
	})
}
