package guard

import (
	"bytes"
	"path"
	"strings"
	"unicode"
)

// The guard judges a request by what the app, or a file system behind it,
// will make of it, not by its spelling:
//
//   - the path is the decoded one (r.URL.Path, the PATH_INFO the app gets;
//     a double-encoded %252e stays "%2e", as it does for the app);
//   - it is compared in lower case (case-insensitive file systems), and the
//     built-in suffixes are judged on the last segment even when slashes
//     follow it;
//   - a path with bytes that some reader takes differently is also judged
//     in its other readings (see pathReadings): `\` as `/`, a segment
//     ending at its first `;` (path parameters), `::` (NTFS streams) or
//     control byte, trailing dots and spaces dropped (Windows names), dot
//     segments and repeated slashes resolved (file servers), and the path
//     cut at its first control byte (C strings). A control byte itself is
//     not refused here: a NUL that hides nothing is the channel's to refuse
//     (400), like any malformed request;
//   - the query is judged by its decoded keys, split the way Python's
//     parse_qsl and Werkzeug split it (and at `;`, as Python before 3.9.2
//     did), with `+` as a space and in any case.

// debuggerKey is the query key of Werkzeug's debugger requests
// (`?__debugger__=yes&cmd=…`).
const debuggerKey = "__debugger__"

// debuggerQuery reports whether the raw query has a key that decodes to
// __debugger__ (in any case). It does not allocate.
func debuggerQuery(rawQuery string) bool {
	// Without '%', the key can only be spelled with its two underscores.
	if strings.IndexByte(rawQuery, '%') < 0 && !strings.Contains(rawQuery, "__") {
		return false
	}
	for q := rawQuery; q != ""; {
		var pair string
		if i := strings.IndexAny(q, "&;"); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			pair, q = q, ""
		}
		key, _, _ := strings.Cut(pair, "=")
		if isDebuggerKey(key) {
			return true
		}
	}
	return false
}

// isDebuggerKey reports whether a raw query key decodes, as Python's
// unquote_plus decodes it (invalid escapes kept as they are), to
// __debugger__ in any case.
func isDebuggerKey(raw string) bool {
	// each decoded byte is spelled with one byte or with three (%XX)
	if len(raw) < len(debuggerKey) || len(raw) > 3*len(debuggerKey) {
		return false
	}
	var buf [3 * len(debuggerKey)]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2]):
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
		}
		buf[n] = c
		n++
	}
	return n == len(debuggerKey) && bytes.EqualFold(buf[:n], []byte(debuggerKey))
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// foldToASCII maps the letters that Unicode's full case folding (and so a
// case-insensitive file system: ext4 casefold, SMB, exFAT) reads as ASCII
// and strings.ToLower leaves alone (or, for ẞ, lowers to ß): /db.ſqlite3
// opens db.sqlite3 there, /.htpaßwd .htpasswd, /.gitconﬁg .gitconfig.
var foldToASCII = strings.NewReplacer("\u017f", "s", "\u00df", "ss", "\ufb00", "ff", "\ufb01", "fi", "\ufb02", "fl",
	"\ufb03", "ffi", "\ufb04", "ffl", "\ufb05", "st", "\ufb06", "st")

// foldsToASCII are the letters foldToASCII maps.
const foldsToASCII = "\u017f\u00df\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"

