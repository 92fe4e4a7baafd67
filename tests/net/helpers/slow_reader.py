#!/usr/bin/env python3
"""tests/net/helpers/slow_reader.py - a kernel receiver slower than its sender.

Usage: slow_reader.py HOST PORT CHUNK PAUSE_MS LIMIT_S
Listens on HOST:PORT (SO_RCVBUF 16 KiB), accepts one connection and reads at most CHUNK
bytes every PAUSE_MS until the end of the stream. Prints "eof N SECONDS" (N bytes, then a
FIN), "reset N SECONDS" (then an RST) or "timeout N SECONDS" (nothing for LIMIT_S), and the
sha256 of what it read on a second line. Everything is bounded by LIMIT_S.
"""
import hashlib
import socket
import sys
import time


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    chunk, pause, limit = int(sys.argv[3]), int(sys.argv[4]) / 1000, float(sys.argv[5])
    lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lis.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    lis.bind((host, port))
    lis.listen(1)
    lis.settimeout(limit)
    conn, _ = lis.accept()
    conn.settimeout(limit)
    t0 = time.monotonic()
    n, h, how = 0, hashlib.sha256(), "eof"
    while True:
        try:
            d = conn.recv(chunk)
        except ConnectionResetError:
            how = "reset"
            break
        except socket.timeout:
            how = "timeout"
            break
        if not d:
            break
        n += len(d)
        h.update(d)
        time.sleep(pause)
    print("%s %d %.1f" % (how, n, time.monotonic() - t0))
    print(h.hexdigest())


if __name__ == "__main__":
    main()
