"""Under LD_PRELOAD=libustack.so: listen, do not accept until DIR/go exists, then accept N
connections, send each "ok\n" and close it. Prints the number served, then waits for
DIR/exit."""
import os
import socket
import sys
import time

port, n, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(4096)
open(os.path.join(d, "up"), "w").close()
end = time.time() + 60
while not os.path.exists(os.path.join(d, "go")) and time.time() < end:
    time.sleep(0.05)
s.settimeout(20)
served = 0
try:
    while served < n:
        c, _ = s.accept()
        c.sendall(b"ok\n")
        c.close()
        served += 1
except OSError as e:
    print("accept: %s" % e, file=sys.stderr)
print(served, flush=True)
end = time.time() + 30  # keep ustackd up until the test has read its counters
while not os.path.exists(os.path.join(d, "exit")) and time.time() < end:
    time.sleep(0.05)
