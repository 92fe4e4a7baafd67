#!/usr/bin/env python3
"""bench/report.py - turns bench/run.sh's raw run directories into the results.

Reads every run directory (meta, the tool's stdout, rc, fail, /proc/stat and time before and
after, the commands) and writes <out-dir>/<base>.json (every run and the summary, the
machine, the commit, the exact commands), <base>.md (the summary table) and, when gnuplot
is installed, <base>-server.png (nginx under ab: requests/s by concurrency) and
<base>-ratio.png (ustack/kernel for every measurement).

Summary: per (stack cores, group, scenario, concurrency) and side, the median over the runs
that produced a result; the ratio is ustack/kernel of those medians. CPU per unit is the
whole machine's busy time (/proc/stat user+nice+system+irq+softirq, all CPUs) over the run
divided by the requests, transactions or GB the run completed.

`bench/report.py --self-test` checks the parsers and the summary on built-in samples.
"""
import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HZ = os.sysconf("SC_CLK_TCK")
GROUP_ORDER = ["server", "client", "both", "bulk"]
SCEN_ORDER = ["close", "ka", "wrk", "send1", "send4", "recv1", "rr1", "start"]
LABEL = {
    ("server", "close"): "nginx, ab (a connection per request)",
    ("server", "ka"): "nginx, ab -k (keep-alive)",
    ("client", "close"): "ab client, a connection per request",
    ("client", "ka"): "ab client, keep-alive",
    ("both", "wrk"): "both ends, wrk (keep-alive)",
    ("both", "close"): "both ends, ab (a connection per request)",
    ("bulk", "send1"): "bulk-send to kserve, 1 stream",
    ("bulk", "send4"): "bulk-send to kserve, 4 streams",
    ("bulk", "recv1"): "bulk-recv from kserve, 1 stream",
    ("bulk", "rr1"): "rr to kserve, 1 connection, 64 B",
}


