#!/usr/bin/env python3
"""The sampler, baseline runner and summary of bench/live_ladders.sh (stdlib only). Not meant
to be run on its own.

  sample    reads GET /api/v1/live-streams/{id} for every stream of one oxcast step once a
            second over the measuring window and writes what current_session.health said.
  baseline  runs N copies of a plain ffmpeg ladder encode (the command after `--`) pinned to one
            core, reads their -progress output and derives the same windowed speed oxcast's
            health reports, sampled on the same schedule.
  summary   prints the table and the verdict and writes the result JSON.
  busy      prints how busy the given cores are over a couple of seconds.

Both measuring commands also read, over the window, how busy the measured core was
(/proc/stat) and the CPU time of the measured processes (the server and its descendants, or the
baseline's ffmpeg processes), so that load from other programs on that core shows.

All times are wall-clock (time.time(), the same clock as bash's $EPOCHREALTIME).
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")

# What "sustains real time" means, for oxcast's streams and the baseline's processes alike.
MIN_MEDIAN_SPEED = 0.98
# oxcast's health computes encoder_speed and fps over windows of at least this long (see
# crates/live/src/session/epoch.rs); the baseline's are computed the same way.
SPEED_WINDOW_S = 2.0


# ---------------------------------------------------------------- CPU accounting


def core_ticks(core):
    """(busy, total) jiffies of one core from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
                total = sum(v[:8])  # guest time is already in user/nice
                return total - idle, total
    raise SystemExit(f"no cpu{core} line in /proc/stat")


