#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_input.c into tests/fuzz/corpus/fuzz_input/.

Each seed is a short script in the harness's record format ([op][len le16][payload]) that
walks one connection set up by the harness into a different part of TCP, so the fuzzer
starts from inputs that already pass sequence, acknowledgement and PAWS checks.

Connections the harness sets up (op 1 selector): 0 passive ESTABLISHED with TS/SACK/WS,
1 passive SYN-RECEIVED, 2 active SYN-SENT, 3 active ESTABLISHED without options and with
6000 bytes queued, 4 TIME-WAIT; 5 (one past the end) sends with the ports as given.
Socket ids (op 3 selector): 0 listener, 1 passive, 2 SYN-SENT, 3 active with data.
"""
import os
import struct
import sys

SEQ_REL, ACK_REL, FIX_DOFF, TS, BAD_CSUM, RX_OK, SACK_REL = (1 << i for i in range(7))
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
REL = SEQ_REL | ACK_REL | FIX_DOFF


def rec(op, payload):
    return struct.pack("<BH", op, len(payload)) + payload


def ts_opt():
    return b"\x01\x01\x08\x0a" + b"\0" * 8


def sack_opt(*blocks):
    body = b"".join(struct.pack(">ii", a, b) for a, b in blocks)
    return b"\x01\x01\x05" + bytes([2 + len(body)]) + body


def tcp(sel, mode, flags, seq=0, ack=0, win=65535, opts=b"", data=b"", ports=(0, 0)):
    opts += b"\0" * (-len(opts) % 4)
    doff = (20 + len(opts)) // 4
    hdr = struct.pack(">HHIIBBHHH", ports[0], ports[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags,
                      win, 0, 0)
    return rec(1, bytes([sel, mode]) + hdr + opts + data)


def icmp_err(sel, typ, code, word, delta, ports=(0, 0), v6=False):
    """op 35: an ICMP (or ICMPv6) error quoting connection sel's ports and its highest sequence
    number sent plus delta (signed 16 bits)."""
    return rec(35, bytes([sel, typ, code]) + struct.pack(">IhHHB", word, delta if delta < 0x8000
                                                        else delta - 0x10000, ports[0], ports[1],
                                                        1 if v6 else 0))


def wait_us(us):
    return rec(2, bytes([0, us & 0xFF, us >> 8]))


def wait_ms(ms):
    return rec(2, bytes([1, ms & 0xFF, ms >> 8]))


def wait_timer():
    return rec(2, bytes([3]))


def api(sd, call, arg=0, val=0, data=b""):
    return rec(3, bytes([sd, call]) + struct.pack("<Hh", arg, val) + data)


SEND, RECV, PEEK_CONSUME, CLOSE, SHUTDOWN, ABORT, SETOPT, GETOPT, ACCEPT = 0, 2, 4, 5, 6, 7, 8, 9, 10
SO_KEEPALIVE, TCP_NODELAY, TCP_KEEPIDLE = 3, 7, 9

def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(">%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp_echo(data):
    """An ICMP echo request from the peer, with correct checksums."""
    icmp = struct.pack(">BBHHH", 8, 0, 0, 7, 1) + data
    icmp = icmp[:2] + struct.pack(">H", csum(icmp)) + icmp[4:]
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0x4000, 64, 1, 0,
                     bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1]))
    ip = ip[:10] + struct.pack(">H", csum(ip)) + ip[12:]
    eth = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0])
    return eth + ip + icmp


# IPv6 records (op 65): mode bits, first Next Header, hop limit, then the packet body.
DST_GL, DST_GROUP, SRC_GL, SRC_UNSPEC, CSUM6 = 1, 2, 4, 8, 16
OUR_LL = bytes([0xfe, 0x80] + [0] * 9 + [0xff, 0xfe, 0, 0, 1])
OUR_GL = bytes([0x20, 0x01, 0, 2] + [0] * 11 + [1])


def ip6(mode, nh, hlim, body):
    return rec(65, bytes([mode | CSUM6, nh, hlim]) + body)


def icmp6(typ, code=0, word=0, body=b""):
    return struct.pack(">BBHI", typ, code, 0, word) + body


def ns(target, lla=True):
    return icmp6(135, body=target + (b"\x01\x01\x02\0\0\0\0\x02" if lla else b""))


def tcp6(sport, dport, flags, seq=0, ack=0, data=b"", opts=b""):
    """A TCP header for an IPv6 record (the harness fixes its checksum with CSUM6)."""
    hl = 20 + len(opts)
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, (hl // 4) << 4, flags, 65535, 0,
                       0) + opts + data


REQ = b"GET / HTTP/1.0\r\n\r\n"

SEEDS = {
    "data_in_order": tcp(0, REL | TS, ACK | PSH, opts=ts_opt(), data=REQ) + wait_ms(50)
    + api(1, RECV, 4096) + api(1, SEND, 300, data=b"HTTP/1.0 200 OK\r\n") + wait_ms(1)
    + tcp(0, REL | TS, ACK, opts=ts_opt()) + wait_timer(),
    "partial_ack_dupacks": tcp(3, REL, ACK, ack=-3000) + tcp(3, REL, ACK, ack=-3000)
    + tcp(3, REL, ACK, ack=-3000) + tcp(3, REL, ACK, ack=-3000) + wait_ms(5)
    + tcp(3, REL, ACK) + api(3, SEND, 20000, data=b"x"),
    "sack_recovery": api(1, SEND, 12000, data=b"abc") + wait_ms(1)
    + tcp(0, REL | TS | SACK_REL, ACK, ack=-8000, opts=ts_opt() + sack_opt((1448, 2896)))
    + tcp(0, REL | TS | SACK_REL, ACK, ack=-8000,
          opts=ts_opt() + sack_opt((1448, 2896), (4344, 5792)))
    + tcp(0, REL | TS | SACK_REL, ACK, ack=-8000,
          opts=ts_opt() + sack_opt((1448, 7240))) + wait_ms(10) + tcp(0, REL | TS, ACK, opts=ts_opt()),
    "peer_fin_then_close": tcp(0, REL | TS, FIN | ACK, opts=ts_opt()) + wait_ms(1)
    + api(1, RECV, 100) + api(1, CLOSE) + wait_ms(1) + tcp(0, REL | TS, ACK, opts=ts_opt())
    + wait_timer(),
    "rst_syn_sent": tcp(2, ACK_REL | FIX_DOFF, RST | ACK) + api(2, GETOPT, 1) + api(2, CLOSE),
    "synack_syn_sent": tcp(2, ACK_REL | FIX_DOFF | TS, SYN | ACK, seq=900000,
                           opts=b"\x02\x04\x05\xb4\x04\x02" + ts_opt()[2:] + b"\x01\x03\x03\x07")
    + tcp(2, REL | TS, ACK | PSH, opts=ts_opt(), data=b"hello") + api(2, RECV, 64)
    + api(2, SHUTDOWN, 1) + wait_timer(),
    "new_syn_accept": tcp(5, FIX_DOFF, SYN, seq=12345, ports=(41000, 80),
                          opts=b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x02")
    + wait_ms(1) + tcp(5, REL, ACK) + api(0, ACCEPT) + wait_timer(),
    "out_of_order": tcp(0, REL | TS, ACK, seq=1000, opts=ts_opt(), data=b"B" * 1000)
    + tcp(0, REL | TS, ACK, seq=3000, opts=ts_opt(), data=b"D" * 500)
    + tcp(0, REL | TS, ACK, opts=ts_opt(), data=b"A" * 1000) + api(1, PEEK_CONSUME, 1500)
    + wait_ms(40),
    "zero_window_persist": tcp(3, REL, ACK, ack=-4000, win=0) + wait_timer() + wait_timer()
    + wait_timer() + tcp(3, REL, ACK, win=8192) + wait_ms(1),
    "rto_until_drop": b"".join(wait_timer() for _ in range(24)) + api(3, GETOPT, 1),
    "time_wait_syn": tcp(4, REL | TS, FIN | ACK, seq=-1, opts=ts_opt()) + tcp(4, ACK_REL | TS, SYN,
                                                                               seq=9000000,
                                                                               opts=ts_opt())
    + wait_ms(1) + rec(2, bytes([2, 61, 0])),
    "keepalive": api(1, SETOPT, SO_KEEPALIVE, 1) + api(1, SETOPT, TCP_KEEPIDLE, 1)
    + api(1, SETOPT, TCP_NODELAY, 1) + rec(2, bytes([2, 2, 0])) + wait_timer() + wait_timer()
    + wait_timer() + wait_timer(),
    "ip6_nd_echo": ip6(DST_GROUP, 58, 255, ns(OUR_LL)) + ip6(0, 58, 64, icmp6(128, 0, 0x10001, b"ping"))
    + ip6(DST_GL | SRC_GL, 58, 64, icmp6(128, 0, 0x10002, b"x" * 100)) + wait_ms(1)
    + ip6(SRC_UNSPEC | DST_GROUP | DST_GL, 58, 255, ns(OUR_GL, lla=False))
    + rec(2, bytes([2, 6, 0])) + wait_timer() + wait_timer(),
    "ip6_ext_headers": ip6(0, 0, 64, bytes([60, 0, 1, 4, 0, 0, 0, 0, 58, 0, 0xbe, 4, 0, 0, 0, 0])
                           + icmp6(128, 0, 1))
    + ip6(0, 43, 64, bytes([58, 2, 0, 1, 0, 0, 0, 0]) + b"\0" * 16 + icmp6(128, 0, 2))
    + ip6(0, 44, 64, bytes([58, 0, 0, 0, 0, 0, 0, 1]) + icmp6(128, 0, 3))
    + ip6(0, 253, 64, b"\0" * 8),
    "ip6_tcp": ip6(DST_GROUP | DST_GL | SRC_GL, 58, 255, ns(OUR_GL))
    + ip6(DST_GL | SRC_GL, 6, 64, tcp6(41000, 81, SYN, 100, opts=b"\x02\x04\x05\xa0"))
    + ip6(DST_GL | SRC_GL, 6, 64, tcp6(41001, 82, SYN, 200))
    + ip6(DST_GL | SRC_GL, 6, 64, tcp6(41000, 81, ACK, 101, 12345))
    + ip6(SRC_GL, 6, 64, tcp6(41002, 81, SYN, 300))
    + ip6(DST_GL | SRC_GL, 6, 64, tcp6(8083, 50000, SYN | ACK, 400, 1))
    + ip6(DST_GL | SRC_GL, 6, 64, tcp6(41000, 81, RST, 101)) + wait_ms(1) + wait_timer(),
    "icmp_errors": icmp_err(3, 3, 4, 1200, -1000) + wait_ms(1) + icmp_err(3, 3, 4, 0, -1000)
    + icmp_err(3, 3, 4, 300, -500) + icmp_err(2, 3, 1, 0, -1) + icmp_err(1, 3, 1, 0, -1)
    + icmp_err(0, 11, 0, 0, 0) + icmp_err(0, 3, 3, 0, -70000 & 0xFFFF)
    + icmp_err(5, 2, 0, 1280, 1, ports=(50003, 8083), v6=True)
    + icmp_err(5, 1, 4, 0, 1, ports=(50003, 8083), v6=True) + wait_timer() + wait_timer(),
    "raw_frames": rec(0, icmp_echo(b"abcdefgh")) + rec(4, b"")
    + rec(0, b"\xff" * 14 + b"\x08\x06" + b"\0" * 28),
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                         "fuzz_input")
os.makedirs(out, exist_ok=True)
for name, blob in SEEDS.items():
    assert len(blob) < 4096, name
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(blob)
print(f"wrote {len(SEEDS)} seeds to {out}")
