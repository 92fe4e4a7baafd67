"""Malformed IPv6, ICMPv6 and neighbour discovery frames for tests/net/test_ping6.sh
(Debian's python3 with python3-scapy), sent from the kernel side to ustackd.

  hostile6.py IFACE UMAC ULL UGL KLL KGL SEED NRAND

IFACE the kernel's interface, UMAC ustack's MAC, ULL/UGL its link-local and global
addresses, KLL/KGL the kernel's. Sends a few frames of each systematic class, each dropped
by ustack for exactly one reason, then NRAND seeded random mutations of valid frames.
Prints "malformed6 sent=N expect counter=min ..." on stdout: the least each ustack drop
counter must grow by.
"""
import random
import sys
import time

from scapy.all import conf, get_if_hwaddr  # noqa: E402
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr,  # noqa: E402
                                IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting, HBHOptUnknown)
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.utils6 import in6_getnsma, in6_getnsmac  # noqa: E402
from scapy.pton_ntop import inet_pton  # noqa: E402
import socket  # noqa: E402

REPEAT = 4


def main():
    if len(sys.argv) != 9:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    iface, umac, ull, ugl, kll, kgl, seed, nrand = sys.argv[1:]
    rng = random.Random(int(seed))
    kmac = get_if_hwaddr(iface)
    sn = socket.inet_ntop(socket.AF_INET6, in6_getnsma(inet_pton(socket.AF_INET6, ull)))
    snmac = in6_getnsmac(inet_pton(socket.AF_INET6, sn))
    frames, expect = [], {}

    def add(counter, frame):
        for _ in range(REPEAT):
            frames.append(bytes(frame))
        if counter:
            expect[counter] = expect.get(counter, 0) + REPEAT

    e = Ether(src=kmac, dst=umac)
    ok_echo = e / IPv6(src=kll, dst=ull) / ICMPv6EchoRequest(id=7, seq=1, data=b"p" * 32)
    ok_ns = (Ether(src=kmac, dst=snmac) / IPv6(src=kll, dst=sn, hlim=255) / ICMPv6ND_NS(tgt=ull)
             / ICMPv6NDOptSrcLLAddr(lladdr=kmac))
    # Neighbour discovery: hop limit below 255, an option of length 0, DAD with a link-layer
    # option (RFC 4861 7.1.1).
    add("nd_drop_bad", Ether(src=kmac, dst=snmac) / IPv6(src=kll, dst=sn, hlim=64)
        / ICMPv6ND_NS(tgt=ull) / ICMPv6NDOptSrcLLAddr(lladdr=kmac))
    add("nd_drop_bad", Ether(src=kmac, dst=snmac) / IPv6(src=kll, dst=sn, hlim=255)
        / ICMPv6ND_NS(tgt=ull) / ICMPv6NDOptSrcLLAddr(len=0, lladdr=kmac))
    add("nd_drop_bad", Ether(src=kmac, dst=snmac) / IPv6(src="::", dst=sn, hlim=255)
        / ICMPv6ND_NS(tgt=ull) / ICMPv6NDOptSrcLLAddr(lladdr=kmac))
    # ICMPv6 with a wrong checksum.
    add("icmp6_drop", e / IPv6(src=kll, dst=ull) / ICMPv6EchoRequest(cksum=0x1234, data=b"x"))
    # Routing header type 0 with segments left (RFC 5095), to the global address.
    add("ip6_drop_rh", e / IPv6(src=kgl, dst=ugl) / IPv6ExtHdrRouting(type=0, addresses=[kgl], segleft=1)
        / ICMPv6EchoRequest())
    # A fragment that is not the last with a length not a multiple of 8 (21 bytes): dropped
    # with a Parameter Problem (RFC 8200 4.5).
    add("ip6_drop_frag", e / IPv6(src=kll, dst=ull) / IPv6ExtHdrFragment(offset=0, m=1, id=99)
        / ICMPv6EchoRequest(data=b"f" * 13))
    # A destination option whose type says "discard" (high bits 01).
    add("ip6_drop_opt", e / IPv6(src=kll, dst=ull)
        / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x7e, optdata=b"\0\0\0\0")])
        / ICMPv6EchoRequest())
    # Hop-by-hop after another header; nine destination options headers.
    add("ip6_drop_exthdr", e / IPv6(src=kll, dst=ull) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()
        / ICMPv6EchoRequest())
    chain = IPv6ExtHdrDestOpt()
    for _ in range(8):
        chain = chain / IPv6ExtHdrDestOpt()
    add("ip6_drop_exthdr", e / IPv6(src=kll, dst=ull) / chain / ICMPv6EchoRequest())
    # Raw: truncated header, version 4, payload length beyond the frame.
    raw = bytearray(bytes(ok_echo))
    add("ip6_drop_len", bytes(raw[:14 + 30]))
    v4 = bytearray(raw)
    v4[14] = 0x45
    add("ip6_drop_hdr", bytes(v4))
    longer = bytearray(raw)
    longer[18:20] = (len(raw) - 54 + 100).to_bytes(2, "big")
    add("ip6_drop_len", bytes(longer))
    # A multicast source.
    add("ip6_drop_src", e / IPv6(src="ff02::1", dst=ull) / ICMPv6EchoRequest())
    # Seeded random mutations of valid frames.
    bases = [bytes(ok_echo), bytes(ok_ns),
             bytes(e / IPv6(src=kgl, dst=ugl) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(data=b"y" * 40))]
    for _ in range(int(nrand)):
        b = bytearray(rng.choice(bases))
        for _ in range(rng.randrange(1, 6)):
            m = rng.random()
            if len(b) <= 15:
                b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            elif m < 0.6:
                b[14 + rng.randrange(len(b) - 14)] = rng.randrange(256)
            elif m < 0.8:
                del b[14 + rng.randrange(len(b) - 14):]
            else:
                b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        frames.append(bytes(b))

    s = conf.L2socket(iface=iface)
    sent = 0
    for i, f in enumerate(frames):
        try:
            s.send(f)
            sent += 1
        except OSError:
            pass
        if i % 100 == 99:
            time.sleep(0.02)  # do not overflow the device ring
    s.close()
    print("malformed6 sent=%d expect %s" % (sent, " ".join("%s=%d" % kv for kv in sorted(expect.items()))),
          flush=True)


if __name__ == "__main__":
    main()
