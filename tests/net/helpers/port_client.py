#!/usr/bin/env python3
"""tests/net/helpers/port_client.py - one connection from each given local port.

Usage: port_client.py HOST PORT PATH LOCAL_PORT...
For each local port in turn: bind to it, connect to HOST:PORT, send an HTTP/1.0 GET of
PATH, read until the server closes (HTTP/1.0: the server closes first, so its side keeps
the TIME-WAIT), close. Prints one line per connection, "LOCAL_PORT CONNECT_MS BYTES", and
exits 0 when every connection got an answer ("HTTP/1." first), 1 otherwise. Each connect
and read is bounded (10 s).
"""
import socket
import sys
import time


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ok = True
    for lp in (int(a) for a in sys.argv[4:]):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", lp))
            t0 = time.monotonic()
            s.connect((host, port))
            ms = (time.monotonic() - t0) * 1000
            s.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        except OSError as e:
            print("%d error %s" % (lp, e), flush=True)
            ok = False
            continue
        finally:
            s.close()
        print("%d %.1f %d" % (lp, ms, len(data)), flush=True)
        ok = ok and data.startswith(b"HTTP/1.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
