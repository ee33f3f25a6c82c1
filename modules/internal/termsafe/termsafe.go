// Package termsafe makes text safe to show on a terminal: what Hearth
// shows or logs may quote an app's output, a config another account
// wrote, or a request's path an app logged, and a terminal takes control
// characters in it for commands (an escape sequence writes the clipboard,
// retitles the window, or rewrites what the screen shows; a bidirectional
// control reorders a line).
package termsafe

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line maps control characters (C0, DEL, C1), the bidirectional controls
// and bytes that are not UTF-8 to '?', and line breaks and tabs to spaces:
// one line.
func Line(s string) string { return mapped(s, ' ') }

// Lines is Line for text of several lines: line breaks stay, carriage
// returns go (CRLF text, a progress bar's returns), tabs become spaces.
func Lines(s string) string { return mapped(s, '\n') }

func mapped(s string, lineBreak rune) string {
	if plain(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return lineBreak
		case r == '\t':
			return ' '
		case r == '\r':
			if lineBreak == '\n' {
				return -1
			}
			return ' '
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError:
			return '?'
		case unicode.Is(unicode.Bidi_Control, r):
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// plain reports whether s is printable ASCII only, which needs no change.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Error is err with its text made safe by Lines (errors.Is and As still
// see err): an app's start error quotes its output (a before_start
// command's, a traceback, its own Django checks' messages), and Caddy
// prints the error of a config it cannot load on the terminal of whoever
// runs it.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return safeError{err}
}

type safeError struct{ err error }

func (e safeError) Error() string { return Lines(e.err.Error()) }
func (e safeError) Unwrap() error { return e.err }
