package textcut

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrefix(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 3, "hel"},
		{"hello", 0, ""},
		{"hello", -1, ""},
		{"", 0, ""},
		{"héllo", 2, "h"},                           // é is 2 bytes: cutting at 2 would split it
		{"héllo", 3, "hé"},                          // ends right after é
		{"a€b", 2, "a"},                             // € is 3 bytes
		{"a€b", 3, "a"},                             // still inside €
		{"a€b", 4, "a€"},                            // right after it
		{"a😀b", 4, "a"},                             // a 4-byte character
		{"a😀b", 5, "a😀"},                            // right after it
		{"😀", 3, ""},                                // the whole string is one character
		{"ab\x80\x80\x80\x80\x80", 4, "ab\x80\x80"}, // stray continuation bytes: cut where asked
		{"\xff\xfe\xfd", 2, "\xff\xfe"},             // not UTF-8 at all
	} {
		if got := Prefix(c.in, c.n); got != c.want {
			t.Errorf("Prefix(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestShorten(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 5, "short"},
		{"longer", 5, "longe…"},
		{"naïveté", 3, "na…"},
		{"", 3, ""},
	} {
		if got := Shorten(c.in, c.n); got != c.want {
			t.Errorf("Shorten(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// FuzzPrefix: a prefix of valid UTF-8 is valid UTF-8, is a prefix, is at
// most n bytes, and loses less than one character.
func FuzzPrefix(f *testing.F) {
	f.Add("héllo wörld €😀", 7)
	f.Add("\xff\x80abc", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Prefix(s, n)
		if !strings.HasPrefix(s, got) {
			t.Fatalf("Prefix(%q, %d) = %q: not a prefix", s, n, got)
		}
		if n >= 0 && len(got) > n || n < 0 && got != "" {
			t.Fatalf("Prefix(%q, %d) = %q: longer than asked", s, n, got)
		}
		if len(s) <= n && got != s {
			t.Fatalf("Prefix(%q, %d) = %q: cut a string that fits", s, n, got)
		}
		if n > 0 && len(s) > n && n-len(got) >= utf8.UTFMax {
			t.Fatalf("Prefix(%q, %d) = %q: cut more than a character", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Prefix(%q, %d) = %q: split a character", s, n, got)
		}
	})
}
