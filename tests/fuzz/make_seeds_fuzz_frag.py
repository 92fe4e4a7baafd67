#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_frag.c into tests/fuzz/corpus/fuzz_frag/.

Records are [op][len le16][payload]: op 0 a raw fragment (id, proto, flags/offset, data),
op 1 an echo request cut into pieces sent in the order given, op 2 time, op 3 a raw frame,
op 4 a raw IPv6 fragment (id, next header, offset/M, data), op 5 an ICMPv6 echo cut up.
"""
import os
import struct
import sys


def rec(op, payload):
    return struct.pack("<BH", op, len(payload)) + payload


def raw(ident, proto, frag, data):
    return rec(0, bytes([ident, proto]) + struct.pack(">H", frag) + data)


def cut(ident, dlen, per8, order):
    return rec(1, bytes([ident]) + struct.pack("<H", dlen) + bytes([per8 - 1]) + bytes(order))


def raw6(ident, nh, fo, data):
    return rec(4, bytes([ident, nh]) + struct.pack(">H", fo) + data)


def cut6(ident, mlen, per8, order):
    return rec(5, bytes([ident]) + struct.pack("<H", mlen - 8) + bytes([per8 - 1]) + bytes(order))


def secs(n):
    return rec(2, bytes([n]))


MF = 0x2000
seeds = {
    "in_order_4000": cut(1, 4000, 185, [0, 1, 2]),
    "reversed_3000": cut(2, 3000, 32, list(range(11, -1, -1))),
    "dup_and_missing": cut(3, 2000, 64, [0, 0, 2, 2, 3]) + secs(31),
    "max_size": cut(4, 65507, 185, list(range(45))),
    "overlap": raw(5, 0, MF, b"\x08\0\0\0" + b"A" * 12) + raw(5, 0, MF | 1, b"B" * 16) + raw(5, 0, 2, b"C" * 8),
    "ping_of_death": raw(6, 0, 0x1fff, b"x" * 16),
    "tcp_syn_split": raw(7, 1, MF, struct.pack(">HHIIBBHHH", 40000, 80, 1000, 0, 0x50, 0x02, 65535, 0, 0)[:16])
    + raw(7, 1, 2, struct.pack(">HHIIBBHHH", 40000, 80, 1000, 0, 0x50, 0x02, 65535, 0, 0)[16:]),
    "memory": b"".join(cut(i, 20000, 185, [0, 1, 2, 3]) for i in range(8)) + secs(20) + cut(1, 100, 1, [0, 1]),
    "tiny": cut(0, 4000, 1, list(range(256)) + list(range(255, 0, -1))),
    "v6_in_order_4000": cut6(1, 4008, 181, [0, 1, 2]),
    "v6_reversed_3000": cut6(2, 3008, 32, list(range(11, -1, -1))),
    "v6_max_size": cut6(3, 65535, 181, list(range(46))),
    "v6_dup_and_missing": cut6(4, 2008, 64, [0, 0, 2, 2, 3]) + secs(31),
    "v6_overlap": raw6(5, 0, 1, b"\x80\0\0\0" + b"A" * 12) + raw6(5, 0, 8 | 1, b"B" * 16) + raw6(5, 0, 16, b"C" * 8),
    "v6_bad_len": raw6(6, 0, 1, b"x" * 13),
    "v6_too_big": raw6(6, 0, 0xfff8, b"x" * 16),
    "v6_timeout_first": raw6(7, 0, 1, b"\x80\0\0\0" + b"z" * 12) + secs(31),
    "v6_mixed_v4": cut(1, 3000, 100, [0, 1, 2, 3]) + cut6(1, 3008, 100, [3, 2, 1, 0]),
}
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "fuzz_frag")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
