#!/usr/bin/env python3
"""The ustack side of tests/net/test_reclaim.sh, run under LD_PRELOAD=libustack.so. The root
process keeps ustackd alive; its fork children hold sockets and are SIGKILLed:

  A: a child connected to the kernel peer (tag A, nothing unread) that also listens on
     LPORT is killed: the peer must read EOF, LPORT must stop accepting, and a new child
     must be able to listen on LPORT again;
  B: a child with unread data (tag B) is killed: the peer must see a reset;
  C: a child connects (tag C), forks a grandchild that echoes lines, and is killed: the
     grandchild keeps the connection working; then it exits: the peer reads EOF.

Steps are synchronised with the test script through files in DIR (the script waits for
"<step>" files this writes, and writes "go-<step>" files this waits for).
Usage: reclaim_app.py PEER_IP PEER_PORT LPORT DIR
"""
import os
import signal
import socket
import sys
import time

peer = (sys.argv[1], int(sys.argv[2]))
lport = int(sys.argv[3])
d = sys.argv[4]


def mark(name):
    open(os.path.join(d, name), "w").close()


def wait_file(name, secs=60):
    end = time.time() + secs
    while not os.path.exists(os.path.join(d, name)):
        if time.time() > end:
            sys.exit("reclaim_app: timed out waiting for %s" % name)
        time.sleep(0.05)


def child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def connect(tag):
    c = socket.create_connection(peer, timeout=10)
    c.sendall(tag.encode() + b"\n")
    return c


def kill(pid, tag):
    mark(tag + "-killed")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def hold_a():
    lst = socket.socket()
    lst.bind(("0.0.0.0", lport))
    lst.listen(8)
    c = connect("A")
    mark("a-up")
    time.sleep(120)
    del lst, c


def hold_b():
    c = connect("B")
    time.sleep(1)  # the peer's bytes arrive and stay unread
    mark("b-up")
    time.sleep(120)
    del c


def relisten():
    lst = socket.socket()
    lst.bind(("0.0.0.0", lport))
    lst.listen(8)
    mark("relisten-up")
    lst.settimeout(30)
    c, _ = lst.accept()
    c.sendall(b"hello\n")
    c.close()
    time.sleep(1)


def hold_c():
    c = connect("C")

    def echo():
        f = c.makefile("rb")
        c.settimeout(30)
        line = f.readline()
        c.sendall(line)
        wait_file("go-c-exit")

    child(echo)
    mark("c-up")
    time.sleep(120)


# The root's own socket spawns ustackd; its children attach to it (and hold this socket too).
keeper = socket.socket()
a = child(hold_a)
wait_file("a-up")
wait_file("go-kill-a")
kill(a, "A")
wait_file("go-relisten")
r = child(relisten)
b = child(hold_b)
wait_file("b-up")
kill(b, "B")
c = child(hold_c)
wait_file("c-up")
kill(c, "C")
mark("c-ping")
wait_file("go-c-exit")
os.waitpid(r, 0)
mark("done")
wait_file("go-exit")
