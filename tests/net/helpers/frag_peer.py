"""The kernel side of tests/net/test_frag.sh (Debian's python3 with python3-scapy).

  frag_peer.py IP IFACE DMAC PORT SEED NJUNK

Sends hand-made IPv4 fragments to IP (Ethernet destination DMAC, out of IFACE) and watches
what comes back (a sniffer on IFACE; the reply's fragments are reassembled here):
  reversed   an echo request of 3000 bytes in 1480-byte fragments, last one first: answered,
             the reply's data equal to the request's;
  shuffled   one of 2000 bytes in 64-byte fragments, shuffled, every fragment sent twice:
             answered (a copy arriving after the datagram completed starts a new one, which
             expires);
  overlap    two datagrams whose fragments overlap (by 8 bytes; a fragment spanning a hole
             between two held ones): never answered;
  toolong    a last fragment at offset 65512 carrying 40 bytes (beyond 65535): never answered;
  tcp        8 TCP SYNs to PORT, each cut in two fragments (header split at byte 16), from
             different source ports, random ids: each answered with a SYN-ACK;
  timeout    (run with USTACK_IPFRAG_TIME=2) the first fragment of an echo request alone: an
             ICMP time exceeded, code 1, quoting its header, within 5 s; a datagram with
             only a later fragment: nothing;
  junk       NJUNK random fragments (ids, offsets, flags, lengths, protocols; seeded).
Prints "frag reversed=1 shuffled=1 overlap_silent=1 toolong_silent=1 synacks=8/8
timxceed=1 junk=N" and
exits 0 when every check held; 1 with the reasons on stderr otherwise.
"""
import logging
import random
import sys
import threading
import time

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import ICMP, IP, TCP, AsyncSniffer, Ether, IPerror, Raw, conf, defragment, sendp  # noqa: E402

conf.verb = 0


