"""Hearth's wire protocol, the Python side (the Go side is modules/protocol).

Every message between Caddy and a worker is a frame: a 10-byte header
(payload length, type, flags, stream id) and its payload. The constants
here must equal Go's; TestWireConstantsAgree checks that they do.
"""

import re
import struct

HEADER = struct.Struct('!IBBI')  # payload length, type, flags, stream id
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 20
# the most a response body frame carries while more of the body follows:
# once Caddy's budget for slow clients is spent, a response waiting for a
# client that reads nothing holds one frame of Caddy's memory past it (a
# 1 MiB chunk held a megabyte per stalled response; the channel's buffer
# is 64 KiB).
STREAM_FRAME = 64 << 10
# What Caddy takes of a response head (its maxResponseHeadBytes and
# maxResponseHeaders): checked here too, so that the app gets HeaderError
# (a plain 500) before anything of a streamed answer is sent.
MAX_RESPONSE_HEAD = 128 << 10
MAX_RESPONSE_HEADERS = 1000

HELLO, FATAL, REQ_HEAD, REQ_BODY, RESP_HEAD, RESP_BODY, ABORT, FORK, CANCEL, WS_ACCEPT, WS_MSG, WS_CLOSE = range(1, 13)
END = 1
BINARY = 2  # on WS_MSG: a binary message
TIMED_OUT = 2  # on CANCEL: Caddy gave up on the request (its timeout, or closeGrace after its client left): cancel its task
REFUSED = 4  # on CANCEL, with TIMED_OUT: Caddy refused the stream the app began (max_streams)

_pack = HEADER.pack
_unpack = HEADER.unpack


class ProtocolError(Exception):
    """The peer sent something that is not a valid Hearth frame sequence."""


class HeaderError(ValueError):
    """The app set a response status or header that no HTTP response may
    carry (a NUL, CR, LF or other control character): sending it would let
    whoever chose the value add headers of their own. The request gets a
    plain 500; the message names the header, never its value."""


class ChannelLost(ConnectionError):
    """A send or a read on the connection to Caddy failed: nothing more can
    be done on it. Only the channel raises it: an OSError the app raises
    (a missing file, a refused database connection) is the app's error,
    answered like any other."""


class ClientDisconnected(OSError):
    """Raised by an ASGI app's send() once the client is gone (Caddy sent a
    cancel, or the WebSocket's close): an app that only sends learns that
    it may stop, as the ASGI spec asks."""


# Control characters a response head may not hold; NUL is counted apart
# (it separates the fields), a tab is allowed (in values).
_CONTROL = re.compile('[\x01-\x08\x0a-\x1f\x7f]')


def encode_head(status, headers):
    """The response-head payload: the status line and the header pairs,
    NUL-separated, latin-1. Raises HeaderError when a field would not reach
    the client as the app wrote it. Costs one count and one regex search
    over the joined head, in C."""
    parts = [status]
    for name, value in headers:
        parts.append(name)
        parts.append(value)
    try:
        head = '\0'.join(parts)
    except TypeError:
        raise HeaderError(head_problem(parts)) from None
    if head.count('\0') != len(parts) - 1 or _CONTROL.search(head) is not None:
        raise HeaderError(head_problem(parts))
    try:
        data = head.encode('latin-1')
    except UnicodeEncodeError:
        raise HeaderError(head_problem(parts)) from None
    if len(data) > MAX_RESPONSE_HEAD:
        raise HeaderError('the response head is %d bytes, more than the %d a response head may have'
                          % (len(data), MAX_RESPONSE_HEAD))
    if len(parts) > 2 * MAX_RESPONSE_HEADERS + 1:
        raise HeaderError('the response has %d headers, more than the %d a response may have'
                          % (len(parts) // 2, MAX_RESPONSE_HEADERS))
    return data


def head_problem(parts):
    """Says which field of a response head is unusable, and why."""
    for i, part in enumerate(parts):
        if i == 0:
            where = 'the status line'
        elif i % 2:
            where = 'a response header name (%r)' % (part[:40] if isinstance(part, str) else type(part).__name__)
        else:
            where = 'the value of response header %r' % (parts[i - 1][:40],)
        if not isinstance(part, str):
            return '%s is a %s, not a str' % (where, type(part).__name__)
        for j, c in enumerate(part):
            if c < ' ' and c != '\t' or c == '\x7f':
                return ('%s holds a control character (%s) at position %d: refused, it would let its '
                        'author add response headers' % (where, CONTROL_NAMES.get(c, '0x%02x' % ord(c)), j))
            if c > '\xff':
                return ('%s holds %r, which is not latin-1: HTTP headers carry latin-1; encode it '
                        '(RFC 8187 for file names, or percent-encoding)' % (where, c))
    return 'the response head is malformed'


CONTROL_NAMES = {'\0': 'NUL', '\r': 'CR', '\n': 'LF', '\t': 'tab'}


def frames(kind, sid, data, last, size=MAX_PAYLOAD):
    """Encode data as one or more frames of kind, of at most size bytes each;
    the last one flagged END if last."""
    if len(data) <= size:
        return _pack(len(data), kind, END if last else 0, sid) + data
    view = memoryview(data)
    out = []
    for start in range(0, len(data), size):
        part = view[start:start + size]
        final = last and start + size >= len(data)
        out.append(_pack(len(part), kind, END if final else 0, sid))
        out.append(part)
    return b''.join(out)


class Channel:
    """One request slot: a socket to Caddy, read through a buffer."""

    def __init__(self, sock):
        self.sock = sock
        self.rfile = sock.makefile('rb', 65536)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ChannelLost('sending to Caddy: %s' % exc) from exc

    def read_frame(self):
        """Return (type, flags, stream, payload), or None at a clean end of stream."""
        try:
            return self._read_frame()
        except OSError as exc:
            raise ChannelLost('reading from Caddy: %s' % exc) from exc

    def _read_frame(self):
        head = self.rfile.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            if not head:
                return None
            raise ProtocolError('truncated frame header (%d of %d bytes)' % (len(head), HEADER_SIZE))
        size, kind, flags, sid = _unpack(head)
        if size > MAX_PAYLOAD:
            raise ProtocolError('frame announces %d bytes, more than the maximum %d' % (size, MAX_PAYLOAD))
        payload = self.rfile.read(size) if size else b''
        if len(payload) < size:
            raise ProtocolError('truncated frame payload (%d of %d bytes)' % (len(payload), size))
        return kind, flags, sid, payload


def send_500(send, sid):
    """Answer stream sid with a plain 500 through send (a socket's sendall
    or a transport's write)."""
    body = b'Internal Server Error\n'
    head = ('500 Internal Server Error\0Content-Type\0text/plain; charset=utf-8\0'
            'Content-Length\0%d' % len(body)).encode('latin-1')
    send(_pack(len(head), RESP_HEAD, 0, sid) + head + _pack(len(body), RESP_BODY, END, sid) + body)