// refusedPath says why a (decoded) path must not reach the app, or "". It
// does not allocate for the paths it lets through.
func (g *Guard) refusedPath(p string, sitePaths bool) string {
	lower := strings.ToLower(p)
	if !isASCII(lower) { // (one pass over an ordinary path, which has none of these)
		if strings.ContainsAny(lower, foldsToASCII) { // what a case-folding file system reads as ASCII
			lower = foldToASCII.Replace(lower)
		}
		// characters nothing shows (a zero-width joiner, a soft hyphen,
		// a variation selector): a case-folding file system may ignore
		// them (ext4's did), so /.g<U+200D>it/config opened .git/config
		lower = strings.Map(dropIgnorable, lower)
	}
	for _, rp := range refusedPaths {
		if sitePaths && (lower == rp || strings.HasPrefix(lower, rp+"/")) {
			return "a debug console path"
		}
	}
	for seg := range strings.SplitSeq(lower, "/") {
		if strings.HasPrefix(seg, ".env.") || strings.HasPrefix(seg, ".env-") || strings.HasPrefix(seg, ".env_") {
			return "a path that is never served (.env)"
		}
		for _, bad := range refusedSegments {
			if seg == bad {
				return "a path that is never served (" + bad + ")"
			}
		}
		for _, pattern := range g.refuse {
			if ok, _ := path.Match(pattern, seg); ok {
				return "a path refused by the guard's refuse list"
			}
		}
	}
	for _, pattern := range g.refuse {
		if refusedBy(pattern, lower) {
			return "a path refused by the guard's refuse list"
		}
	}
	last := strings.TrimRight(lower, "/") // /db.sqlite3/ names the same file
	for _, suffix := range refusedSuffixes {
		if strings.HasSuffix(last, suffix) {
			return "a file type that is never served (" + suffix + ")"
		}
	}
	return ""
}

// isASCII reports whether s has only ASCII bytes.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// dropIgnorable drops (-1) a character Unicode says to ignore when it
// cannot be shown: format characters and default-ignorable code points.
func dropIgnorable(r rune) rune {
	if unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r) {
		return -1
	}
	return r
}

// refusedBy reports whether the path p matches pattern (both in lower
// case), or lies under it when the pattern ends in "/*", as Caddy's path
// matcher reads a trailing "*": "/static/private/*" refuses
// /static/private/a/b.txt too, where path.Match's "*" stops at a "/".
func refusedBy(pattern, p string) bool {
	if ok, _ := path.Match(pattern, p); ok {
		return true
	}
	dir, ok := strings.CutSuffix(pattern, "/*")
	if !ok {
		return false
	}
	// p up to the "/" that ends as many segments as dir has
	want, seen := strings.Count(dir, "/")+1, 0
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			if seen++; seen == want {
				ok, _ := path.Match(dir, p[:i])
				return ok
			}
		}
	}
	return false
}

// isControl reports whether c is an ASCII control byte.
func isControl(c byte) bool { return c < 0x20 || c == 0x7f }

// oddPath reports whether p has bytes that some reader of the path takes
// differently from its plain spelling (see pathReadings). Ordinary paths
// have none, so that only odd ones pay for the other readings.
func oddPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\', c == ';', isControl(c):
			return true
		case c == ':' || c == '/':
			if i+1 < len(p) && p[i+1] == c { // "::" and "//"
				return true
			}
		case c == '.' || c == ' ':
			if i+1 == len(p) || p[i+1] == '/' { // a segment ending in a dot or space, "." and ".."
				return true
			}
		}
	}
	return false
}

// pathReadings returns the other ways an odd path may be read: normalized
// (see normalizePath), then also with dot segments resolved; and the same
// for the path cut at its first control byte.
func pathReadings(p string) []string {
	n := normalizePath(p)
	readings := []string{n, path.Clean(n)}
	if i := strings.IndexFunc(p, func(r rune) bool { return r < 0x80 && isControl(byte(r)) }); i >= 0 {
		t := normalizePath(p[:i])
		readings = append(readings, t, path.Clean(t))
	}
	return readings
}

// normalizePath reads `\` as `/`, ends each segment at its first `;`,
// "::" or control byte, and drops the trailing dots and spaces of each
// segment other than "." and "..".
func normalizePath(p string) string {
	segs := strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' })
	for i, seg := range segs {
		if j := strings.IndexFunc(seg, func(r rune) bool { return r == ';' || r < 0x80 && isControl(byte(r)) }); j >= 0 {
			seg = seg[:j]
		}
		if j := strings.Index(seg, "::"); j >= 0 {
			seg = seg[:j]
		}
		if seg != "." && seg != ".." {
			seg = strings.TrimRight(seg, ". ")
		}
		segs[i] = seg
	}
	n := "/" + strings.Join(segs, "/")
	if strings.HasSuffix(p, "/") || strings.HasSuffix(p, "\\") {
		n += "/"
	}
	return n
}
