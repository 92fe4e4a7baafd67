#!/usr/bin/env python3
"""bench/uclient.py - runs bench/run.sh's client programs under ustack, one stack for all.

Started by run.sh under LD_PRELOAD=libustack.so. It opens one socket, which starts the
client's ustackd and waits for it, prints "ready", then reads jobs from stdin, one JSON
object a line: {"dir": run directory, "argv": [...], "timeout": seconds}. Each job's program
is a child of this process, so it uses the same ustackd (fork and exec keep the stack) and
the stack's start-up, seconds on a busy machine, is paid once and outside every
measurement. Per job it writes into the run directory: cpu.before/cpu.after (/proc/stat),
t.before/t.after, out, err, cputime (the program's own user and system seconds and minor
page faults, with its children: from getrusage(RUSAGE_CHILDREN)), and rc last (124 when the timeout killed the
program). It exits at the end of stdin.
"""
import json
import os
import resource
import socket
import subprocess
import sys
import time


def snap(d, when):
    with open("/proc/stat") as f:
        cpu = [line for line in f if line.startswith("cpu")]
    with open(os.path.join(d, "cpu." + when), "w") as f:
        f.writelines(cpu)
    with open(os.path.join(d, "t." + when), "w") as f:
        f.write("%.9f\n" % time.time())


def main():
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        d = job["dir"]
        snap(d, "before")
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(d, "out"), "w") as out, open(os.path.join(d, "err"), "w") as err:
            try:
                rc = subprocess.run(job["argv"], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    timeout=job["timeout"]).returncode
            except subprocess.TimeoutExpired:
                rc = 124
            except OSError as e:
                err.write("uclient: %s\n" % e)
                rc = 127
        snap(d, "after")
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(d, "cputime"), "w") as f:
            f.write("%.6f %.6f %d\n" % (ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime,
                                        ru1.ru_minflt - ru0.ru_minflt))
        with open(os.path.join(d, "rc.tmp"), "w") as f:
            f.write("%d\n" % rc)
        os.rename(os.path.join(d, "rc.tmp"), os.path.join(d, "rc"))
        print("done", d, rc, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
