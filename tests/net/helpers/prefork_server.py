#!/usr/bin/env python3
"""The ustack side of tests/net/test_fork.sh, run under LD_PRELOAD=libustack.so.

prefork PORT NCHILD DIR
    A pre-fork server: the parent listens on PORT, forks NCHILD children that each accept
    on the inherited listener (blocking accept), read one line and answer
    "<their pid> <the line>", and close. Writes DIR/prefork.pids ("pid pid ...") once all
    children run, then waits until DIR/prefork.stop exists (at most 120 s), kills and reaps
    its children and exits.

spawn PORT DIR CMD1 CMD2
    Attaches to ustack first (a listener on PORT), then runs CMD1 through the shell with
    subprocess's defaults (fork, the fds above 2 closed, exec) and CMD2 with close_fds=False
    (posix_spawn): their children inherit the stack (USTACK_SHM_FD). Exits with the first
    nonzero status.
"""
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time


def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(256)
    return s


def serve_forever(s):
    me = str(os.getpid()).encode()
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(10)
            buf = b""
            while not buf.endswith(b"\n"):
                d = c.recv(256)
                if not d:
                    break
                buf += d
            c.sendall(me + b" " + buf)
        except OSError:
            pass
        finally:
            c.close()


def prefork(port, n, d):
    s = listener(port)
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                serve_forever(s)
            finally:
                os._exit(0)
        kids.append(pid)
    with open(os.path.join(d, "prefork.pids.tmp"), "w") as f:
        f.write(" ".join(map(str, kids)) + "\n")
    os.rename(os.path.join(d, "prefork.pids.tmp"), os.path.join(d, "prefork.pids"))
    end = time.time() + 120
    while not os.path.exists(os.path.join(d, "prefork.stop")) and time.time() < end:
        time.sleep(0.05)
    for k in kids:
        os.kill(k, signal.SIGTERM)
    for k in kids:
        os.waitpid(k, 0)


def spawn(port, d, cmd1, cmd2):
    s = listener(port)  # attached: ustackd runs, and the environment names its region
    # The library sets it with setenv(3), which os.environ (a copy made at start) misses.
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    if not libc.getenv(b"USTACK_SHM_FD"):
        sys.exit("prefork_server: no USTACK_SHM_FD after the first socket (not under ustack?)")
    open(os.path.join(d, "spawn.attached"), "w").close()
    # Both ways Python starts a child: fork and exec, closing the fds above 2 first (the
    # default), and posix_spawn (close_fds=False), whose environment is Python's copy.
    rc = subprocess.call(["/bin/sh", "-c", cmd1])
    if rc == 0:
        rc = subprocess.call(["/bin/sh", "-c", cmd2], close_fds=False)
    s.close()
    sys.exit(rc)


if __name__ == "__main__":
    if sys.argv[1] == "prefork":
        prefork(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "spawn":
        spawn(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit("usage: prefork_server.py prefork PORT N DIR | spawn PORT DIR CMD1 CMD2")