def frags(src, dst, ident, proto, l4, pieces):
    """IP fragments of the L4 bytes l4: pieces is a list of (offset, length, mf)."""
    out = []
    for off, ln, mf in pieces:
        out.append(IP(src=src, dst=dst, id=ident, proto=proto, flags="MF" if mf else 0, frag=off // 8)
                   / Raw(l4[off:off + ln] if off < len(l4) else b"\0" * ln))
    return out


def cut(l4, size):
    n = len(l4)
    return [(o, min(size, n - o), o + size < n) for o in range(0, n, size)]


def main():
    ip_u, iface, dmac, port, seed, njunk = sys.argv[1:7]
    port, njunk = int(port), int(njunk)
    rng = random.Random(int(seed))
    src = None
    # Our address on IFACE: the one scapy routes from towards ip_u.
    src = conf.route.route(ip_u)[1]
    eth = Ether(dst=dmac)
    errors = []

    def send(pkts):
        sendp([eth / p for p in pkts], iface=iface)

    def sniffing():
        # Wait until the capture socket (with its compiled filter) is open: on a loaded
        # machine (make net-san-test beside other work) compiling the filter took longer
        # than a fixed 0.3 s, and the replies went by before the sniffer saw them.
        up = threading.Event()
        s = AsyncSniffer(iface=iface, filter="src host %s" % ip_u, store=True, started_callback=up.set)
        s.start()
        if not up.wait(20):
            sys.exit("the sniffer on %s did not start within 20 s" % iface)
        time.sleep(0.1)
        return s

    def echo_replies(pk, ident):
        got = {}
        for p in defragment([p for p in pk if IP in p]):
            if IP in p and ICMP in p and p[ICMP].type == 0 and p[ICMP].id == ident:
                got[p[ICMP].seq] = bytes(p[ICMP].payload)
        return got

    results = {}
    # reversed
    data = bytes(rng.randrange(256) for _ in range(3000))
    l4 = bytes(ICMP(type=8, id=0x4101, seq=1) / Raw(data))
    s = sniffing()
    send(list(reversed(frags(src, ip_u, 0x5101, 1, l4, cut(l4, 1480)))))
    time.sleep(1.5)
    got = echo_replies(s.stop(), 0x4101)
    results["reversed"] = int(got.get(1) == data)
    if not results["reversed"]:
        errors.append("reversed: no (or a wrong) reply: %s" % {k: len(v) for k, v in got.items()})

    # shuffled and duplicated
    data = bytes(rng.randrange(256) for _ in range(2000))
    l4 = bytes(ICMP(type=8, id=0x4102, seq=2) / Raw(data))
    fl = frags(src, ip_u, 0x5102, 1, l4, cut(l4, 64))
    fl = fl + fl
    rng.shuffle(fl)
    s = sniffing()
    send(fl)
    time.sleep(1.5)
    got = echo_replies(s.stop(), 0x4102)
    results["shuffled"] = int(got.get(2) == data)
    if not results["shuffled"]:
        errors.append("shuffled+duplicated: no (or a wrong) reply")

    # overlaps: never answered
    l4 = bytes(ICMP(type=8, id=0x4103, seq=3) / Raw(b"o" * 1000))
    s = sniffing()
    send(frags(src, ip_u, 0x5103, 1, l4, [(0, 512, True), (504, 512, False)]))
    send(frags(src, ip_u, 0x5104, 1, l4, [(0, 256, True), (512, 256, True), (128, 512, True), (768, 240, False)]))
    # beyond 65535 bytes: never answered
    send(frags(src, ip_u, 0x5105, 1, l4, [(0, 512, True), (65512, 40, False)]))
    time.sleep(1.5)
    pk = s.stop()
    ans = [p for p in pk if IP in p and p[IP].proto == 1]
    results["overlap_silent"] = int(not any(ICMP in p and p[ICMP].type == 0 and p[ICMP].id == 0x4103
                                            for p in ans))
    results["toolong_silent"] = results["overlap_silent"]
    if not results["overlap_silent"]:
        errors.append("a datagram with overlapping or too long fragments was answered")

    # TCP SYNs in two fragments each
    s = sniffing()
    sports = [41000 + i for i in range(8)]
    for i, sp in enumerate(sports):
        t = TCP(sport=sp, dport=port, flags="S", seq=1000 + i, options=[("MSS", 1460), ("SAckOK", b""),
                                                                        ("NOP", None), ("WScale", 7)])
        raw = bytes(IP(src=src, dst=ip_u, proto=6) / t)[20:]  # with its checksum
        # A random id: the stack's hashes fold the 16-bit words of their input together, so
        # ids that move with the ports would put every SYN on the same side of the hand-off.
        send(frags(src, ip_u, rng.randrange(65536), 6, raw, [(0, 16, True), (16, len(raw) - 16, False)]))
    time.sleep(1.5)
    pk = s.stop()
    acked = {p[TCP].dport for p in pk if TCP in p and p[TCP].flags & 0x12 == 0x12 and p[TCP].sport == port}
    n = len(acked & set(sports))
    results["synacks"] = "%d/%d" % (n, len(sports))
    if n != len(sports):
        errors.append("fragmented SYNs: %d of %d answered" % (n, len(sports)))

    # timeout: fragment zero alone is reported, a later fragment alone is not
    l4 = bytes(ICMP(type=8, id=0x4106, seq=6) / Raw(b"t" * 2000))
    s = sniffing()
    send(frags(src, ip_u, 0x5106, 1, l4, [(0, 1480, True)]))
    send(frags(src, ip_u, 0x5107, 1, l4, [(1480, 528, False)]))
    time.sleep(5)
    pk = s.stop()
    te = [p[IPerror].id for p in pk if ICMP in p and p[ICMP].type == 11 and p[ICMP].code == 1 and IPerror in p]
    results["timxceed"] = te.count(0x5106)
    if te.count(0x5106) != 1 or 0x5107 in te:
        errors.append("time exceeded for the quoted ids %s, expected one for 0x5106 only" % [hex(i) for i in te])

    # junk
    junk = []
    for _ in range(njunk):
        proto = rng.choice([1, 6, 17, rng.randrange(256)])
        ln = rng.choice([0, 1, 7, 8, 9, 16, 64, 512, 1480, rng.randrange(1481)])
        junk.append(IP(src=src, dst=ip_u, id=rng.randrange(16), proto=proto,
                       flags=rng.choice([0, 1, 2, 3, 4, 5]), frag=rng.randrange(8192))
                    / Raw(bytes(rng.randrange(256) for _ in range(ln))))
    send(junk)
    results["junk"] = njunk
    print("frag " + " ".join("%s=%s" % kv for kv in results.items()), flush=True)
    for e in errors:
        print(e, file=sys.stderr, flush=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
