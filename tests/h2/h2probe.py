#!/usr/bin/env python3
"""An adversarial HTTP/2 client for tests/adversarial_tls_h2.rs.

It speaks HTTP/2 over TLS (ALPN h2, with a client certificate) and writes its
frames by hand, so that it can send what a well-behaved client library
refuses to: resets right after HEADERS, floods of CONTINUATION frames,
malformed header blocks, HPACK bombs. Responses are decoded with the `hpack`
package (installed with PyPI's `h2`).

One case per run; it prints one JSON object on stdout with everything the
server sent back: the GOAWAY (error code, last stream id, debug data), the
RST_STREAM codes and response statuses per stream, whether a PING sent after
the attack was answered, and whether the server closed the connection.

    h2probe.py --port P --ca CA --cert CERT --key KEY CASE [options]
"""

import argparse
import json
import select
import socket
import ssl
import struct
import sys
import time

from hpack import Decoder

# How long any wait for the server (a frame, its answer, the end of the
# connection) may take: a bound on a wait for an event, not a window the
# event must fall into, so a loaded machine makes a probe slower, not wrong.
WAIT = 60

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
CANCEL = 0x8

ERRORS = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
    "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
]
SETTING_NAMES = {
    1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS",
    4: "INITIAL_WINDOW_SIZE", 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE",
    8: "ENABLE_CONNECT_PROTOCOL",
}
BARRIER = b"barrier!"


def error_name(code):
    return ERRORS[code] if code < len(ERRORS) else f"0x{code:x}"


def frame(ftype, flags, sid, payload=b""):
    return (struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
            + struct.pack(">I", sid & 0x7FFFFFFF) + payload)


def rst(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


# --- HPACK, by hand (RFC 7541), no Huffman coding -------------------------

def hpack_int(value, prefix_bits, flags):
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([flags | value])
    out = [flags | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hstr(s):
    b = s.encode("latin-1") if isinstance(s, str) else s
    return hpack_int(len(b), 7, 0) + b


def literal(name, value):
    """Literal header field without indexing, new name (sent as given)."""
    return b"\x00" + hstr(name) + hstr(value)


def literal_indexed(name, value):
    """Literal header field with incremental indexing, new name."""
    return b"\x40" + hstr(name) + hstr(value)


def indexed(i):
    return hpack_int(i, 7, 0x80)


def block(headers):
    return b"".join(literal(n, v) for n, v in headers)


def request_headers(path, method="GET", extra=()):
    return [(":method", method), (":scheme", "https"),
            (":authority", "localhost"), (":path", path), *extra]


def headers_frames(sid, hblock, end_stream, max_frame=16384):
    """HEADERS (+ CONTINUATION) frames carrying a complete header block."""
    chunks = [hblock[i:i + max_frame] for i in range(0, len(hblock), max_frame)] or [b""]
    out = []
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        flags = END_HEADERS if last else 0
        if n == 0:
            out.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, chunk))
        else:
            out.append(frame(CONTINUATION, flags, sid, chunk))
    return b"".join(out)


# --- the connection -------------------------------------------------------

