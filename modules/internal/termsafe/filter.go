package termsafe

import "io"

// Filter passes what a command writes to a terminal, as a terminal shows
// it (colours, cursor movement, line editing: CSI sequences and the short
// escape sequences), but drops the sequences a terminal takes as commands
// beyond the screen: OSC (ESC ]: the clipboard, OSC 52; links; the
// window's title; queries whose answers a terminal types back), DCS, SOS,
// PM and APC strings (ESC P, X, ^, _: a multiplexer's passthrough), C1
// controls (in UTF-8, U+0080 to U+009F, and the bytes 0x80 to 0x9F outside
// a UTF-8 character, which 8-bit terminals read as them) and the C0 controls but tab, line
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
	cont  int  // continuation bytes the last UTF-8 lead byte announced, still to come
	out   []byte
}

type filterState uint8

const (
	ground     filterState = iota
	escape                 // after ESC
	escapeMore             // after ESC and an intermediate byte
	csi                    // within ESC [ … final
	dropped                // within a string dropped (OSC, DCS, SOS, PM, APC)
	droppedEsc             // ESC within it (ST is ESC \)
	utf8Lead               // after the lead byte 0xC2: a C1 control may follow
)

// NewFilter returns a Filter writing to w.
func NewFilter(w io.Writer) *Filter { return &Filter{w: w} }

// Write filters p and writes what passes; it reports len(p) once that
// was written.
func (f *Filter) Write(p []byte) (int, error) {
	out := f.out[:0]
	for _, b := range p {
		switch f.state {
		case utf8Lead:
			f.state = ground
			switch {
			case b >= 0x80 && b <= 0x9f:
				continue // a C1 control: 0xC2 and it dropped
			case b >= 0xa0 && b <= 0xbf:
				out = append(out, 0xc2, b)
			default:
				out = f.ground(out, b) // (the lone 0xC2 dropped)
			}
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

// ground takes b outside any sequence.
func (f *Filter) ground(out []byte, b byte) []byte {
	cont := f.cont
	f.cont = 0
	switch {
	case b >= 0x80 && b <= 0xbf: // a continuation byte
		if cont > 0 {
			f.cont = cont - 1
			out = append(out, b)
		} else if b >= 0xa0 {
			out = append(out, b) // (not UTF-8; not a C1 control either: 8-bit terminals read 0x80 to 0x9F as those)
		}
	case b == 0xc2:
		f.state = utf8Lead
	case b >= 0xc3 && b <= 0xdf:
		f.cont = 1
		out = append(out, b)
	case b >= 0xe0 && b <= 0xef:
		f.cont = 2
		out = append(out, b)
	case b >= 0xf0:
		f.cont = 3
		out = append(out, b)
	case b == 0x1b:
		f.state = escape
	case b >= 0x20 && b != 0x7f, b == '\t', b == '\n', b == '\r', b == '\b', b == 0x07:
		out = append(out, b)
	}
	return out
}