def rd(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def parse_ab(text):
    """ab's report: requests, failures, rate and percentiles (ms)."""
    def field(label):
        m = re.search(r"^" + re.escape(label) + r":\s*([0-9.]+)", text, re.M)
        return num(m.group(1)) if m else None
    r = {"complete": field("Complete requests"), "failed": field("Failed requests"),
         "non2xx": field("Non-2xx responses") or 0, "rps": field("Requests per second"),
         "time_taken_s": field("Time taken for tests"), "keepalive": field("Keep-Alive requests")}
    for p in (50, 90, 99, 100):
        m = re.search(r"^\s*%d%%\s+([0-9.]+)" % p, text, re.M)
        r["p%d_ms" % p] = num(m.group(1)) if m else None
    if r["complete"] is None or r["rps"] is None:
        return None
    r["requests"] = r["complete"]
    r["failed_requests"] = (r["failed"] or 0) + r["non2xx"]
    r["value"] = r["rps"]
    # ab's kinds of failure: connect errors, read errors (a reset), responses of another
    # length than the first one, and exceptions (its time-outs among them).
    m = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", text)
    if m:
        r["fail_kinds"] = dict(zip(("connect", "receive", "length", "exceptions"), map(int, m.groups())))
    return r


def wrk_time_ms(v):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", v)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[m.group(2)]


def parse_wrk(text):
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(\w+)", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if not m or not rps:
        return None
    r = {"requests": float(m.group(1)), "rps": float(rps.group(1)), "value": float(rps.group(1))}
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = [int(x) for x in se.groups()] if se else [0, 0, 0, 0]
    n2 = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    r["non2xx"] = int(n2.group(1)) if n2 else 0
    r["failed_requests"] = sum(r["socket_errors"]) + r["non2xx"]
    for p in (50, 90, 99):
        lm = re.search(r"^\s+%d%%\s+(\S+)" % p, text, re.M)
        r["p%d_ms" % p] = wrk_time_ms(lm.group(1)) if lm else None
    return r


def parse_loadgen(text):
    try:
        j = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    r = {"loadgen": j, "failed_requests": j.get("errors", 0)}
    if j.get("mode") in ("bulk-send", "bulk-recv"):
        r["value"], r["units"] = j["gbps"], j["bytes"] / 1e9
    else:
        r["value"], r["units"] = j["tps"], j["transactions"]
        for k in ("p50_us", "p99_us", "p999_us"):
            r[k] = j.get(k)
    return r


def cpu_busy(text):
    """Busy and total seconds of the all-CPU line of /proc/stat."""
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            v = [int(x) for x in f[1:]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6]
            return busy / HZ, sum(v[:8]) / HZ, (v[7] if len(v) > 7 else 0) / HZ
    return None


def stat_totals(text):
    """tools/ustack-stat -s: counter name -> its total (the last column)."""
    t = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and re.match(r"^[a-z][a-z0-9_]*$", f[0]) and f[-1].isdigit():
            t[f[0]] = int(f[-1])
    return t


def nstat_totals(text):
    """nstat -az: counter name -> value."""
    t = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and re.match(r"^[A-Za-z][A-Za-z0-9]*$", f[0]) and f[1].isdigit():
            t[f[0]] = int(f[1])
    return t


# The client kernel's reasons to fail a connection: resets, aborts (time-outs), and
# transmissions that failed locally (a full veth ring), which Linux counts towards
# tcp_syn_retries.
CLIENT_WHY = ("TcpAttemptFails", "TcpEstabResets", "TcpExtTCPAbortOnTimeout", "TcpExtTCPAbortOnData",
              "TcpExtTCPRetransFail", "TcpExtTCPSynRetrans", "TcpExtListenOverflows")

# Server counters shown for a run that failed requests, when they moved during it.
TROUBLE = re.compile(r"(^|_)(rst|drop|overflow|fail|timeout|retrans|cookie|syncookie|stall|full|invalid|abort|pressure|nomem)")


def load_run(d):
    meta = dict(line.split("=", 1) for line in rd(d + "/meta").split("\n") if "=" in line)
    r = {"dir": os.path.basename(d), "group": meta.get("group"), "scenario": meta.get("scenario"),
         "side": meta.get("side"), "round": int(meta.get("round", 0)), "conc": int(meta.get("conc", 0)),
         "tool": meta.get("tool"), "cores": int(meta.get("cores", 0)), "pair": meta.get("pair", "-"),
         "layout": meta.get("layout", "shared"), "seconds": int(meta.get("seconds", 0) or 0),
         "server_cmd": rd(d + "/server.cmd").strip(), "client_cmd": rd(d + "/client.cmd").strip(),
         "exit": rd(d + "/rc").strip(), "failure": rd(d + "/fail").strip() or None,
         "loadavg_before": rd(d + "/loadavg").strip()}
    res = None
    out = rd(d + "/out")
    if r["tool"] == "ab":
        res = parse_ab(out)
    elif r["tool"] == "wrk":
        res = parse_wrk(out)
    elif r["tool"] == "loadgen":
        res = parse_loadgen(out)
    if res is None and not r["failure"] and r["tool"] != "server":
        r["failure"] = "no result in the %s output" % r["tool"]
    a, b = cpu_busy(rd(d + "/cpu.before")), cpu_busy(rd(d + "/cpu.after"))
    if a and b:
        r["machine_busy_cpu_s"] = round(b[0] - a[0], 3)
        r["machine_total_cpu_s"] = round(b[1] - a[1], 3)
        r["steal_s"] = round(b[2] - a[2], 3)
    t0, t1 = num(rd(d + "/t.before").strip()), num(rd(d + "/t.after").strip())
    if t0 and t1:
        r["wall_s"] = round(t1 - t0, 3)
    if res and not res.get("units", res.get("requests")) and not r["failure"]:
        r["failure"] = "no request completed"
    sa, sb = stat_totals(rd(d + "/server.stats.before")), stat_totals(rd(d + "/server.stats.after"))
    if sb:
        r["server_counters"] = {k: v - sa.get(k, 0) for k, v in sb.items()
                                if TROUBLE.search(k) and v - sa.get(k, 0) > 0}
    ca, cb = nstat_totals(rd(d + "/client.nstat.before")), nstat_totals(rd(d + "/client.nstat.after"))
    if cb:
        r["client_kernel"] = {k: cb[k] - ca.get(k, 0) for k in CLIENT_WHY if cb.get(k, 0) - ca.get(k, 0) > 0}
    if res:
        r["result"] = res
        r["value"] = res["value"]
        r["failed_requests"] = int(res.get("failed_requests") or 0)
        units = res.get("units", res.get("requests"))
        if units and "machine_busy_cpu_s" in r:
            r["cpu_per_unit"] = r["machine_busy_cpu_s"] / units
    return r


def unit_of(group, scen):
    if scen.startswith("send") or scen.startswith("recv"):
        return "Gbit/s", "CPU-s per GB"
    if scen == "rr1":
        return "transactions/s", "CPU-us per transaction"
    return "requests/s", "CPU-us per request"


def summarise(runs):
    keys = []
    for r in runs:
        k = (r["cores"], r["group"], r["scenario"], r["conc"])
        if r["side"] == "kernel" and r["group"] == "server" and r["conc"] == 100 and \
                not any(q["group"] == "server" and q["side"] == "ustack" for q in runs):
            continue  # measured only as the reference of client / both
        if k not in keys:
            keys.append(k)
    keys.sort(key=lambda k: (k[0], GROUP_ORDER.index(k[1]) if k[1] in GROUP_ORDER else 9,
                             SCEN_ORDER.index(k[2]) if k[2] in SCEN_ORDER else 9, k[3]))
    out = []
    for k in keys:
        s = {"cores": k[0], "group": k[1], "scenario": k[2], "conc": k[3],
             "label": LABEL.get((k[1], k[2]), k[1] + " " + k[2])}
        s["unit"], s["cpu_unit"] = unit_of(k[1], k[2])
        for side in ("ustack", "kernel"):
            kk = k
            if side == "kernel" and k[1] in ("client", "both") and k[2] in ("close", "ka"):
                # The kernel-to-kernel reference is the same measurement as group server's.
                kk = (k[0], "server", k[2], k[3])
                s["kernel_from"] = "server"
            rs = [r for r in runs if (r["cores"], r["group"], r["scenario"], r["conc"]) == kk and r["side"] == side]
            ok = [r for r in rs if "value" in r and not r["failure"]]
            def med(key, sub=None):
                v = [(r["result"].get(key) if sub else r.get(key)) for r in ok]
                v = [x for x in v if x is not None]
                return statistics.median(v) if v else None
            s[side] = {"value": med("value"), "runs": len(rs), "ok_runs": len(ok),
                       "failed_runs": len(rs) - len(ok),
                       "failed_requests": sum(r.get("failed_requests", 0) for r in rs),
                       "cpu_per_unit": med("cpu_per_unit"),
                       "values": [r.get("value") for r in rs]}
            for lk in ("p50_ms", "p99_ms", "p50_us", "p99_us", "p999_us"):
                v = med(lk, True)
                if v is not None:
                    s[side][lk] = v
            if k[1] == "both" and side == "ustack":
                s["pair"] = next((r["pair"] for r in rs), "-")
        u, kv = s["ustack"]["value"], s["kernel"]["value"]
        s["ratio"] = (u / kv) if u and kv else None
        out.append(s)
    return out


def fmt_val(v, unit):
    if v is None:
        return "-"
    return "%.2f" % v if unit == "Gbit/s" else "{:,.0f}".format(v)


def fmt_cpu(v, cpu_unit):
    if v is None:
        return "-"
    return "%.2f s" % v if cpu_unit.startswith("CPU-s") else "%.1f us" % (v * 1e6)


def fmt_lat(s, side):
    d = s[side]
    if "p50_us" in d:
        return "%.0f / %.0f / %.0f us" % (d["p50_us"], d.get("p99_us", 0), d.get("p999_us", 0))
    if "p50_ms" in d:
        return "%g / %g ms" % (d["p50_ms"], d.get("p99_ms") or 0)
    return "-"


def layout_line(layouts):
    """The CPU placement of a pass, from its runs' meta "layout" (split:SRV/CLI or shared)."""
    words = []
    for lay in layouts:
        if lay.startswith("split:") and "/" in lay:
            srv, cli = lay[len("split:"):].split("/", 1)
            words.append("layout split: the server's side (nginx or kserve, and its ustackd) on CPU(s) %s, "
                         "the client's side (ab, wrk, loadgen, and a client's ustackd) on CPU(s) %s, "
                         "in the ustack and the kernel runs alike" % (srv, cli))
        else:
            words.append("layout shared: every program on every CPU (the stack cores pinned)")
    return "- " + "; ".join(words or ["layout shared"])


def markdown(doc):
    m = doc["machine"]
    lines = ["# ustack benchmark %s" % doc["base"], "",
             "- command: `%s` (%s mode, %d round(s) of %d s per measurement, ustack and kernel alternating)"
             % (doc["command"], "quick" if doc["quick"] else "full", doc["rounds"], doc["seconds"])
             + "".join("; ab at concurrency %d: %d s" % (c, t) for c, t in sorted(set(
                 (r["conc"], r["seconds"]) for r in doc["runs"] if r["tool"] == "ab" and r["seconds"] != doc["seconds"]))),
             "- commit %s; binaries %s" % (doc["commit"], doc["binaries"]),
             "- machine: %s, %d CPUs (%s), kernel %s, %s" % (m["host"], m["nproc"], m["cpu_model"], m["kernel"], m["memory"]),
             "- tools: nginx %s, ab %s, %s" % (doc["nginx"], doc["ab"], doc["wrk"]),
             "- load average before %s, after %s (other work on the machine is in every number)"
             % (doc["loadavg_start"], doc["loadavg_end"]),
             "- transport: veth in two namespaces, AF_XDP (copy mode) for every ustackd; "
             "offloads off on the veth; group `both`: %s" % doc["both_transport"],
             "- the kernel column of `client` and `both` (ab) is the kernel-to-kernel run of `server` "
             "at the same concurrency (nginx and ab both on the kernel: the same measurement)",
             "", "Values are medians over rounds; `[n]` runs with a result, `(F n)` runs without one. "
             "CPU per unit is the whole machine's busy CPU time from /proc/stat over the run. "
             "Latency: ab and wrk p50 / p99 in ms, loadgen p50 / p99 / p99.9 in us.", ""]
    for cores in sorted(set(s["cores"] for s in doc["summary"])):
        lines += ["## %d stack core%s per ustackd" % (cores, "" if cores == 1 else "s"), "",
                  layout_line(sorted(set(r.get("layout", "shared") for r in doc["runs"] if r["cores"] == cores))), "",
                  "| measurement | conc | unit | ustack | kernel | ustack/kernel | failed requests u / k | CPU per unit u / k | latency u | latency k |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in [s for s in doc["summary"] if s["cores"] == cores]:
            def cell(side):
                d = s[side]
                t = fmt_val(d["value"], s["unit"]) + " [%d]" % d["ok_runs"]
                return t + (" (F %d)" % d["failed_runs"] if d["failed_runs"] else "")
            lines.append("| %s | %s | %s | %s | %s | %s | %d / %d | %s / %s | %s | %s |" % (
                s["label"] + (" (%s)" % s["pair"] if s.get("pair") and s["pair"] != "-" else ""),
                s["conc"] or "-", s["unit"], cell("ustack"), cell("kernel"),
                "%.2fx" % s["ratio"] if s["ratio"] else "-",
                s["ustack"]["failed_requests"], s["kernel"]["failed_requests"],
                fmt_cpu(s["ustack"]["cpu_per_unit"], s["cpu_unit"]), fmt_cpu(s["kernel"]["cpu_per_unit"], s["cpu_unit"]),
                fmt_lat(s, "ustack"), fmt_lat(s, "kernel")))
        lines.append("")
    bad = [r for r in doc["runs"] if not r["failure"] and r.get("failed_requests")]
    if bad:
        lines += ["## Runs with failed requests", ""]
        for r in bad:
            kinds = (r.get("result") or {}).get("fail_kinds") or (r.get("result") or {}).get("socket_errors")
            lines.append("- cores %d %s %s c=%d %s round %d: %d failed%s" % (
                r["cores"], r["group"], r["scenario"], r["conc"], r["side"], r["round"], r["failed_requests"],
                " (%s)" % (", ".join("%s %d" % kv for kv in kinds.items()) if isinstance(kinds, dict)
                           else "socket errors connect, read, write, timeout: %s" % kinds) if kinds else "")
                + ("; the server's ustackd during the run: %s" % ", ".join(
                    "%s +%d" % kv for kv in sorted(r["server_counters"].items())) if r.get("server_counters") else "")
                + ("; the client namespace's kernel: %s" % ", ".join(
                    "%s +%d" % kv for kv in sorted(r["client_kernel"].items())) if r.get("client_kernel") else ""))
        lines.append("")
    fails = [r for r in doc["runs"] if r["failure"]]
    if fails:
        lines += ["## Failed runs", ""]
        for r in fails:
            lines.append("- cores %d %s %s c=%d %s round %d: %s" % (r["cores"], r["group"], r["scenario"], r["conc"],
                                                                  r["side"], r["round"], r["failure"].replace("\n", "; ")))
        lines.append("")
    lines += ["## Commands (round 1)", ""]
    seen = set()
    for r in doc["runs"]:
        if r["round"] != 1:
            continue
        for c in (r["server_cmd"], r["client_cmd"]):
            if c and c not in seen:
                seen.add(c)
                lines.append("- `%s`" % c)
    lines.append("")
    for png in doc["charts"]:
        lines += ["![%s](%s)" % (png, png), ""]
    return "\n".join(lines)


def charts(doc, out_dir, base):
    if not shutil.which("gnuplot"):
        return []
    made = []
    tmp = tempfile.mkdtemp(prefix="bench-plot.")
    try:
        # 1: nginx under ab, requests/s by concurrency.
        srv = [s for s in doc["summary"] if s["group"] == "server" and s["scenario"] in ("close", "ka")]
        series = []
        for cores in sorted(set(s["cores"] for s in srv)):
            for scen in ("close", "ka"):
                for side in ("ustack", "kernel"):
                    pts = [(s["conc"], s[side]["value"]) for s in srv
                           if s["cores"] == cores and s["scenario"] == scen and s[side]["value"]]
                    if not pts:
                        continue
                    f = os.path.join(tmp, "srv-%d-%s-%s.dat" % (cores, scen, side))
                    with open(f, "w") as fh:
                        for c, v in sorted(pts):
                            fh.write("%d %f\n" % (c, v))
                    series.append((f, "%s, %s, %d core%s" % (side, "keep-alive" if scen == "ka" else "conn/request",
                                                          cores, "" if cores == 1 else "s"),
                                   1 if side == "ustack" else 2, 1 if scen == "close" else 2))
        if series:
            png = base + "-server.png"
            plot = ", ".join("'%s' using 1:2 with linespoints lc %d dt %d pt 7 title '%s'" % (f, lc, dt, t)
                             for f, t, lc, dt in series)
            script = ("set terminal pngcairo size 900,500 font ',10'\nset output '%s'\n"
                      "set title 'nginx (1 worker) under ab: ustack vs kernel (%s)'\nset logscale x\n"
                      "set xlabel 'ab concurrency'\nset ylabel 'requests/s'\nset yrange [0:*]\n"
                      "set key outside right\nset grid\nplot %s\n") % (os.path.join(out_dir, png), base, plot)
            if run_gnuplot(script, tmp):
                made.append(png)
        # 2: ratio ustack/kernel for every measurement.
        rows = [s for s in doc["summary"] if s["ratio"]]
        if rows:
            f = os.path.join(tmp, "ratio.dat")
            with open(f, "w") as fh:
                for i, s in enumerate(rows):
                    lab = "%s %s c=%d, %d core%s" % (s["group"], s["scenario"], s["conc"], s["cores"],
                                                     "" if s["cores"] == 1 else "s")
                    fh.write('%d %f "%s"\n' % (i, s["ratio"], lab))
            png = base + "-ratio.png"
            script = ("set terminal pngcairo size 1000,500 font ',9'\nset output '%s'\n"
                      "set title 'ustack / kernel (above 1: ustack faster; bulk Gbit/s, rr transactions/s, "
                      "the rest requests/s) - %s'\nset style fill solid 0.6\nset boxwidth 0.7\n"
                      "set xtics rotate by -45 scale 0\nset ylabel 'ratio'\nset yrange [0:%g]\nset grid y\n"
                      "set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb 'black'\n"
                      "unset key\nplot '%s' using 1:2:xtic(3) with boxes lc 1\n") % (
                os.path.join(out_dir, png), base, max(1.2, 1.1 * max(s["ratio"] for s in rows)), f)
            if run_gnuplot(script, tmp):
                made.append(png)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


def run_gnuplot(script, tmp):
    p = os.path.join(tmp, "plot.gp")
    with open(p, "w") as f:
        f.write(script)
    try:
        res = subprocess.run(["gnuplot", p], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print("report.py: gnuplot: %s" % e, file=sys.stderr)
        return False
    if res.returncode != 0:
        print("report.py: gnuplot failed: %s" % res.stderr.strip()[-300:], file=sys.stderr)
        return False
    return True


def machine():
    model = next((l.split(":", 1)[1].strip() for l in rd("/proc/cpuinfo").splitlines()
                  if l.startswith("model name")), "")
    mem = next((l.split(":", 1)[1].strip() for l in rd("/proc/meminfo").splitlines()
                if l.startswith("MemTotal")), "")
    return {"host": platform.node(), "kernel": platform.release(), "cpu_model": model,
            "nproc": os.cpu_count(), "memory": mem}


def build(args):
    runs = [load_run(d) for d in sorted(glob.glob(os.path.join(args.runs, "*")))]
    pairs = sorted(set(r["pair"] for r in runs if r["group"] == "both" and r["side"] == "ustack"))
    both = {"afxdp": "both ustackd on the veth through AF_XDP",
            "memif": "the two ustackd joined by a DPDK memif (the kernel pair on the veth)"}
    doc = {"benchmark": "run", "base": args.base, "command": args.command, "commit": args.commit,
           "binaries": args.binaries, "machine": machine(), "nginx": args.nginx, "ab": args.ab,
           "wrk": args.wrk, "quick": args.quick == "1", "seconds": args.seconds, "rounds": args.rounds,
           "loadavg_start": args.loadavg_start, "loadavg_end": rd("/proc/loadavg").strip(),
           "both_transport": "; ".join(both.get(p, p) for p in pairs) or "not run",
           "notes": "machine CPU = /proc/stat user+nice+system+irq+softirq over all CPUs over the run; "
                    "values are medians over rounds of the runs with a result",
           "summary": summarise(runs), "runs": runs, "charts": []}
    return doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--runs")
    ap.add_argument("--out-dir")
    ap.add_argument("--base")
    ap.add_argument("--command", default="")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--binaries", default="")
    ap.add_argument("--loadavg-start", default="")
    ap.add_argument("--nginx", default="")
    ap.add_argument("--ab", default="")
    ap.add_argument("--wrk", default="")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=0)
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not (args.runs and args.out_dir and args.base):
        ap.error("--runs, --out-dir and --base are required")
    doc = build(args)
    doc["charts"] = charts(doc, args.out_dir, args.base)
    js = os.path.join(args.out_dir, args.base + ".json")
    md = os.path.join(args.out_dir, args.base + ".md")
    with open(js, "w") as f:
        json.dump(doc, f, indent=1)
    text = markdown(doc)
    with open(md, "w") as f:
        f.write(text + "\n")
    print(text)
    print("results: %s, %s%s" % (js, md, "".join(", " + os.path.join(args.out_dir, c) for c in doc["charts"])))
    return 0


AB_SAMPLE = """Concurrency Level:      100
Time taken for tests:   3.001 seconds
Complete requests:      45000
Failed requests:        2
   (Connect: 0, Receive: 0, Length: 2, Exceptions: 0)
Non-2xx responses:      1
Requests per second:    14995.00 [#/sec] (mean)
Percentage of the requests served within a certain time (ms)
  50%      6
  90%      9
  99%     14
 100%   1030 (longest request)
"""
WRK_SAMPLE = """Running 3s test @ http://198.18.74.2/index.html
  1 threads and 100 connections
  Latency Distribution
     50%    3.10ms
     90%  850.00us
     99%    1.20s
  60000 requests in 3.00s, 20.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:  20000.00
"""


def self_test():
    a = parse_ab(AB_SAMPLE)
    assert a and a["requests"] == 45000 and a["failed_requests"] == 3 and a["rps"] == 14995.0, a
    assert a["p50_ms"] == 6 and a["p99_ms"] == 14, a
    assert a["fail_kinds"] == {"connect": 0, "receive": 0, "length": 2, "exceptions": 0}, a
    assert parse_ab("apr_socket_connect(): Connection refused (111)") is None
    w = parse_wrk(WRK_SAMPLE)
    assert w and w["requests"] == 60000 and w["failed_requests"] == 4 and w["value"] == 20000.0, w
    assert w["p50_ms"] == 3.1 and w["p90_ms"] == 0.85 and w["p99_ms"] == 1200.0, w
    lg = parse_loadgen('{"mode":"rr","tps":1000.0,"transactions":3000,"p50_us":20.5,"p99_us":50,"p999_us":90,"errors":0}\n')
    assert lg["value"] == 1000.0 and lg["units"] == 3000 and lg["p999_us"] == 90, lg
    lg = parse_loadgen('{"mode":"bulk-send","gbps":4.0,"bytes":1500000000,"errors":1}')
    assert lg["units"] == 1.5 and lg["failed_requests"] == 1, lg
    # Two rounds per side, one failed kernel run: medians over the rest, ratio of medians.
    tmp = tempfile.mkdtemp(prefix="bench-selftest.")
    try:
        runs = os.path.join(tmp, "runs")
        n = 0
        for side, rps, fail in (("ustack", 100, ""), ("kernel", 50, ""), ("ustack", 300, ""), ("kernel", 0, "x")):
            n += 1
            d = os.path.join(runs, "%04d" % n)
            os.makedirs(d)
            with open(d + "/meta", "w") as f:
                f.write("group=server\nscenario=close\nside=%s\nround=%d\nconc=100\ntool=ab\ncores=1\nseconds=3\npair=-\n"
                        % (side, (n + 1) // 2))
            with open(d + "/out", "w") as f:
                f.write(AB_SAMPLE.replace("14995.00", str(rps)) if not fail else "")
            if fail:
                with open(d + "/fail", "w") as f:
                    f.write("ab exit status 1\n")
            if n == 1:
                for w, v in (("before", 5), ("after", 9)):
                    with open(d + "/server.stats." + w, "w") as f:
                        f.write("counter    core0  total\ntcp_rst_out  %d  %d\ntcp_segs_in 1 %d\n" % (v, v, v))
                    with open(d + "/client.nstat." + w, "w") as f:
                        f.write("#kernel\nTcpAttemptFails  %d  0.0\nTcpInSegs %d 0.0\n" % (v * 2, v))
            for w, t in (("before", 1000), ("after", 1000 + 3 * HZ)):
                with open(d + "/cpu." + w, "w") as f:
                    f.write("cpu  %d 0 %d 500 0 0 0 0 0 0\n" % (t, t))
        ns = argparse.Namespace(runs=runs, base="selftest", command="x", commit="c", binaries="", nginx="",
                                ab="", wrk="", quick="1", seconds=3, rounds=2, loadavg_start="")
        doc = build(ns)
        s = doc["summary"][0]
        assert s["ustack"]["value"] == 200 and s["kernel"]["value"] == 50 and s["ratio"] == 4.0, s
        assert s["kernel"]["failed_runs"] == 1 and s["ustack"]["failed_requests"] == 6, s
        assert abs(s["ustack"]["cpu_per_unit"] - 6.0 / 45000) < 1e-9, s
        md = markdown(doc)
        assert "| nginx, ab (a connection per request) | 100 | requests/s | 200 [2] | 50 [1] (F 1) | 4.00x |" in md, md
        assert ("- cores 1 server close c=100 ustack round 1: 3 failed (connect 0, receive 0, length 2, exceptions 0);"
                " the server's ustackd during the run: tcp_rst_out +4;"
                " the client namespace's kernel: TcpAttemptFails +8" in md), md
    finally:
        shutil.rmtree(tmp)
    print("report.py self-test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
