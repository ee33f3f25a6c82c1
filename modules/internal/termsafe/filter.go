package termsafe

import "io"

// Filter passes what a command writes to a terminal, as a terminal shows
// it (colours, cursor movement, line editing: CSI sequences and the short
// escape sequences), but drops the sequences a terminal takes as commands
// beyond the screen: OSC (ESC ]: the clipboard, OSC 52; links; the
// window's title; queries whose answers a terminal types back), DCS, SOS,
// PM and APC strings (ESC P, X, ^, _: a multiplexer's passthrough), C1
// controls (U+0080 to U+009F), bytes that are not whole, valid UTF-8 (an
// 8-bit terminal reads 0x80 to 0x9F as C1 controls) and the C0 controls but tab, line
// feed, carriage return, backspace and bell. A dropped string ends where
// the terminal would end it (ST, or BEL for an OSC), or at a line feed, which passes:
// one that never ends does not hide the rest. It keeps its state across
// writes, which split sequences anywhere. What the command running as an
// app's account prints reaches the terminal of whoever runs `caddy hearth
// exec` or `manage`, root often.
type Filter struct {
	w     io.Writer
	state filterState
	osc   bool // the string dropped is an OSC, which BEL ends too
	// a UTF-8 character under way: its bytes so far, how many it has, and
	// the range of its next byte
	char         [4]byte
	have, need   int
	nextLo, next byte
	out          []byte
}

type filterState uint8

const (
	ground     filterState = iota
	escape                 // after ESC
	escapeMore             // after ESC and an intermediate byte
	csi                    // within ESC [ … final
	dropped                // within a string dropped (OSC, DCS, SOS, PM, APC)
	droppedEsc             // ESC within it (ST is ESC \)
)

// ModesReset is what a terminal is sent once a command that wrote to it
// through a Filter has ended: the modes a command may leave set, which
// would act on what is typed and shown next (mouse and focus reports
// typed into the shell, hidden text and cursor, the alternate screen,
// application keys, bracketed paste, the keyboard protocols of kitty and
// xterm's modifyOtherKeys, reverse video, a line-drawing character set),
// set back to a shell's. None moves the cursor or clears what is shown.
const ModesReset = "\x1b[0m\x1b[4l\x1b[?25h\x1b[?7h\x1b[?1l\x1b>\x1b[?5l\x1b(B" +
	"\x1b[?9l\x1b[?1000l\x1b[?1001l\x1b[?1002l\x1b[?1003l\x1b[?1004l\x1b[?1005l\x1b[?1006l\x1b[?1015l" +
	"\x1b[?2004l\x1b[?1047l\x1b[>4m\x1b[<99u"

// NewFilter returns a Filter writing to w.
func NewFilter(w io.Writer) *Filter { return &Filter{w: w} }

// Write filters p and writes what passes; it reports len(p) once that
// was written.
func (f *Filter) Write(p []byte) (int, error) {
	out := f.out[:0]
	for _, b := range p {
		switch f.state {
		case ground:
			out = f.ground(out, b)
		case escape, escapeMore:
			switch {
			case b == '[' && f.state == escape:
				out = append(out, 0x1b, '[')
				f.state = csi
			case f.state == escape && (b == ']' || b == 'P' || b == 'X' || b == '^' || b == '_'):
				f.state, f.osc = dropped, b == ']'
			case b >= 0x20 && b <= 0x2f: // an intermediate: ESC ( B and the like
				if f.state == escape {
					out = append(out, 0x1b)
				}
				out = append(out, b)
				f.state = escapeMore
			case b >= 0x30 && b <= 0x7e: // the final byte
				if f.state == escape {
					out = append(out, 0x1b)
				}
				out = append(out, b)
				f.state = ground
			default: // a control cancels the sequence
				f.state = ground
				out = f.ground(out, b)
			}
		case csi:
			switch {
			case b >= 0x20 && b <= 0x3f: // parameters, intermediates
				out = append(out, b)
			case b >= 0x40 && b <= 0x7e: // the final byte
				out = append(out, b)
				f.state = ground
			default:
				f.state = ground
				out = f.ground(out, b)
			}
		case dropped, droppedEsc:
			switch {
			case b == 0x07 && f.osc || f.state == droppedEsc && b == '\\':
				f.state = ground
			case b == '\n':
				f.state = ground
				out = append(out, b)
			case b == 0x1b:
				f.state = droppedEsc
			default:
				f.state = dropped
			}
		}
	}
	f.out = out
	if len(out) > 0 {
		if _, err := f.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// ground takes b outside any sequence. A UTF-8 character is passed only
// whole and valid (and not U+0080 to U+009F): a byte 0x80 to 0x9F is a
// C1 control to an 8-bit terminal, and a broken character's bytes would
// pass one on.
func (f *Filter) ground(out []byte, b byte) []byte {
	if f.need > 0 {
		if b >= f.nextLo && b <= f.next {
			f.char[f.have] = b
			f.have++
			f.nextLo, f.next = 0x80, 0xbf
			if f.have < f.need {
				return out
			}
			f.need = 0
			if f.char[0] == 0xc2 && f.char[1] <= 0x9f {
				return out // a C1 control
			}
			return append(out, f.char[:f.have]...)
		}
		f.need = 0 // a broken character: dropped, and b taken anew
	}
	lo, hi, need := byte(0x80), byte(0xbf), 0
	switch {
	case b < 0x80:
		switch {
		case b == 0x1b:
			f.state = escape
		case b >= 0x20 && b != 0x7f, b == '\t', b == '\n', b == '\r', b == '\b', b == 0x07:
			out = append(out, b)
		}
		return out
	case b >= 0xc2 && b <= 0xdf:
		need = 2
	case b == 0xe0:
		need, lo = 3, 0xa0
	case b == 0xed:
		need, hi = 3, 0x9f
	case b >= 0xe1 && b <= 0xef:
		need = 3
	case b == 0xf0:
		need, lo = 4, 0x90
	case b == 0xf4:
		need, hi = 4, 0x8f
	case b >= 0xf1 && b <= 0xf3:
		need = 4
	default:
		return out // not the start of a character: dropped
	}
	f.char[0], f.have, f.need, f.nextLo, f.next = b, 1, need, lo, hi
	return out
}
