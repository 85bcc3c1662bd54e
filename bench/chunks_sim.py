#!/usr/bin/env python3
"""Chunked vs whole-file VOD encoding on a fleet of spot workers: a discrete-event simulation.

A video of --video-s seconds is encoded either as ONE job (whole-file) or as chunk jobs of
--chunk-s seconds (the last may be shorter), plus one audio job, plus a stitch job that can only
start once every chunk and the audio are done. N workers lease jobs from one queue, oldest job
first. Each worker is reclaimed after an exponential lifetime (--reclaims-per-hour per worker);
the job it was running loses all its work and can be leased again after --lease-s (a killed
worker), or at once for the --term-fraction of reclaims that are a SIGTERM (the worker hands the
job back). A reclaimed worker is replaced by a fresh one after --startup-s.

Encode time: one chunk of --chunk-s seconds takes --chunk-encode-s (measured); of that,
--per-chunk-overhead-s is per job (process start, probe, seek, upload), the rest is proportional
to length. So a job of L seconds takes overhead + L * (chunk_encode_s - overhead) / chunk_s. The
audio job takes overhead + --audio-frac of the video's encode time and is queued first (oldest
first: queued last it would be the tail). Whole-file is one job: one overhead, the whole video
and the audio (with overhead 0: video_s / chunk_s * chunk_encode_s * (1 + audio_frac)).

Prints time to ready (minutes, median and p95 over --runs) for each N in --workers, without and
with reclaims, and the speed-up; then a sweep of chunk_s for the --sweep-workers fleets, holding
the per-second speed fixed, and the best chunk_s for each. Deterministic for a given --seed.
Standard library only. --json PATH writes the results too.
"""
import argparse
import heapq
import json
import math
import random
import statistics
import sys


def pure_s(a):
    """Encode seconds per video second, without the per-job overhead."""
    return (a.chunk_encode_s - a.per_chunk_overhead_s) / a.chunk_s


def job_time(length_s, a):
    return a.per_chunk_overhead_s + length_s * pure_s(a)


def plan(a, chunk_s, chunked):
    """(durations of the jobs queued at once, in queue order; stitch duration or None)."""
    audio = a.audio_frac * a.video_s * pure_s(a)
    if not chunked:
        return [job_time(a.video_s, a) + audio], None
    n = math.ceil(a.video_s / chunk_s - 1e-9)
    chunks = [job_time(min(chunk_s, a.video_s - i * chunk_s), a) for i in range(n)]
    # The audio job is queued first: it is the longest, and last it would be the tail.
    return [a.per_chunk_overhead_s + audio] + chunks, a.stitch_s


def simulate(jobs, stitch, n_workers, a, seed, run, reclaims):
    """One run; returns the time (s) at which the video is ready."""
    rate = a.reclaims_per_hour / 3600.0 if reclaims else 0.0
    # One random stream per worker slot, so every configuration of a run sees the same reclaims.
    slot_rng = [random.Random(f"{seed}:{run}:{s}") for s in range(n_workers)]
    durations = list(jobs) + ([stitch] if stitch is not None else [])
    last = len(durations) - 1          # the stitch job (or the one whole-file job)
    waiting = len(jobs)                # jobs the stitch waits for
    avail = list(range(len(jobs)))     # heap of leasable job indices: oldest first
    heapq.heapify(avail)
    events = []                        # (time, seq, kind, worker or job, slot or job)
    seq = 0
    idle = []                          # workers ready for a job
    alive = {}                         # worker id -> (slot, job running or None)
    next_id = 0

    def push(t, kind, x=None, y=None):
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, x, y))

    def launch(slot, t, startup):
        nonlocal next_id
        w = next_id
        next_id += 1
        if rate > 0:
            push(t + slot_rng[slot].expovariate(rate), "reclaim", w, slot)
        alive[w] = (slot, None)
        if startup:
            push(t + startup, "join", w, slot)
        else:
            idle.append(w)

    for s in range(n_workers):
        launch(s, 0.0, 0.0)
    t, horizon = 0.0, 1000.0 * sum(durations)  # reclaims so frequent that nothing finishes
    while t < horizon:
        # Hand out work: the lowest-numbered idle worker takes the oldest leasable job.
        idle.sort()
        while idle and avail:
            w, j = idle.pop(0), heapq.heappop(avail)
            alive[w] = (alive[w][0], j)
            push(t + durations[j], "finish", w, j)
        t, _, kind, w, x = heapq.heappop(events)
        if kind == "avail":
            heapq.heappush(avail, w)   # here w is the job index
        elif w not in alive:
            continue                   # an event of a reclaimed worker
        elif kind == "join":
            idle.append(w)
        elif kind == "finish":
            if x == last:
                return t
            alive[w] = (alive[w][0], None)
            idle.append(w)
            waiting -= 1
            if waiting == 0:
                heapq.heappush(avail, last)
        elif kind == "reclaim":
            slot, j = alive.pop(w)
            if w in idle:
                idle.remove(w)
            if j is not None:
                term = slot_rng[slot].random() < a.term_fraction
                push(t if term else t + a.lease_s, "avail", j)
            launch(slot, t, a.startup_s)
    return math.inf


