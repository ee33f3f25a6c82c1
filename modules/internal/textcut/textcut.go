// Package textcut shortens text to a size in bytes without splitting a
// UTF-8 character: what Hearth quotes from an app, a router or a DNS
// provider in an error or a status is bounded, and a cut through a
// character would leave an invalid byte sequence that JSON turns into
// U+FFFD and a terminal prints as garbage.
package textcut

import "unicode/utf8"

// Ellipsis ends a string Shorten cut.
const Ellipsis = "…"

// Prefix returns the longest prefix of s that has at most n bytes and does
// not end inside a UTF-8 character (n < 0 counts as 0). Bytes of s that are
// not UTF-8 are kept as they are: Prefix only avoids making new ones.
func Prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	// s[n] is the first byte left out. Look back from it, at most as far as
	// the longest encoding reaches, for the byte a character starts with;
	// when that character is valid and runs past n, it goes too.
	for i := n; i >= 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if _, size := utf8.DecodeRuneInString(s[i:]); i+size > n {
				return s[:i]
			}
			break
		}
	}
	return s[:n]
}

// Shorten returns s when it has at most n bytes; otherwise the Prefix of s
// of n bytes followed by Ellipsis.
func Shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Prefix(s, n) + Ellipsis
}
