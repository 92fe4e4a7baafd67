#!/usr/bin/env python3
"""The kernel side of tests/net/test_reclaim.sh: accepts connections from programs running
under ustack and reports, in its log, how each one ended.

Each connection first sends a tag line. "A": wait for the end. "B": send 4000 bytes the other
side never reads, then wait for the end. "C": wait for the file DIR/c-ping, then send a line
and expect it echoed back (the connection must still work after one of its holders was
killed), then wait for the end. Lines written: "<tag> ready", "<tag> echo ok|bad",
"<tag> eof|rst|timeout <ms since DIR/<tag>-killed appeared>". Usage: reclaim_peer.py IP PORT DIR
"""
import os
import socket
import sys
import threading
import time

ip, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log_lock = threading.Lock()


def log(line):
    with log_lock:
        with open(os.path.join(d, "peer.log"), "a") as f:
            f.write(line + "\n")


def since_kill(tag):
    try:
        return int((time.time() - os.stat(os.path.join(d, tag + "-killed")).st_mtime) * 1000)
    except OSError:
        return -1


def wait_end(c, tag):
    c.settimeout(30)
    try:
        while True:
            b = c.recv(65536)
            if not b:
                log("%s eof %d" % (tag, since_kill(tag)))
                return
    except ConnectionResetError:
        log("%s rst %d" % (tag, since_kill(tag)))
    except socket.timeout:
        log("%s timeout %d" % (tag, since_kill(tag)))


def serve(c):
    f = c.makefile("rb")
    tag = f.readline().decode().strip()
    log("%s ready" % tag)
    if tag == "B":
        c.sendall(b"x" * 4000)
    if tag == "C":
        end = time.time() + 30
        while not os.path.exists(os.path.join(d, "c-ping")) and time.time() < end:
            time.sleep(0.05)
        c.sendall(b"ping\n")
        c.settimeout(10)
        try:
            ok = f.readline() == b"ping\n"
        except OSError:
            ok = False
        log("C echo %s" % ("ok" if ok else "bad"))
    wait_end(c, tag)
    c.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(16)
open(os.path.join(d, "peer.up"), "w").close()
s.settimeout(120)
while True:
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    threading.Thread(target=serve, args=(c,), daemon=True).start()