def pct(xs, p):
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def measure(a, n, chunk_s, chunked, reclaims):
    jobs, stitch = plan(a, chunk_s, chunked)
    runs = a.runs if reclaims and a.reclaims_per_hour > 0 else 1  # no reclaims: deterministic
    ts = [simulate(jobs, stitch, n, a, a.seed, r, reclaims) for r in range(runs)]
    return {"p50_min": statistics.median(ts) / 60, "p95_min": pct(ts, 95) / 60}


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--chunk-encode-s", type=float, default=45.0, help="wall s to encode one chunk (45)")
    add("--chunk-s", type=float, default=60.0, help="chunk length in video seconds (60)")
    add("--video-s", type=float, default=7200.0, help="video length in seconds (7200)")
    add("--workers", type=ints, default=[1, 10, 100], help="fleet sizes (1,10,100)")
    add("--reclaims-per-hour", type=float, default=0.5, help="per worker, Poisson (0.5)")
    add("--term-fraction", type=float, default=0.0,
        help="share of reclaims that are a SIGTERM: the job is handed back at once (0)")
    add("--startup-s", type=float, default=90.0, help="until a replacement works (90)")
    add("--lease-s", type=float, default=30.0, help="visibility timeout of a lost job (30)")
    add("--stitch-s", type=float, default=5.0, help="the final stitch job (5)")
    add("--audio-frac", type=float, default=0.02, help="audio encode / video encode time (0.02)")
    add("--per-chunk-overhead-s", type=float, default=3.0,
        help="per-job part of --chunk-encode-s: start, probe, seek, upload (3)")
    add("--sweep-chunk-s", type=ints, default=[15, 30, 60, 120, 300], help="(15,30,60,120,300)")
    add("--sweep-workers", type=ints, default=[10, 100], help="(10,100)")
    add("--runs", type=int, default=200, help="Monte-Carlo repetitions (200)")
    add("--seed", type=int, default=1, help="random seed (1)")
    add("--json", metavar="PATH", help="also write the results as JSON")
    a = p.parse_args()
    if not (0 <= a.per_chunk_overhead_s < a.chunk_encode_s and a.chunk_s > 0 and a.video_s > 0
            and a.runs > 0 and min(a.workers + a.sweep_workers) > 0
            and min(a.sweep_chunk_s) > 0 and 0 <= a.term_fraction <= 1):
        p.error("need 0 <= overhead < chunk-encode-s, positive lengths, workers, runs")

    whole_s = plan(a, a.chunk_s, False)[0][0]
    print(f"chunks_sim: seed {a.seed}, {a.runs} runs; video {a.video_s:g} s, chunk {a.chunk_s:g} s"
          f" encoded in {a.chunk_encode_s:g} s (overhead {a.per_chunk_overhead_s:g} s),"
          f" whole file {whole_s / 60:.1f} min on one worker")
    print(f"reclaims {a.reclaims_per_hour:g}/h per worker ({a.term_fraction:.0%} SIGTERM),"
          f" lease {a.lease_s:g} s, replacement startup {a.startup_s:g} s, stitch {a.stitch_s:g} s")
    print()
    print("time to ready, minutes (p50 / p95 over runs; without reclaims it is deterministic)")
    hdr = ("N", "whole", "chunked", "whole+recl p50/p95", "chunked+recl p50/p95",
           "speed-up", "+recl p50/p95")
    print(f"{hdr[0]:>5} {hdr[1]:>8} {hdr[2]:>8} {hdr[3]:>19} {hdr[4]:>21} {hdr[5]:>8} {hdr[6]:>15}")
    rows = []
    for n in a.workers:
        r = {"workers": n}
        for key, chunked, recl in (("whole", False, False), ("chunked", True, False),
                                   ("whole_reclaims", False, True),
                                   ("chunked_reclaims", True, True)):
            r[key] = measure(a, n, a.chunk_s, chunked, recl)
        r["speedup"] = r["whole"]["p50_min"] / r["chunked"]["p50_min"]
        r["speedup_reclaims_p50"] = r["whole_reclaims"]["p50_min"] / r["chunked_reclaims"]["p50_min"]
        r["speedup_reclaims_p95"] = r["whole_reclaims"]["p95_min"] / r["chunked_reclaims"]["p95_min"]
        rows.append(r)
        wr, cr = r["whole_reclaims"], r["chunked_reclaims"]
        print(f"{n:>5} {r['whole']['p50_min']:>8.1f} {r['chunked']['p50_min']:>8.1f}"
              f" {wr['p50_min']:>9.1f} / {wr['p95_min']:>6.1f} {cr['p50_min']:>11.1f} / {cr['p95_min']:>6.1f}"
              f" {r['speedup']:>7.1f}x {r['speedup_reclaims_p50']:>6.1f}x / {r['speedup_reclaims_p95']:.1f}x")

    print()
    print("chunk length sweep, chunked with reclaims, minutes p50 / p95 (no reclaims in brackets);"
          f" encode {pure_s(a):.3f} s per video s"
          f" + {a.per_chunk_overhead_s:g} s per chunk")
    print(f"{'chunk_s':>7} {'jobs':>5} {'encode s':>8}"
          + "".join(f" {'N=' + str(n):>21}" for n in a.sweep_workers))
    sweep = []
    for cs in a.sweep_chunk_s:
        row = {"chunk_s": cs, "jobs": math.ceil(a.video_s / cs - 1e-9) + 2,
               "chunk_encode_s": job_time(min(cs, a.video_s), a)}
        line = f"{cs:>7} {row['jobs']:>5} {row['chunk_encode_s']:>8.1f}"
        for n in a.sweep_workers:
            m = measure(a, n, cs, True, True)
            m["no_reclaims_min"] = measure(a, n, cs, True, False)["p50_min"]
            row[str(n)] = m
            line += f" {m['p50_min']:>6.1f} / {m['p95_min']:>5.1f} [{m['no_reclaims_min']:>5.1f}]"
        sweep.append(row)
        print(line)
    best = {}
    score = lambda r, n: (r[str(n)]["p50_min"] + r[str(n)]["p95_min"]) / 2
    for n in a.sweep_workers:
        lo = min(score(r, n) for r in sweep)
        # Within 2 % of the best, the longest chunk: fewer jobs, objects and rows.
        best[str(n)] = max((r for r in sweep if score(r, n) <= lo * 1.02), key=lambda r: r["chunk_s"])["chunk_s"]
    print("recommendation (lowest mean of p50 and p95 with reclaims; within 2 % of it, the longest"
          " chunk): " + "; ".join(f"N={n}: chunk_s {best[str(n)]}" for n in a.sweep_workers))

    if a.json:
        def finite(x):  # JSON has no Infinity: a run that never finished is null
            if isinstance(x, dict):
                return {k: finite(v) for k, v in x.items()}
            if isinstance(x, list):
                return [finite(v) for v in x]
            return None if isinstance(x, float) and not math.isfinite(x) else x
        out = {"params": vars(a), "whole_file_one_worker_min": whole_s / 60,
               "table": rows, "sweep": sweep, "best_chunk_s": best}
        with open(a.json, "w") as f:
            json.dump(finite(out), f, indent=2)
            f.write("\n")
        print(f"results written to {a.json}")


if __name__ == "__main__":
    sys.exit(main())