class Conn:
    def __init__(self, args):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(args.ca)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", args.port), timeout=WAIT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise SystemExit("server did not select h2")
        self.sock.setblocking(False)
        self.out = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        # A large window so that flow control never holds responses back.
        self.out += frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 24))
        self.out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))
        self.inbuf = bytearray()
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.partial = None  # (sid, flags, fragments) of a server header block
        self.eof = False
        self.write_error = None
        self.read_error = None
        self.settings = {}
        self.goaway = None
        self.resets = {}
        self.statuses = {}
        self.data_bytes = 0
        self.barrier_acked = False
        self.bytes_sent = 0
        self.headers = {}  # sid -> the response's first header block, as a dict
        self.ended = set()  # streams the server ended (END_STREAM)

    # Frames from the server.
    def on_frame(self, ftype, flags, sid, payload):
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                self.settings[SETTING_NAMES.get(ident, str(ident))] = value
            self.out += frame(SETTINGS, ACK, 0)
        elif ftype == PING:
            if flags & ACK:
                if payload == BARRIER:
                    self.barrier_acked = True
            else:
                self.out += frame(PING, ACK, 0, payload)
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = {"error": error_name(code), "last_stream_id": last & 0x7FFFFFFF,
                           "debug": payload[8:].decode("latin-1")}
        elif ftype == RST_STREAM:
            self.resets[sid] = error_name(struct.unpack(">I", payload[:4])[0])
        elif ftype == DATA:
            self.data_bytes += len(payload)
            if flags & END_STREAM:
                self.ended.add(sid)
        elif ftype == HEADERS:
            if flags & END_STREAM:
                self.ended.add(sid)
            if flags & PADDED:
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.partial = (sid, [bytes(payload)])
            if flags & END_HEADERS:
                self.end_headers()
        elif ftype == CONTINUATION and self.partial:
            self.partial[1].append(bytes(payload))
            if flags & END_HEADERS:
                self.end_headers()

    def end_headers(self):
        sid, parts = self.partial
        self.partial = None
        headers = self.decoder.decode(b"".join(parts))
        self.headers.setdefault(sid, {name: value for name, value in headers})
        for name, value in headers:
            if name == ":status":
                self.statuses.setdefault(sid, int(value))

    def parse(self):
        while len(self.inbuf) >= 9:
            length = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + length:
                return
            ftype, flags = self.inbuf[3], self.inbuf[4]
            sid = int.from_bytes(self.inbuf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.inbuf[9:9 + length])
            del self.inbuf[:9 + length]
            self.on_frame(ftype, flags, sid, payload)

    def read_some(self):
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    self.eof = True
                    return
                self.inbuf += data
                self.parse()
                if not self.sock.pending():
                    return
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.eof = True
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.read_error = type(e).__name__
            self.eof = True

    def write_some(self):
        try:
            n = self.sock.send(self.out[:1 << 16])
            self.bytes_sent += n
            del self.out[:n]
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.write_error = type(e).__name__
            self.out.clear()

    def pump(self, done, timeout=None):
        """Moves bytes both ways until done(), end of stream or timeout."""
        deadline = time.monotonic() + (WAIT if timeout is None else timeout)
        while not self.eof and not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            want_write = bool(self.out) and self.write_error is None
            r, w, _ = select.select([self.sock], [self.sock] if want_write else [], [], min(left, 0.5))
            if r or self.sock.pending():
                self.read_some()
            if w:
                self.write_some()
        return True

    def send(self, data, timeout=None):
        """Queues `data` and pumps until it is all written (or writing failed)."""
        self.out += data
        self.pump(lambda: not self.out or self.write_error is not None, timeout)

    def barrier(self, timeout=None):
        """A PING after everything sent: answered once the server read it all."""
        self.send(frame(PING, 0, 0, BARRIER))
        self.pump(lambda: self.barrier_acked or self.goaway is not None, timeout)

    def drain(self, timeout=None):
        """After a GOAWAY, reads on until the server closes the connection."""
        self.pump(lambda: False, timeout)

    def report(self, **extra):
        codes = {}
        for code in self.resets.values():
            codes[code] = codes.get(code, 0) + 1
        statuses = {}
        for status in self.statuses.values():
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        out = {
            "server_settings": self.settings,
            "goaway": self.goaway,
            "reset_codes": codes,
            "status_counts": statuses,
            # Streams 1 and 3 in detail (single-request cases).
            "stream1": {"status": self.statuses.get(1), "reset": self.resets.get(1)},
            "stream3": {"status": self.statuses.get(3), "reset": self.resets.get(3)},
            "data_bytes": self.data_bytes,
            "barrier_acked": self.barrier_acked,
            "closed": self.eof,
            "write_error": self.write_error,
            "read_error": self.read_error,
            "bytes_sent": self.bytes_sent,
        }
        out.update(extra)
        json.dump(out, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")


# --- the cases ------------------------------------------------------------

def start(args):
    c = Conn(args)
    c.pump(lambda: bool(c.settings))
    return c


def flood(c, args, per_stream):
    """Writes `per_stream(sid, path)` for args.n streams, in batches, reading between."""
    sent = 0
    batch = bytearray()
    for i in range(args.n):
        if c.goaway is not None or c.eof or c.write_error is not None:
            break
        sid = 1 + 2 * i
        path = args.public if i % 2 == 0 else args.protected
        batch += per_stream(sid, path)
        sent += 1
        if len(batch) >= 8192:
            c.send(bytes(batch))
            batch.clear()
    if batch:
        c.send(bytes(batch))
    return sent


def case_rapid_reset(args):
    """HEADERS (a complete GET) then RST_STREAM(CANCEL), args.n times."""
    c = start(args)
    sent = flood(c, args, lambda sid, path: headers_frames(
        sid, block(request_headers(path)), end_stream=True) + rst(sid))
    finish(c, streams=sent)


def case_rapid_reset_paced(args):
    """HEADERS (a complete GET), a PING and its answer (the server has read
    the request by then), then RST_STREAM(CANCEL), args.n times: slower
    than a burst, but every stream has been accepted before it is reset."""
    c = start(args)
    sent = 0
    for i in range(args.n):
        if c.goaway is not None or c.eof or c.write_error is not None:
            break
        sid = 1 + 2 * i
        path = args.public if i % 2 == 0 else args.protected
        c.barrier_acked = False
        c.send(headers_frames(sid, block(request_headers(path)), end_stream=True)
               + frame(PING, 0, 0, BARRIER))
        c.pump(lambda: c.barrier_acked or c.goaway is not None)
        c.send(rst(sid))
        sent += 1
    c.barrier_acked = False
    finish(c, streams=sent)


def case_rapid_reset_data(args):
    """HEADERS (no END_STREAM), a partial DATA frame, then RST_STREAM(CANCEL)."""
    c = start(args)
    sent = flood(c, args, lambda sid, path: headers_frames(
        sid, block(request_headers(path)), end_stream=False)
        + frame(DATA, 0, sid, b"x" * 10) + rst(sid))
    finish(c, streams=sent)


def case_concurrent(args):
    """args.n streams opened at once (far past SETTINGS_MAX_CONCURRENT_STREAMS),
    never finished, then all reset."""
    c = start(args)
    sent = flood(c, args, lambda sid, path: headers_frames(
        sid, block(request_headers(path)), end_stream=False))
    if c.goaway is None and not c.eof:
        c.send(b"".join(rst(1 + 2 * i) for i in range(sent)))
    finish(c, streams=sent)


def finish(c, **extra):
    if c.goaway is None and not c.eof and c.write_error is None:
        c.barrier()
    if c.goaway is not None or c.write_error is not None:
        # The server is closing: read what it sent (its GOAWAY) to the end.
        c.drain()
    c.report(**extra)


def case_continuation(args):
    """One HEADERS without END_HEADERS, then args.n CONTINUATION frames that
    never end the block. --fill: bytes of header data per frame (0: empty)."""
    c = start(args)
    c.send(frame(HEADERS, END_STREAM, 1, block(request_headers(args.public))))
    piece = literal("x-pad", "a" * max(args.fill - 9, 0)) if args.fill else b""
    sent = 0
    for _ in range(0, args.n, 256):
        if c.goaway is not None or c.eof or c.write_error is not None:
            break
        k = min(256, args.n - sent)
        c.send(frame(CONTINUATION, 0, 1, piece) * k)
        sent += k
    c.pump(lambda: c.goaway is not None)
    c.drain()
    c.report(continuation_frames=sent)


def answered(c, sid):
    """Whether stream `sid` got its response headers or was reset."""
    return sid in c.statuses or sid in c.resets


def case_oversize(args):
    """A header block larger than the server's SETTINGS_MAX_HEADER_LIST_SIZE
    (args.fill bytes of one header), then a normal request on the same connection."""
    c = start(args)
    big = block(request_headers(args.protected, extra=[("x-big", "b" * args.fill)]))
    c.send(headers_frames(1, big, end_stream=True))
    c.send(headers_frames(3, block(request_headers(args.public)), end_stream=True))
    # Both streams' outcomes: the server may answer stream 3 first.
    c.pump(lambda: (answered(c, 1) and answered(c, 3)) or c.goaway is not None)
    if c.goaway is not None:
        c.drain()
    c.report(block_bytes=len(big))


def case_hpack_bomb(args):
    """One large header put into the dynamic table, then referenced args.n
    times by its one-byte index: a few KB on the wire, megabytes decoded."""
    c = start(args)
    hb = block(request_headers(args.protected))
    hb += literal_indexed("x-bomb", "b" * args.fill)
    hb += indexed(62) * args.n
    c.send(headers_frames(1, hb, end_stream=True))
    c.send(headers_frames(3, block(request_headers(args.public)), end_stream=True))
    # Both streams' outcomes: the server may answer stream 3 first.
    c.pump(lambda: (answered(c, 1) and answered(c, 3)) or c.goaway is not None)
    if c.goaway is not None:
        c.drain()
    c.report(block_bytes=len(hb))


def case_table_size(args):
    """A dynamic table size update larger than SETTINGS_HEADER_TABLE_SIZE
    (RFC 7541 4.2: a decoding error)."""
    c = start(args)
    hb = hpack_int(args.fill, 5, 0x20) + block(request_headers(args.protected))
    c.send(headers_frames(1, hb, end_stream=True))
    c.pump(lambda: c.goaway is not None or 1 in c.statuses)
    if c.goaway is not None:
        c.drain()
    c.report(block_bytes=len(hb))


def case_request(args):
    """One request whose header list is given verbatim (--headers JSON: a
    list of [name, value], pseudo-headers included, in order), optionally
    with a body (--body, sent in one DATA frame with END_STREAM), then a
    normal request on the same connection (stream 3) to show it still serves."""
    c = start(args)
    headers = [tuple(h) for h in json.loads(args.headers)]
    body = args.body.encode() if args.body is not None else None
    out = headers_frames(1, block(headers), end_stream=body is None)
    if body is not None:
        out += frame(DATA, END_STREAM, 1, body)
    c.send(out)
    c.pump(lambda: 1 in c.statuses or 1 in c.resets or c.goaway is not None)
    if c.goaway is None and not c.eof:
        c.send(headers_frames(3, block(request_headers(args.public)), end_stream=True))
        c.pump(lambda: 3 in c.statuses or 3 in c.resets or c.goaway is not None)
    if c.goaway is not None:
        c.drain()
    c.report()


def case_late_body(args):
    """A request whose body comes late: HEADERS (--headers, no END_STREAM),
    then `SENT` on stdout; the body (--body, one DATA frame with END_STREAM)
    only once a line arrives on stdin. Reports whether the server had
    answered stream 1 before the body was sent, its answer's headers, and
    whether it ended the stream or reset it."""
    c = start(args)
    headers = [tuple(h) for h in json.loads(args.headers)]
    c.send(headers_frames(1, block(headers), end_stream=False))
    c.barrier()
    print("SENT", flush=True)
    sys.stdin.readline()
    # Whatever the server sent before the barrier's answer has been read.
    c.barrier_acked = False
    c.barrier()
    answered_early = 1 in c.statuses or 1 in c.resets
    c.send(frame(DATA, END_STREAM, 1, (args.body or "").encode()))
    c.pump(lambda: 1 in c.ended or 1 in c.resets or c.goaway is not None)
    # A reset that follows the end of the stream arrives before this.
    c.barrier_acked = False
    c.barrier()
    c.report(answered_before_body=answered_early, ended=1 in c.ended,
             headers=c.headers.get(1))


def case_stall(args):
    """A client that never takes its responses: SETTINGS_INITIAL_WINDOW_SIZE
    --window (0: nothing may be sent) and no WINDOW_UPDATE, args.n streams
    to --public, then `STALLED` on stdout once every response's head is in;
    then a PING every --every seconds (answered: bytes keep moving) until
    the server closes the connection. With --n 0 it is an idle connection
    kept alive by pings. Reports how long the connection lived after
    `STALLED` (`alive_for`) and how many pings were answered."""
    c = Conn(args)
    c.out = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    c.out += frame(SETTINGS, 0, 0, struct.pack(">HI", 4, args.window))
    c.pump(lambda: bool(c.settings))
    c.send(b"".join(headers_frames(1 + 2 * i, block(request_headers(args.public)), True)
                    for i in range(args.n)))
    c.pump(lambda: len(c.statuses) + len(c.resets) >= args.n or c.goaway is not None)
    print("STALLED", flush=True)
    stalled = time.monotonic()
    pongs = 0
    deadline = stalled + WAIT
    while not c.eof and time.monotonic() < deadline:
        c.barrier_acked = False
        c.send(frame(PING, 0, 0, BARRIER))
        if c.pump(lambda: c.barrier_acked, timeout=args.every) and c.barrier_acked:
            pongs += 1
            c.pump(lambda: False, timeout=args.every)
    c.report(alive_for=round(time.monotonic() - stalled, 3), pongs=pongs,
             heads=len(c.statuses))


def case_paced_reset(args):
    """Each stream reset one write after it was sent: HEADERS(n) +
    RST_STREAM(n-2) (the client's previous stream) + a PING, its answer
    awaited (the server has read the request by then), args.n times. No
    stream is pending when reset, and each is reset before its answer when
    the upstream is slow."""
    c = start(args)
    sent = 0
    for i in range(args.n):
        if c.goaway is not None or c.eof or c.write_error is not None:
            break
        sid = 1 + 2 * i
        path = args.public if i % 2 == 0 else args.protected
        out = headers_frames(sid, block(request_headers(path)), end_stream=True)
        if i > 0:
            out += rst(sid - 2)
        c.barrier_acked = False
        c.send(out + frame(PING, 0, 0, BARRIER))
        c.pump(lambda: c.barrier_acked or c.goaway is not None)
        sent += 1
    c.barrier_acked = False
    finish(c, streams=sent)


CASES = {
    "stall": case_stall,
    "paced-reset": case_paced_reset,
    "late-body": case_late_body,
    "rapid-reset": case_rapid_reset,
    "rapid-reset-data": case_rapid_reset_data,
    "rapid-reset-paced": case_rapid_reset_paced,
    "concurrent": case_concurrent,
    "continuation": case_continuation,
    "oversize": case_oversize,
    "hpack-bomb": case_hpack_bomb,
    "table-size": case_table_size,
    "request": case_request,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--public", default="/")
    p.add_argument("--protected", default="/")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--fill", type=int, default=0)
    p.add_argument("--headers", default="[]")
    p.add_argument("--body", default=None)
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--every", type=float, default=0.2)
    args = p.parse_args()
    CASES[args.case](args)


if __name__ == "__main__":
    main()
