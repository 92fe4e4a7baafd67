"""Kernel side: open N connections to IP:PORT at once, wait until they are all established,
touch DIR/go, then read each one's answer. Prints "ok=X reset=Y other=Z"."""
import errno
import os
import selectors
import socket
import sys
import time

ip, port, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
socks = []
for _ in range(n):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    c.connect_ex((ip, port))
    socks.append(c)
sel = selectors.DefaultSelector()
for c in socks:
    sel.register(c, selectors.EVENT_WRITE)
pending, end = set(socks), time.time() + 20
while pending and time.time() < end:
    for key, _ in sel.select(0.5):
        sel.unregister(key.fileobj)
        pending.discard(key.fileobj)
print("connected after %.1f s, %d pending" % (20 - (end - time.time()), len(pending)), file=sys.stderr)
time.sleep(1)
open(os.path.join(d, "go"), "w").close()
for c in socks:
    sel.register(c, selectors.EVENT_READ)
ok = reset = other = 0
left, end = set(socks), time.time() + 40
while left and time.time() < end:
    for key, _ in sel.select(0.5):
        c = key.fileobj
        sel.unregister(c)
        left.discard(c)
        try:
            data = c.recv(16)
            ok += data == b"ok\n"
            other += data != b"ok\n"
        except OSError as e:
            reset += e.errno == errno.ECONNRESET
            other += e.errno != errno.ECONNRESET
print("ok=%d reset=%d other=%d unanswered=%d" % (ok, reset, other, len(left)), flush=True)