def proc_stat(pid):
    """(ppid, utime + stime in jiffies) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def tree_ticks(roots):
    """CPU jiffies of the given processes and all their live descendants, and their count."""
    parent = {}
    ticks = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st:
            parent[int(name)] = st[0]
            ticks[int(name)] = st[1]
    roots = set(roots)
    members = set()
    for pid in ticks:
        p, hops = pid, 0
        while p and hops < 64:
            if p in roots:
                members.add(pid)
                break
            p, hops = parent.get(p), hops + 1
    return sum(ticks[p] for p in members), len(members)


class CpuMeter:
    """Busy share of one core and CPU of a process tree between start() and stop()."""

    def __init__(self, core, roots_fn, other_core=None):
        self.core, self.roots_fn, self.other_core = core, roots_fn, other_core

    def start(self):
        self.t0 = time.time()
        self.c0 = core_ticks(self.core)
        self.o0 = core_ticks(self.other_core) if self.other_core is not None else None
        self.p0, _ = tree_ticks(self.roots_fn())

    def stop(self):
        t1 = time.time()
        c1 = core_ticks(self.core)
        p1, members = tree_ticks(self.roots_fn())
        busy = (c1[0] - self.c0[0]) / max(1, c1[1] - self.c0[1])
        measured = (p1 - self.p0) / CLK_TCK / max(1e-6, t1 - self.t0)
        out = {
            "core": self.core,
            "core_busy": round(busy, 3),
            "measured_cores": round(measured, 3),
            # What else ran on the measured core: other programs (the other engineer's builds)
            # and kernel work charged to no measured process.
            "other_on_core": round(max(0.0, busy - measured), 3),
            "measured_processes": members,
            "seconds": round(t1 - self.t0, 2),
        }
        if self.o0 is not None:
            o1 = core_ticks(self.other_core)
            out["other_core"] = self.other_core
            out["other_core_busy"] = round((o1[0] - self.o0[0]) / max(1, o1[1] - self.o0[1]), 3)
        return out


# ---------------------------------------------------------------- verdicts


def verdict(samples):
    """samples: [{speed, fps, dropped}] of one stream or process (None where nothing was read).
    Returns its summary: min/median speed, dropped-frame growth, and whether it kept up."""
    got = [s for s in samples if s is not None]
    speeds = [s["speed"] for s in got if s.get("speed") is not None]
    drops = [s["dropped"] for s in got if s.get("dropped") is not None]
    fps = [s["fps"] for s in got if s.get("fps") is not None]
    out = {
        "samples": len(samples),
        "missing": len(samples) - len(got),
        "speed_min": min(speeds) if speeds else None,
        "speed_median": round(statistics.median(speeds), 3) if speeds else None,
        "fps_median": round(statistics.median(fps), 2) if fps else None,
        "dropped_first": drops[0] if drops else None,
        "dropped_last": drops[-1] if drops else None,
        "dropped_growth": (drops[-1] - drops[0]) if drops else None,
    }
    reasons = []
    if out["missing"]:
        reasons.append(f"{out['missing']} of {len(samples)} samples missing")
    if out["speed_median"] is None or out["speed_median"] < MIN_MEDIAN_SPEED:
        reasons.append(f"median speed {out['speed_median']} < {MIN_MEDIAN_SPEED}")
    if out["dropped_growth"] is None or out["dropped_growth"] > 0:
        reasons.append(f"dropped frames grew by {out['dropped_growth']}")
    out["ok"] = not reasons
    out["why_not"] = reasons
    return out


def step_result(kind, n, per, cpu, extra=None):
    speeds_min = [v["speed_min"] for v in per if v["speed_min"] is not None]
    medians = [v["speed_median"] for v in per if v["speed_median"] is not None]
    growth = [v["dropped_growth"] for v in per if v["dropped_growth"] is not None]
    res = {
        "kind": kind,
        "n": n,
        "ok": bool(per) and all(v["ok"] for v in per),
        # Real-time ladders' worth of encoding done: the per-stream medians added up (N when
        # every stream keeps up; below N, what the core managed when it could not).
        "speed_sum": round(sum(medians), 2) if medians else None,
        # The measured processes' CPU per ladder, in cores (meaningful while all keep up).
        "cores_per_ladder": round(cpu["measured_cores"] / n, 3) if n else None,
        # Over the N streams: the lowest sample, the lowest of the per-stream medians.
        "speed_min": min(speeds_min) if speeds_min else None,
        "speed_median_min": min(medians) if medians else None,
        "dropped_growth_total": sum(growth) if growth else None,
        "cpu": cpu,
        "per_stream": per,
    }
    if extra:
        res.update(extra)
    return res


def sleep_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


def schedule(args):
    """The sample instants: once a second over [t0 + from, t0 + to)."""
    count = int(round(args.to - args.frm))
    return [args.t0 + args.frm + i for i in range(count)]


# ---------------------------------------------------------------- sample (oxcast)


class Api:
    def __init__(self, base, token=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = None

    def get_json(self, path):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                self.conn.request("GET", path, headers=self.headers)
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    return None
                return json.loads(body)
            except (OSError, http.client.HTTPException, ValueError):
                self.conn = None
                if attempt:
                    return None
        return None


def sample(args):
    api = Api(args.base, os.environ.get("OXCAST_API_TOKEN") or None)
    ids = args.ids.split(",")
    meter = CpuMeter(args.core, lambda: [args.server_pid], args.other_core)
    times = schedule(args)
    rows = {i: [] for i in ids}
    raw = {i: [] for i in ids}
    sleep_until(times[0])
    meter.start()
    for t in times:
        sleep_until(t)
        for sid in ids:
            v = api.get_json(f"/api/v1/live-streams/{sid}")
            cur = (v or {}).get("current_session") or {}
            h = cur.get("health")
            raw[sid].append({"t": round(time.time() - args.t0, 2), "status": (v or {}).get("status"),
                             "publishing": cur.get("publishing"), "health": h})
            if h is None:
                rows[sid].append(None)
            else:
                rows[sid].append({"speed": h.get("encoder_speed"), "fps": h.get("fps"),
                                  "dropped": h.get("dropped_frames"),
                                  "latency_s": h.get("latency_s")})
    sleep_until(args.t0 + args.to)
    cpu = meter.stop()
    per = []
    for sid in ids:
        v = verdict(rows[sid])
        lat = [r["latency_s"] for r in rows[sid] if r and r.get("latency_s") is not None]
        v["latency_s_first"] = lat[0] if lat else None
        v["latency_s_last"] = lat[-1] if lat else None
        v["id"] = sid
        v["samples_raw"] = raw[sid]
        per.append(v)
    res = step_result("oxcast", len(ids), per, cpu)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(line(res))


# ---------------------------------------------------------------- baseline (plain ffmpeg)


class Progress(threading.Thread):
    """Reads one ffmpeg's -progress blocks; keeps the speed oxcast's health would report."""

    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc = proc
        self.lock = threading.Lock()
        self.current = None  # {"speed", "fps", "dropped"} after the first full window
        self.dropped = None
        self.ffmpeg_speed = None  # ffmpeg's own speed=, averaged over the whole run
        self.out_time_s = 0.0

    def run(self):
        block = {}
        window = None
        for raw in self.proc.stdout:
            k, _, v = raw.decode("utf-8", "replace").strip().partition("=")
            if k != "progress":
                block[k] = v
                continue
            now = time.time()
            try:
                out_s = int(block.get("out_time_us", "0")) / 1e6
            except ValueError:
                out_s = self.out_time_s
            try:
                frames = int(block.get("frame", "0"))
            except ValueError:
                frames = 0
            try:
                dropped = int(block.get("drop_frames", "0"))
            except ValueError:
                dropped = self.dropped
            with self.lock:
                self.out_time_s, self.dropped = out_s, dropped
                sp = block.get("speed", "").rstrip("x")
                try:
                    self.ffmpeg_speed = float(sp)
                except ValueError:
                    pass
                if window is None:
                    window = (now, out_s, frames)
                elif now - window[0] >= SPEED_WINDOW_S:
                    dt = now - window[0]
                    self.current = {
                        "speed": round((out_s - window[1]) / dt, 2),
                        "fps": round((frames - window[2]) / dt, 1),
                    }
                    window = (now, out_s, frames)
            block = {}

    def read(self):
        with self.lock:
            if self.current is None:
                return None
            return dict(self.current, dropped=self.dropped)


def baseline(args):
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        raise SystemExit("baseline: no ffmpeg command after --")
    procs, readers = [], []

    def stop_all(*_):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for i in range(args.n):
            d = os.path.join(args.scratch, f"b{i}")
            os.makedirs(d, exist_ok=True)
            argv = ["taskset", "-c", str(args.core)] + [a.replace("{dir}", d) for a in cmd]
            log = open(os.path.join(args.scratch, f"b{i}.log"), "wb")
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
            log.close()
            procs.append(p)
            r = Progress(p)
            r.start()
            readers.append(r)
        args.t0 = time.time()
        meter = CpuMeter(args.core, lambda: [p.pid for p in procs], args.other_core)
        times = schedule(args)
        rows = [[] for _ in procs]
        raw = [[] for _ in procs]
        sleep_until(times[0])
        meter.start()
        for t in times:
            sleep_until(t)
            for i, r in enumerate(readers):
                v = r.read()
                rows[i].append(v)
                raw[i].append({"t": round(time.time() - args.t0, 2), "health": v})
        sleep_until(args.t0 + args.to)
        cpu = meter.stop()
        exited = [p.poll() for p in procs]
        speeds_end = [r.ffmpeg_speed for r in readers]
    finally:
        stop_all()
    per = []
    for i, p in enumerate(procs):
        v = verdict(rows[i])
        v["process"] = i
        v["ffmpeg_speed_at_end"] = speeds_end[i]
        v["samples_raw"] = raw[i]
        if exited[i] is not None:
            v["ok"] = False
            v["why_not"].append(f"ffmpeg exited early with status {exited[i]} (see b{i}.log)")
        per.append(v)
    res = step_result("ffmpeg", args.n, per, cpu, {"command": ["taskset", "-c", str(args.core)] + cmd})
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(line(res))


# ---------------------------------------------------------------- summary


def f2(v):
    return "-" if v is None else f"{v:.2f}"


def line(res):
    c = res["cpu"]
    why = sorted({w for v in res["per_stream"] for w in v["why_not"]})
    return (f"   {res['kind']} N={res['n']}: speed min {f2(res['speed_min'])}, lowest median "
            f"{f2(res['speed_median_min'])}, dropped +{res['dropped_growth_total']}; core "
            f"{c['core']} busy {c['core_busy'] * 100:.0f}% (measured {c['measured_cores'] * 100:.0f}%, "
            f"other {c['other_on_core'] * 100:.0f}%): "
            + ("real time" if res["ok"] else "NOT real time (" + "; ".join(why) + ")"))


def sustained(steps):
    """The largest N such that N and every smaller N measured kept up; and whether the run
    stopped at a failure (False: the cap was reached, the figure is a lower bound)."""
    k = 0
    for s in sorted(steps, key=lambda s: s["n"]):
        if not s["ok"]:
            return k, True
        k = s["n"]
    return k, False


def summary(args):
    steps = {"oxcast": [], "ffmpeg": []}
    for path in args.step:
        with open(path) as f:
            s = json.load(f)
        steps[s["kind"]].append(s)
    meta = json.loads(args.meta)
    k, k_failed = sustained(steps["oxcast"])
    m, m_failed = sustained(steps["ffmpeg"])
    by_n = {}
    for kind in steps:
        for s in steps[kind]:
            by_n.setdefault(s["n"], {})[kind] = s

    print()
    print("== live ladders per core: 720p -> (720p, 360p), server and encoders on core "
          f"{meta['core']} ==")
    print(f"   speed: encoder speed over ~{SPEED_WINDOW_S:.0f} s windows, read once a second over the "
          f"last {meta['window_s']} s of each {meta['run_s']} s step.")
    print("   min/med: the lowest sample of any stream / the lowest per-stream median. sum: the "
          "per-stream medians added up.")
    print("   CPU/ladder: the measured processes' CPU / N, % of a core. other: CPU on that core "
          "used by none of them.")
    cols = f"{'min/med':>11} {'dropped':>7} {'sum':>5} {'CPU/ladder':>10} {'other':>5} {'real time':>9}"
    print(f"{'':>3}  {'--- oxcast ':-<52}   {'--- plain ffmpeg ':-<52}")
    print(f"{'N':>3}  {cols}   {cols}")
    for n in sorted(by_n):
        cells = []
        for kind in ("oxcast", "ffmpeg"):
            s = by_n[n].get(kind)
            if s is None:
                cells.append(f"{'(not run)':>11} {'':>7} {'':>5} {'':>10} {'':>5} {'':>9}")
                continue
            mm = f"{f2(s['speed_min'])} / {f2(s['speed_median_min'])}"
            dg = s["dropped_growth_total"]
            cells.append(f"{mm:>11} {('+' + str(dg)) if dg is not None else '-':>7} "
                         f"{f2(s['speed_sum']):>5} {s['cores_per_ladder'] * 100:>9.1f}% "
                         f"{s['cpu']['other_on_core'] * 100:>4.0f}% {'yes' if s['ok'] else 'NO':>9}")
        print(f"{n:>3}  {cells[0]}   {cells[1]}")
    print()

    def bound(x, failed):
        return f"{x}" if failed else f">= {x} (cap reached)"

    ratio = round(k / m, 2) if m else None
    print(f"oxcast sustains {bound(k, k_failed)} ladders per core; plain ffmpeg sustains "
          f"{bound(m, m_failed)}; ratio K/M = {'n/a' if ratio is None else f'{ratio:.2f}'}")
    # CPU per ladder where both kept up, at the largest such N (the most amortised figure).
    both = [n for n in sorted(by_n) if all(by_n[n].get(k, {}).get("ok") for k in ("oxcast", "ffmpeg"))]
    cpu_cmp = None
    if both:
        n = both[-1]
        a, b = by_n[n]["oxcast"]["cores_per_ladder"], by_n[n]["ffmpeg"]["cores_per_ladder"]
        cpu_cmp = {"n": n, "oxcast": a, "ffmpeg": b, "ratio": round(a / b, 3) if b else None}
        print(f"CPU per ladder at N={n} (both real time): oxcast {a * 100:.1f}% of a core, plain "
              f"ffmpeg {b * 100:.1f}%" + (f" (oxcast/ffmpeg {a / b:.2f})" if b else ""))
    noisy = [s for kind in steps for s in steps[kind] if s["cpu"]["other_on_core"] > 0.05]
    if noisy:
        print("note: other programs used more than 5% of the measured core during "
              + ", ".join(f"{s['kind']} N={s['n']} ({s['cpu']['other_on_core'] * 100:.0f}%)"
                          for s in noisy)
              + ": those figures are pessimistic.")

    out = dict(meta)
    out.update({
        "criterion": {
            "median_speed_min": MIN_MEDIAN_SPEED,
            "dropped_frames": "no growth over the window",
            "speed_window_s": SPEED_WINDOW_S,
        },
        "oxcast_sustains": k,
        "oxcast_stopped_at_failure": k_failed,
        "ffmpeg_sustains": m,
        "ffmpeg_stopped_at_failure": m_failed,
        "ratio_oxcast_over_ffmpeg": ratio,
        "cpu_per_ladder": cpu_cmp,
        "steps": sorted(steps["oxcast"] + steps["ffmpeg"], key=lambda s: (s["n"], s["kind"])),
    })
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)


def busy(args):
    """Prints how busy each given core was over the next --seconds."""
    cores = [int(c) for c in args.cores.split(",")]
    t0 = [core_ticks(c) for c in cores]
    time.sleep(args.seconds)
    t1 = [core_ticks(c) for c in cores]
    print(" ".join(f"{(b[0] - a[0]) / max(1, b[1] - a[1]):.3f}" for a, b in zip(t0, t1)))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd_name", required=True)

    def window(sp):
        sp.add_argument("--from", dest="frm", type=float, required=True,
                        help="first sample, seconds after the step's start")
        sp.add_argument("--to", type=float, required=True, help="end of the window, seconds")
        sp.add_argument("--core", type=int, required=True)
        sp.add_argument("--other-core", type=int)
        sp.add_argument("--out", required=True)

    s = sub.add_parser("sample")
    s.add_argument("--base", required=True)
    s.add_argument("--ids", required=True)
    s.add_argument("--t0", type=float, required=True)
    s.add_argument("--server-pid", type=int, required=True)
    window(s)

    b = sub.add_parser("baseline")
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--scratch", required=True)
    window(b)
    b.add_argument("cmd", nargs=argparse.REMAINDER)

    m = sub.add_parser("summary")
    m.add_argument("--step", action="append", default=[])
    m.add_argument("--meta", required=True)
    m.add_argument("--out", required=True)

    c = sub.add_parser("busy")
    c.add_argument("--cores", required=True)
    c.add_argument("--seconds", type=float, default=2.0)

    args = p.parse_args()
    {"sample": sample, "baseline": baseline, "summary": summary, "busy": busy}[args.cmd_name](args)


if __name__ == "__main__":
    main()
