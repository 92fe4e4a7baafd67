"""The ustack side of tests/net/test_hostile.sh, run under LD_PRELOAD=libustack.so.

One single-threaded selectors (epoll) server with three services:
  HTTP   PORT_HTTP: reads until the end of a request's header ("\\r\\n\\r\\n"), answers
         "HTTP/1.0 200 OK" with the body "hello\\n" and closes; a client that never ends
         its header is held open (slowloris).
  SOURCE PORT_SRC: reads one line "N\\n", then sends N bytes (byte i = i % 251) and closes;
         later input is read and ignored.
  ECHO   PORT_ECHO: echoes; the listener and every accepted socket have SO_KEEPALIVE with
         TCP_KEEPIDLE=1, TCP_KEEPINTVL=1, TCP_KEEPCNT=3.
A connection that ends with an error prints "KIND-error ERRNAME" (KIND http, source, echo).
Prints "up" when listening and "served N" for each 50 HTTP answers; runs until DIR/exit
exists or 300 s pass.
"""
import errno
import os
import resource
import selectors
import socket
import sys
import time

port_http, port_src, port_echo, d = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

PAT = bytes(i % 251 for i in range(251)) * 300  # 75300 bytes, period 251
CHUNK = 65536
BODY = b"hello\n"
RESP = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY

sel = selectors.DefaultSelector()


def keepalive(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def listener(port, kind, backlog):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if kind == "echo":
        keepalive(s)
    s.bind(("0.0.0.0", port))
    s.listen(backlog)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("listen", kind))
    return s


class Conn:
    def __init__(self, s, kind):
        self.s, self.kind = s, kind
        self.inbuf = b""
        self.out = b""
        self.left = -1  # SOURCE: bytes still to send (-1: no request yet)
        self.off = 0
        self.close_after = False


served = 0


def close(c, why=None):
    if why is not None:
        print("%s-error %s" % (c.kind, errno.errorcode.get(why, str(why))), flush=True)
    try:
        sel.unregister(c.s)
    except (KeyError, ValueError):
        pass
    c.s.close()


def want(c):
    ev = selectors.EVENT_READ
    if c.out or c.left > 0:
        ev |= selectors.EVENT_WRITE
    sel.modify(c.s, ev, ("conn", c))


def fill(c):
    """SOURCE: top up the output with the pattern."""
    while c.left > 0 and len(c.out) < CHUNK:
        o = c.off % 251
        n = min(c.left, CHUNK)
        c.out += PAT[o:o + n]
        c.off += n
        c.left -= n


def on_read(c):
    global served
    try:
        b = c.s.recv(65536)
    except OSError as e:
        close(c, e.errno)
        return
    if not b:
        if c.kind == "echo" and not c.out:
            close(c)
        elif c.kind != "echo":
            close(c)
        return
    if c.kind == "echo":
        c.out += b
    elif c.kind == "http":
        c.inbuf += b
        if b"\r\n\r\n" in c.inbuf:
            c.out = RESP
            c.close_after = True
            served += 1
            if served % 50 == 0:
                print("served %d" % served, flush=True)
        elif len(c.inbuf) > 1 << 20:
            close(c)
            return
    elif c.left < 0:
        c.inbuf += b
        if b"\n" in c.inbuf:
            c.left = int(c.inbuf.split(b"\n", 1)[0])
            c.inbuf = b""
            fill(c)
    want(c)


def on_write(c):
    try:
        n = c.s.send(c.out)
    except BlockingIOError:
        return
    except OSError as e:
        close(c, e.errno)
        return
    c.out = c.out[n:]
    if c.kind == "source":
        fill(c)
        if not c.out and c.left == 0:
            close(c)
            return
    elif not c.out and c.close_after:
        close(c)
        return
    want(c)


listener(port_http, "http", 128)
listener(port_src, "source", 128)
listener(port_echo, "echo", 128)
print("up", flush=True)
end = time.time() + 300
while time.time() < end and not os.path.exists(os.path.join(d, "exit")):
    for key, ev in sel.select(0.2):
        what, obj = key.data
        if what == "listen":
            while True:
                try:
                    s, _ = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    print("accept: %s" % e, file=sys.stderr, flush=True)
                    break
                s.setblocking(False)
                if obj == "echo":
                    keepalive(s)
                c = Conn(s, obj)
                sel.register(s, selectors.EVENT_READ, ("conn", c))
            continue
        if ev & selectors.EVENT_READ:
            on_read(obj)
            if obj.s.fileno() < 0:
                continue
        if ev & selectors.EVENT_WRITE:
            on_write(obj)
