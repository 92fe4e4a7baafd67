"""The kernel side of tests/net/test_hostile.sh (Debian's python3 with python3-scapy).

  inject IP PORT IFACE      a download of N bytes from the SOURCE service; while it flows,
                            blind RSTs with in-window sequence numbers other than rcv_nxt
                            and in-window SYNs, and ACKs with hostile SACK blocks, spoofed
                            as this connection's peer; the download must complete
                            byte-exact. Prints "inject rst=R syn=S sack=K bytes=N ...".
  reset IP PORT IFACE       a download; one RST with seq = ustack's rcv_nxt: the connection
                            must be reset (ECONNRESET here after we send a byte). "reset ok".
  zerowin IP PORT SECS      a download we never read (SO_RCVBUF 64 KiB): prints "ready",
                            holds it for SECS s (or until killed).
  slowread IP PORT SECS     a download read slowly (data always in flight): "ready" once data
                            arrives, read for SECS s (or until killed).
  hold IP PORT N SECS       N echo connections (one line echoed on each), "ready", held
                            for SECS s (or until killed).
  slowloris IP PORT N SECS  N connections each sending a partial HTTP request a byte at a time
                            (one byte per connection per second) for SECS s; prints
                            "slowloris opened=N alive=K".
  malformed IP IFACE DMAC PORT SEED NRAND
                            systematic malformed frames (Ethernet, ARP, IPv4, ICMP, TCP) and
                            NRAND seeded random mutations of valid ones, sent to DMAC; prints
                            "malformed sent=N" and the count of each class on stderr.
Exit status 0 when the named check held, 1 (with a reason on stderr) when not.
"""
import errno
import os
import random
import socket
import struct
import sys
import threading
import time

PAT = bytes(i % 251 for i in range(251))


def fail(msg):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(1)


def connect(ip, port, rcvbuf=0, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((ip, port))
    return s


def hold_for(secs):
    """Keep the connections until SECS pass or a signal ends the process."""
    time.sleep(secs)


# ------------------------------------------------------------------ scapy helpers

def scapy():
    import logging
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    import scapy.all as sa
    sa.conf.verb = 0
    return sa


def sniff_from(sa, iface, ip_u, port, lport, timeout=5):
    """One segment ustack sent on this connection (its ack is ustack's rcv_nxt)."""
    got = sa.sniff(iface=iface, count=1, timeout=timeout,
                   lfilter=lambda p: p.haslayer(sa.TCP) and p[sa.IP].src == ip_u
                   and p[sa.TCP].sport == port and p[sa.TCP].dport == lport)
    if not got:
        fail("no segment from ustack seen on %s within %d s" % (iface, timeout))
    return got[0]


class Reader(threading.Thread):
    """Reads a download, checks the pattern as it goes; rate limited while self.slow."""

    def __init__(self, s, total):
        super().__init__(daemon=True)
        self.s, self.total = s, total
        self.n = 0
        self.slow = True
        self.err = None
        self.eof = False

    def run(self):
        try:
            while True:
                b = self.s.recv(16384)
                if not b:
                    self.eof = True
                    return
                o = self.n % 251
                want = (PAT * (len(b) // 251 + 2))[o:o + len(b)]
                if b != want:
                    self.err = "byte mismatch at offset %d" % self.n
                    return
                self.n += len(b)
                if self.slow:
                    time.sleep(0.004)  # about 4 MB/s
        except OSError as e:
            self.err = e


def cmd_inject(ip, port, iface):
    sa = scapy()
    total = 24 << 20
    s = connect(ip, port, timeout=30)
    lport = s.getsockname()[1]
    s.sendall(b"%d\n" % total)
    r = Reader(s, total)
    r.start()
    t0 = time.time()
    while r.n < (1 << 20) and r.is_alive() and time.time() - t0 < 10:
        time.sleep(0.01)
    if r.n < (1 << 20):
        fail("download stalled at %d bytes before the injection (%s)" % (r.n, r.err))
    p = sniff_from(sa, iface, ip, port, lport)
    rcv_nxt, wnd = p[sa.TCP].ack, p[sa.TCP].window  # unscaled: a lower bound of the window
    if wnd < 64:
        fail("ustack advertises a window of %d (unscaled): too small to test" % wnd)
    eth = sa.Ether(src=p[sa.Ether].dst, dst=p[sa.Ether].src)
    ipl = sa.IP(src=p[sa.IP].dst, dst=ip)
    rng = random.Random(5961)
    offs = [1, 2, 3, 100, 1000, wnd // 2, wnd - 1] + [rng.randrange(1, wnd) for _ in range(43)]
    pkts = []
    nrst = nsyn = 0
    for k in offs:
        for fl in ("R", "RA"):
            pkts.append(eth / ipl / sa.TCP(sport=lport, dport=port, flags=fl, seq=(rcv_nxt + k) & 0xffffffff,
                                           ack=p[sa.TCP].seq, window=0))
            nrst += 1
    for k in [0] + offs[:24]:
        pkts.append(eth / ipl / sa.TCP(sport=lport, dport=port, flags="S", seq=(rcv_nxt + k) & 0xffffffff,
                                       window=1024, options=[("MSS", 1460)]))
        nsyn += 1
    rng.shuffle(pkts)
    # ACKs at rcv_nxt with an acknowledgment the peer just sent (so acceptable, and processed)
    # carrying hostile SACK blocks: beyond snd_max, reversed, empty, below snd_una, the whole
    # sequence space. A sender must ignore them. Sent at once, before snd_una moves on far.
    kp = sa.sniff(iface=iface, count=1, timeout=5,
                  lfilter=lambda q: q.haslayer(sa.TCP) and q[sa.IP].src != ip and q[sa.TCP].sport == lport
                  and q[sa.TCP].dport == port)
    if not kp:
        fail("no segment of the download's peer seen")
    una, kwnd = kp[0][sa.TCP].ack, kp[0][sa.TCP].window
    sacks = []
    for blocks in ([(una + (1 << 20), una + (2 << 20))], [(una + 5000, una + 1000)], [(una + 10, una + 10)],
                   [(una - 100000, una - 1000)], [(una + 1, una - 1)], [(0, 0xffffffff)],
                   [(una + (4 << 20) + 1000 * i, una + (4 << 20) + 1000 * i + 500) for i in range(1, 5)],
                   [(rng.getrandbits(32), rng.getrandbits(32)) for _ in range(4)]):
        blocks = [(a & 0xffffffff, b & 0xffffffff) for a, b in blocks]
        for _ in range(3):
            sacks.append(eth / ipl / sa.TCP(sport=lport, dport=port, flags="A", seq=rcv_nxt, ack=una,
                                            window=kwnd, options=[("NOP", None), ("NOP", None),
                                                                 ("SAck", tuple(x for bl in blocks for x in bl))]))
    sa.sendp(sacks, iface=iface)
    nsack = len(sacks)
    n0 = r.n
    # Sent in a few bursts spread over about a second, while the data keeps flowing.
    for i in range(0, len(pkts), 25):
        sa.sendp(pkts[i:i + 25], iface=iface)
        time.sleep(0.2)
    p2 = sniff_from(sa, iface, ip, port, lport)
    if p2[sa.TCP].flags & 0x04:
        fail("ustack reset the connection after the blind injection")
    if p2[sa.TCP].ack != rcv_nxt:
        fail("ustack's rcv_nxt moved from %d to %d during the injection" % (rcv_nxt, p2[sa.TCP].ack))
    t1 = time.time()
    while r.is_alive() and r.n == n0 and time.time() - t1 < 5:
        time.sleep(0.01)
    if r.n == n0:
        fail("no data flowed after the injection (%s)" % r.err)
    r.slow = False
    r.join(60)
    if r.err or r.is_alive():
        fail("download after the injection: %s, %d of %d bytes" % (r.err or "timeout", r.n, total))
    if r.n != total:
        fail("download ended after %d of %d bytes" % (r.n, total))
    s.close()
    print("inject rst=%d syn=%d sack=%d bytes=%d rcv_nxt=%d wnd=%d" % (nrst, nsyn, nsack, r.n, rcv_nxt, wnd),
          flush=True)


def cmd_reset(ip, port, iface):
    sa = scapy()
    s = connect(ip, port, timeout=30)
    lport = s.getsockname()[1]
    s.sendall(b"%d\n" % (1 << 30))
    r = Reader(s, 1 << 30)
    r.start()
    t0 = time.time()
    while r.n < (256 << 10) and r.is_alive() and time.time() - t0 < 10:
        time.sleep(0.01)
    if r.n < (256 << 10):
        fail("download stalled at %d bytes before the injection (%s)" % (r.n, r.err))
    p = sniff_from(sa, iface, ip, port, lport)
    rst = (sa.Ether(src=p[sa.Ether].dst, dst=p[sa.Ether].src) / sa.IP(src=p[sa.IP].dst, dst=ip)
           / sa.TCP(sport=lport, dport=port, flags="R", seq=p[sa.TCP].ack, window=0))
    sa.sendp(rst, iface=iface)
    time.sleep(0.5)
    try:
        s.send(b"x")  # ustack answers for a connection it no longer has with a RST
    except OSError:
        pass
    r.slow = False
    r.join(10)
    if r.is_alive():
        fail("the connection survived a RST with seq = rcv_nxt (%d bytes read)" % r.n)
    if not isinstance(r.err, OSError) or r.err.errno != errno.ECONNRESET:
        fail("after a RST with seq = rcv_nxt: %s, eof=%s (expected ECONNRESET)" % (r.err, r.eof))
    print("reset ok bytes=%d" % r.n, flush=True)


def cmd_zerowin(ip, port, secs):
    s = connect(ip, port, rcvbuf=65536, timeout=30)
    s.sendall(b"%d\n" % (1 << 30))
    print("ready %d" % s.getsockname()[1], flush=True)
    hold_for(secs)


def cmd_slowread(ip, port, secs):
    """A download read at about 1.6 MB/s (so the sender always has data in flight)."""
    s = connect(ip, port, timeout=30)
    s.sendall(b"%d\n" % (1 << 30))
    s.settimeout(0.5)
    n = 0
    end = time.time() + secs
    while time.time() < end:
        try:
            b = s.recv(16384)
        except socket.timeout:
            continue
        except OSError:
            break
        if not b:
            break
        if n == 0:
            print("ready", flush=True)
        n += len(b)
        time.sleep(0.01)


def cmd_hold(ip, port, n, secs):
    socks = []
    for i in range(n):
        s = connect(ip, port)
        s.sendall(b"hold %d\n" % i)
        want = b"hold %d\n" % i
        got = b""
        while len(got) < len(want):
            b = s.recv(100)
            if not b:
                fail("echo connection %d closed" % i)
            got += b
        if got != want:
            fail("echo connection %d: %r" % (i, got))
        socks.append(s)
    print("ready", flush=True)
    hold_for(secs)


def cmd_slowloris(ip, port, n, secs):
    socks = []
    for i in range(n):
        try:
            s = connect(ip, port, timeout=5)
        except OSError as e:
            fail("slowloris connection %d: %s" % (i, e))
        s.sendall(b"GET / HTTP/1.1\r\nHost: ustack\r\n")
        s.setblocking(False)
        socks.append(s)
    print("slowloris %d open" % n, file=sys.stderr, flush=True)
    end = time.time() + secs
    dead = set()
    while time.time() < end:
        for i, s in enumerate(socks):
            if i in dead:
                continue
            try:
                s.send(b"a")  # the header line "Host: ustack" ... "aaa" never ends
                if s.recv(100) is not None:
                    dead.add(i)  # the server answered or closed a request it has not seen end
            except BlockingIOError:
                pass
            except OSError:
                dead.add(i)
        time.sleep(1)
    print("slowloris opened=%d alive=%d" % (n, n - len(dead)), flush=True)


# ------------------------------------------------------------------ malformed frames

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ipv4(src, dst, payload, proto=6, ver=4, ihl=5, tos=0, tlen=None, ident=1, frag=0x4000, ttl=64,
         ckx=0, opts=b""):
    """An IPv4 header (checksum XORed with ckx, so any ckx != 0 makes it wrong) + payload."""
    hl = 20 + len(opts)
    if tlen is None:
        tlen = hl + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", (ver << 4) | ihl, tos, tlen & 0xffff, ident, frag, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst)) + opts
    return h[:10] + struct.pack("!H", csum(h) ^ ckx) + h[12:] + payload


def tcp(src, dst, sport, dport, seq=1, ack=0, flags=0x02, wnd=65535, opts=b"", data=b"", doff=None,
        ckx=0, urp=0):
    if doff is None:
        doff = (20 + len(opts)) // 4
    h = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xffffffff, ack & 0xffffffff, (doff & 15) << 4,
                    flags & 0xff, wnd, 0, urp) + opts
    seg = h + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    return seg[:16] + struct.pack("!H", csum(pseudo + seg) ^ ckx) + seg[18:]


def icmp(typ, code, rest=b"\0\0\0\0", data=b"", ckx=0):
    h = struct.pack("!BBH", typ, code, 0) + rest + data
    return h[:2] + struct.pack("!H", csum(h) ^ ckx) + h[4:]


def arp(op=1, htype=1, ptype=0x0800, hlen=6, plen=4, sha=b"\x02\0\0\0\0\1", spa="0.0.0.0",
        tha=b"\0" * 6, tpa="0.0.0.0"):
    return struct.pack("!HHBBH", htype, ptype, hlen, plen, op) + sha + socket.inet_aton(spa) + tha + \
        socket.inet_aton(tpa)


def cmd_malformed(ip_u, iface, dmac_s, port, seed, nrand):
    sa = scapy()
    dmac = bytes.fromhex(dmac_s.replace(":", ""))
    smac = bytes.fromhex(sa.get_if_hwaddr(iface).replace(":", ""))
    ip_k = sa.get_if_addr(iface)
    net = ip_u.rsplit(".", 1)[0]
    other = net + ".77"  # a neighbour that does not exist (never the real peer: no ARP poisoning)
    rng = random.Random(seed)
    frames = []
    classes = {}

    def add(cls, payload, etype=0x0800, dst=dmac):
        frames.append(dst + smac + struct.pack("!H", etype) + payload)
        classes[cls] = classes.get(cls, 0) + 1

    def sp():
        return rng.randrange(1024, 65535)

    def syn(**kw):
        return tcp(ip_k, ip_u, sp(), port, seq=rng.getrandbits(32), **kw)

    good = ipv4(ip_k, ip_u, syn())
    # Ethernet: unknown types, VLAN tags, another destination, runts.
    for et in (0x0000, 0x05dc, 0x8100, 0x88a8, 0x88cc, 0x9000, 0xffff):
        add("eth_type", good, et)
    add("eth_dst", good, dst=b"\x02\x11\x22\x33\x44\x55")
    for n in range(0, 14):
        frames.append((dmac + smac + b"\x08\x00")[:n])
        classes["eth_short"] = classes.get("eth_short", 0) + 1
    # IPv4 header fields.
    for v in range(16):
        if v != 4:
            add("ip_version", ipv4(ip_k, ip_u, syn(), ver=v))
    for ihl in range(5):
        add("ip_ihl_short", ipv4(ip_k, ip_u, syn(), ihl=ihl))
    for ihl in range(6, 16):
        add("ip_ihl_long", ipv4(ip_k, ip_u, b"", ihl=ihl, tlen=20))  # IHL > length
        opts = (b"\x01" * (ihl * 4 - 20 - 1)) + b"\x00"
        add("ip_options", ipv4(ip_k, ip_u, syn(), ihl=ihl, opts=opts))
    for tl in (0, 1, 19, 20, 21, 39):
        add("ip_tlen_short", ipv4(ip_k, ip_u, syn(), tlen=tl))
    for tl in (61, 100, 1500, 65535):
        add("ip_tlen_long", ipv4(ip_k, ip_u, syn(), tlen=tl))
    for _ in range(20):
        add("ip_csum", ipv4(ip_k, ip_u, syn(), ckx=rng.randrange(1, 65536)))
    for fr in (0x2000, 0x2001, 0x0001, 0x1fff, 0x6000, 0x8000 | 0x2000, 0x0100):
        add("ip_frag", ipv4(ip_k, ip_u, syn(), frag=fr))
    add("ip_ttl0", ipv4(ip_k, ip_u, syn(), ttl=0))
    for tos in (0xff, 0x03):
        add("ip_tos", ipv4(ip_k, ip_u, syn(), tos=tos))
    for proto in (0, 2, 47, 41, 50, 132, 255):  # not 1, 6 or 17: ICMP, TCP and UDP are served
        add("ip_proto", ipv4(ip_k, ip_u, os.urandom(20), proto=proto))
    for dst in (net + ".3", net + ".255", "255.255.255.255", "224.0.0.1", "0.0.0.0"):
        add("ip_dst", ipv4(ip_k, dst, tcp(ip_k, dst, sp(), port)))
    for src in ("0.0.0.0", "127.0.0.1", "224.0.0.5", "255.255.255.255", ip_u, net + ".255"):
        add("ip_src", ipv4(src, ip_u, tcp(src, ip_u, sp(), port)))
    # ICMP.
    add("icmp_csum", ipv4(ip_k, ip_u, icmp(8, 0, data=b"x" * 32, ckx=0x1234), proto=1))
    for n in range(8):
        add("icmp_short", ipv4(ip_k, ip_u, icmp(8, 0)[:n], proto=1))
    for typ in (0, 3, 4, 5, 11, 12, 13, 17, 40, 255):
        inner = ipv4(ip_u, ip_k, tcp(ip_u, ip_k, port, sp()))[:28]
        add("icmp_type", ipv4(ip_k, ip_u, icmp(typ, rng.randrange(256), data=inner), proto=1))
    # ARP.
    for kw in (dict(htype=6), dict(ptype=0x86dd), dict(hlen=8), dict(plen=16), dict(op=0), dict(op=3),
               dict(op=255)):
        add("arp_bad", arp(spa=other, tpa=ip_u, **kw), 0x0806)
    for n in range(0, 28):
        add("arp_short", arp(spa=other, tpa=ip_u)[:n], 0x0806)
    add("arp_other", arp(spa=other, tpa=net + ".99"), 0x0806)
    add("arp_zero", arp(spa="0.0.0.0", tpa=ip_u), 0x0806)
    add("arp_mcast_sha", arp(sha=b"\xff" * 6, spa=net + ".78", tpa=ip_u), 0x0806)
    # TCP header fields.
    for doff in (0, 1, 4, 6, 15):
        add("tcp_doff", ipv4(ip_k, ip_u, tcp(ip_k, ip_u, sp(), port, doff=doff)))
    for n in range(20):
        add("tcp_short", ipv4(ip_k, ip_u, syn()[:n]))
    for _ in range(20):
        add("tcp_csum", ipv4(ip_k, ip_u, syn(ckx=rng.randrange(1, 65536))))
    add("tcp_port0", ipv4(ip_k, ip_u, tcp(ip_k, ip_u, 0, port)))
    add("tcp_port0", ipv4(ip_k, ip_u, tcp(ip_k, ip_u, sp(), 0)))
    synrf = 0
    for fl in range(256):
        if fl & 0x02 and fl & 0x05:
            synrf += 2
        for dport in (port, 1):
            add("tcp_flags", ipv4(ip_k, ip_u, tcp(ip_k, ip_u, sp(), dport, seq=rng.getrandbits(32),
                                                  ack=rng.getrandbits(32), flags=fl, data=b"d" * (fl & 3),
                                                  urp=rng.randrange(65536))))
    # TCP options.
    bad_opts = [
        b"\x02", b"\x01\x01\x02\x04", b"\x02\x00\x00\x00", b"\x02\x01\x00\x00", b"\x02\x05\x05\xb4\x00\x00\x00\x00",
        b"\x02\x03\x05\x00", b"\x03\x02\x00\x00", b"\x03\x04\x07\x00", b"\x04\x03\x00\x00",
        b"\x05\x02\x00\x00", b"\x05\x09" + b"\0" * 10, b"\x05\x0b" + b"\0" * 10,
        b"\x08\x09" + b"\0" * 10, b"\x08\x0b" + b"\0" * 10, b"\x08\x0a\0\0\0\0",
        b"\xfe\x00\x00\x00", b"\xfe\x01\x00\x00", b"\xfe\x28\x00\x00", b"\x01\x01\x01\x02",
    ]
    for o in bad_opts:
        o = o + b"\0" * (-len(o) % 4)
        add("tcp_opts_bad", ipv4(ip_k, ip_u, syn(opts=o)))
        add("tcp_opts_bad", ipv4(ip_k, ip_u, tcp(ip_k, ip_u, sp(), port, flags=0x10, opts=o)))
    odd_opts = [b"\x02\x04\x00\x00", b"\x02\x04\x00\x01", b"\x02\x04\xff\xff"]
    odd_opts += [b"\x03\x03" + bytes([ws]) + b"\x01" for ws in (14, 15, 16, 100, 255)]
    odd_opts += [b"\x01\x01\x05\x0a" + os.urandom(8), b"\x01\x01\x05\x22" + os.urandom(32),
                 b"\x01\x01\x08\x0a" + b"\0" * 8, b"\x01\x01\x08\x0a" + b"\xff" * 8]
    odd_opts += [bytes([k, 2]) + b"\x01\x01" for k in (6, 7, 9, 19, 28, 29, 30, 34, 99, 253, 255)]
    odd_opts += [b"\x63\x28" + os.urandom(38)]
    for o in odd_opts:
        o = o + b"\0" * (-len(o) % 4)
        add("tcp_opts_odd", ipv4(ip_k, ip_u, syn(opts=o)))
        add("tcp_opts_odd", ipv4(ip_k, ip_u, tcp(ip_k, ip_u, sp(), port, flags=0x10, ack=rng.getrandbits(32),
                                                 opts=o)))
    # Seeded random mutations of valid frames: flipped bytes, truncations, extensions.
    bases = [good, ipv4(ip_k, ip_u, tcp(ip_k, ip_u, sp(), port, flags=0x18, data=b"GET / HTTP/1.0\r\n\r\n")),
             ipv4(ip_k, ip_u, syn(opts=b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + b"\0" * 8 + b"\x01\x03\x03\x07")),
             ipv4(ip_k, ip_u, icmp(8, 0, data=b"p" * 56), proto=1)]
    abase = arp(spa=other, tpa=ip_u)
    for _ in range(nrand):
        if rng.random() < 0.1:
            b, et = bytearray(abase), 0x0806
        else:
            b, et = bytearray(rng.choice(bases)), 0x0800
        for _ in range(rng.randrange(1, 6)):
            m = rng.random()
            if m < 0.6 and b:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif m < 0.8 and b:
                del b[rng.randrange(len(b)):]
            else:
                b += os.urandom(rng.randrange(1, 64))
        if et == 0x0806 and len(b) >= 18 and bytes(b[14:18]) == socket.inet_aton(ip_k):
            continue  # an ARP claim for the real peer would (rightly) poison the cache
        add("random", bytes(b)[:1500], et)
    s = sa.conf.L2socket(iface=iface)
    sent = 0
    for i, f in enumerate(frames):
        try:
            s.send(f)
            sent += 1
        except OSError:
            pass
        if i % 200 == 199:
            time.sleep(0.02)  # do not overflow the device ring
    s.close()
    print(" ".join("%s=%d" % kv for kv in sorted(classes.items())), file=sys.stderr, flush=True)
    # What the stack must count at least, from the systematic frames alone (each is dropped
    # for exactly that reason; the random ones only add).
    def c(name):
        return classes.get(name, 0)

    expect = {
        "eth_drop_type": c("eth_type"),
        "eth_drop_dst": c("eth_dst"),
        "arp_drop_bad": c("arp_bad") + c("arp_short") + c("arp_mcast_sha"),
        "ip_drop_hdr": c("ip_version") + c("ip_ihl_short") + c("ip_src"),
        "ip_drop_len": c("ip_ihl_long") + 3 + c("ip_tlen_long"),  # total length 0, 1, 19
        "ip_drop_csum": c("ip_csum"),
        # Reassembly holds the two well-formed last fragments (offsets 8 and 2048) of the
        # 20-byte SYNs; the five others are dropped at once (not a multiple of 8 with MF
        # set, or beyond 65535 bytes).
        "ip_drop_frag": c("ip_frag") - 2,
        "ip_drop_opts": c("ip_options"),
        "ip_drop_dst": c("ip_dst"),
        "ip_drop_proto": c("ip_proto"),
        "icmp_drop": c("icmp_csum") + c("icmp_short"),
        "tcp_drop_csum": c("tcp_csum"),
        "tcp_drop_hdr": c("tcp_doff") + c("tcp_short") + c("tcp_port0") + 3 + synrf,  # total 20, 21, 39
        "tcp_drop_opts": c("tcp_opts_bad"),
    }
    print("malformed sent=%d expect %s" % (sent, " ".join("%s=%d" % kv for kv in sorted(expect.items()))),
          flush=True)


def main():
    a = sys.argv[1:]
    if not a:
        fail(__doc__)
    if a[0] == "inject":
        cmd_inject(a[1], int(a[2]), a[3])
    elif a[0] == "reset":
        cmd_reset(a[1], int(a[2]), a[3])
    elif a[0] == "zerowin":
        cmd_zerowin(a[1], int(a[2]), float(a[3]))
    elif a[0] == "slowread":
        cmd_slowread(a[1], int(a[2]), float(a[3]))
    elif a[0] == "hold":
        cmd_hold(a[1], int(a[2]), int(a[3]), float(a[4]))
    elif a[0] == "slowloris":
        cmd_slowloris(a[1], int(a[2]), int(a[3]), float(a[4]))
    elif a[0] == "malformed":
        cmd_malformed(a[1], a[2], a[3], int(a[4]), int(a[5]), int(a[6]))
    else:
        fail("unknown command %s" % a[0])


main()
