#!/usr/bin/env python3
"""Helpers for bench/live.sh (stdlib only). Not meant to be run on its own.

  follow      follow one oxcast live stream while its publisher runs: LL-HLS blocking reloads
              of the first variant (client-observed part/segment delays), the stream's health
              every few seconds, and the server's own latency stats near the end of publishing.
  watch-file  poll a plain HLS playlist file (ffmpeg's hls muxer) every 50 ms and record when
              each segment appears.
  summary     merge the per-run JSON files, print the summary and write the result JSON.

All times are wall-clock (time.time(), the same clock as bash's $EPOCHREALTIME).
"""

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request


def pct(values, p):
    """Nearest-rank percentile, the same rule as the server (s[round((n-1)*p)])."""
    s = sorted(values)
    if not s:
        return None
    return s[int(round((len(s) - 1) * p))]


def stats(values):
    return {
        "count": len(values),
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "max": max(values) if values else None,
    }


def median(values):
    return pct(values, 0.5)


# --------------------------------------------------------------------------- HTTP


class Http:
    def __init__(self, base, token=None):
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path, timeout=10.0):
        """(status, body text); status 0 on a connection error."""
        req = urllib.request.Request(self.base + path, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            return 0, str(e)

    def get_json(self, path, timeout=10.0):
        status, body = self.get(path, timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:200]}")
        return json.loads(body)


# --------------------------------------------------------------------------- playlists

ATTR_URI = re.compile(r'URI="([^"]*)"')
ATTR_DURATION = re.compile(r"DURATION=([0-9.]+)")
PART_URI = re.compile(r"part-(\d+)-(\d+)\.m4s$")


def parse_media_playlist(text):
    """Items of a media playlist with their media end time (cumulative durations, seconds).

    Returns (items, hint, ended, media_sequence): items are ("part"|"segment", uri, media_end);
    hint is the (msn, part) of the EXT-X-PRELOAD-HINT, or None.
    Only complete lines are read, so a file caught mid-write is simply read again later.
    """
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    items = []
    seg_start = 0.0  # media time at which the current segment starts
    in_seg = 0.0  # sum of the current segment's parts so far
    pending_extinf = None
    hint = None
    ended = False
    media_sequence = None
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            d = ATTR_DURATION.search(line)
            u = ATTR_URI.search(line)
            if d and u:
                in_seg += float(d.group(1))
                items.append(("part", u.group(1), seg_start + in_seg))
        elif line.startswith("#EXTINF:"):
            pending_extinf = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line.startswith("#EXT-X-PRELOAD-HINT:") and "TYPE=PART" in line:
            u = ATTR_URI.search(line)
            m = PART_URI.search(u.group(1)) if u else None
            if m:
                hint = (int(m.group(1)), int(m.group(2)))
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
        elif not line.startswith("#") and pending_extinf is not None:
            items.append(("segment", line, seg_start + pending_extinf))
            seg_start += pending_extinf
            in_seg = 0.0
            pending_extinf = None
    return items, hint, ended, media_sequence


class Appearances:
    """First wall time each part / segment URI was seen."""

    def __init__(self, t0):
        self.t0 = t0
        self.seen = {}  # uri -> dict
        self.initial = set()

    def record(self, items, wall, initial=False):
        for kind, uri, media_end in items:
            if uri in self.seen:
                continue
            self.seen[uri] = {
                "kind": kind,
                "uri": uri,
                "media_end_s": round(media_end, 5),
                "appeared_s": round(wall - self.t0, 4),
                "delay_s": round(wall - (self.t0 + media_end), 4),
                "initial": initial,
            }

    def delays(self, kind):
        return [v["delay_s"] for v in self.seen.values() if v["kind"] == kind and not v["initial"]]


# --------------------------------------------------------------------------- follow


def follow(args):
    http = Http(args.base, os.environ.get("OXCAST_API_TOKEN") or None)
    t0 = args.t0
    end_publish = t0 + args.duration
    out = {
        "stream_id": args.stream,
        "t0_epoch_s": t0,
        "t0_note": "t0 = wall time the publisher ffmpeg was launched (includes its start-up)",
        "errors": [],
    }
    health = []
    latency_reads = []
    stop = threading.Event()

    # ---- health / server latency sampler
    def sampler():
        times = [t0 + t for t in range(args.sample_every, int(args.duration) + 1, args.sample_every)]
        times.append(end_publish - args.final_before_end)
        times = sorted(t for t in set(times) if t < end_publish)
        for at in times:
            delay = at - time.time()
            if delay > 0 and stop.wait(delay):
                return
            rel = round(time.time() - t0, 3)
            try:
                s = http.get_json(f"/api/v1/live-streams/{args.stream}")
                cur = s.get("current_session") or {}
                h = dict(cur.get("health") or {})
                h["t_s"] = rel
                h["status"] = s.get("status")
                h["publishing"] = cur.get("publishing")
                health.append(h)
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                out["errors"].append(f"health at {rel}s: {e}")
            try:
                lat = http.get_json(f"/api/v1/live-streams/{args.stream}/latency")
                lat["t_s"] = round(time.time() - t0, 3)
                latency_reads.append(lat)
            except Exception as e:  # noqa: BLE001
                out["errors"].append(f"latency at {rel}s: {e}")

    th = threading.Thread(target=sampler, daemon=True)
    th.start()

    # ---- LL-HLS follower
    app = Appearances(t0)
    reloads = 0
    timeouts = 0
    fatal = None
    variant = None
    try:
        deadline = time.time() + args.master_timeout
        while True:
            status, body = http.get(f"/live/{args.stream}/master.m3u8", timeout=5)
            if status == 200:
                break
            if time.time() > deadline:
                raise RuntimeError(
                    f"GET /live/{args.stream}/master.m3u8 not 200 within {args.master_timeout}s "
                    f"(last: HTTP {status} {body[:120]!r})"
                )
            time.sleep(0.1)
        out["master_s"] = round(time.time() - t0, 3)
        uris = [l.strip() for l in body.splitlines() if l.strip() and not l.startswith("#")]
        if not uris:
            raise RuntimeError("master playlist lists no variant")
        variant = uris[0]
        out["variant"] = variant
        path = f"/live/{args.stream}/{variant}"
        status, body = http.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:200]}")
        items, hint, ended, mseq = parse_media_playlist(body)
        if mseq not in (None, 0, 1):
            out["errors"].append(f"first playlist starts at media sequence {mseq}: media ends offset")
        app.record(items, time.time(), initial=True)
        hard_stop = end_publish + args.tail
        while not ended and time.time() < hard_stop:
            if hint is None:
                q = ""
            else:
                q = f"?_HLS_msn={hint[0]}&_HLS_part={hint[1]}"
            status, body = http.get(path + q, timeout=15)
            now = time.time()
            reloads += 1
            if status == 200:
                items, new_hint, ended, _ = parse_media_playlist(body)
                app.record(items, now)
                hint = new_hint
            elif status == 503:  # the blocking reload timed out (no new part for 3 segments)
                timeouts += 1
                if now > end_publish:
                    break  # the publisher has gone; the session ends after the grace period
            elif status == 404 and now > end_publish:
                break  # session over
            else:
                out["errors"].append(f"reload {q or '(plain)'}: HTTP {status}: {body[:120]}")
                if status == 0 or len(out["errors"]) > 20:
                    raise RuntimeError(f"GET {path}{q}: HTTP {status}: {body[:200]}")
                time.sleep(0.1)
    except Exception as e:  # noqa: BLE001
        fatal = str(e)
    finally:
        # The sampler's last read is scheduled before the end of publishing; let it finish.
        th.join(timeout=max(0.0, end_publish - time.time()) + 12)
        stop.set()

    pub_end = None
    if args.pub_end_file:
        try:
            with open(args.pub_end_file) as f:
                pub_end = float(f.read().strip())
        except (OSError, ValueError):
            pass
    # The segment the end of the stream closes (usually short) is not a steady-state segment:
    # it is reported on its own and left out of the client segment stats.
    segs = sorted(
        (v for v in app.seen.values() if v["kind"] == "segment"), key=lambda v: v["media_end_s"]
    )
    eos = None
    if segs and segs[-1]["media_end_s"] >= args.duration - 0.1:
        eos = segs[-1]
        eos["end_of_stream"] = True
    seg_delays = [v["delay_s"] for v in segs if not v["initial"] and v is not eos]

    # Falling behind shows as a growing delay: median of the last third minus the first third.
    timed = sorted(
        (v for v in app.seen.values() if v["kind"] == "part" and not v["initial"]),
        key=lambda v: v["media_end_s"],
    )
    third = len(timed) // 3
    drift = (
        round(median([v["delay_s"] for v in timed[-third:]])
              - median([v["delay_s"] for v in timed[:third]]), 4)
        if third >= 2 else None
    )

    speeds = [
        h["encoder_speed"]
        for h in health
        if h.get("encoder_speed") and h["t_s"] <= args.duration
    ]
    final = None
    for lat in latency_reads:
        if lat["t_s"] <= args.duration:
            final = lat
    out.update(
        {
            "client": {
                "note": "client-observed (includes publisher start-up and HTTP): "
                "appear_wall - (t0 + media_end)",
                "variant": variant,
                "parts": stats(app.delays("part")),
                "segments": stats(seg_delays),
                "end_of_stream_segment": eos,
                "part_delay_drift_s": drift,
                "initial_items_excluded": sum(1 for v in app.seen.values() if v["initial"]),
                "reloads": reloads,
                "blocking_timeouts": timeouts,
                "items": list(app.seen.values()),
            },
            "server": final,
            "server_reads": latency_reads,
            "health": health,
            "encoder_speed": {
                "samples": len(speeds),
                "min": min(speeds) if speeds else None,
                "median": median(speeds),
            },
            "dropped_frames": max((h.get("dropped_frames") or 0 for h in health), default=None),
            "error": fatal,
            "publisher_ended_s": None if pub_end is None else round(pub_end - t0, 3),
        }
    )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    if fatal:
        print(f"follower: {fatal}", file=sys.stderr)
        return 1
    if final is None:
        print("follower: no read of the latency endpoint while publishing", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- watch-file


def watch_file(args):
    app = Appearances(args.t0)
    polls = 0
    while True:
        done = os.path.exists(args.stop_file)  # checked before the read: one last poll after
        try:
            with open(args.playlist) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        now = time.time()
        polls += 1
        items, _, _, _ = parse_media_playlist(text)
        app.record([i for i in items if i[0] == "segment"], now)
        if done:
            break
        time.sleep(args.interval)
    out = {
        "note": "ffmpeg -f hls baseline: appear_wall - (ffmpeg launch + segment media end), "
        f"playlist polled every {args.interval * 1000:.0f} ms",
        "segments": stats(app.delays("segment")),
        "polls": polls,
        "items": list(app.seen.values()),
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    if not out["segments"]["count"]:
        print("watch-file: no segment ever appeared in " + args.playlist, file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- summary


def fmt(x, unit="s", nd=3):
    return "n/a" if x is None else f"{x:.{nd}f}{unit}"


def line(label, st):
    return (f"     {label:<9}n={st.get('count')}  p50 {fmt(st.get('p50'))}  "
            f"p95 {fmt(st.get('p95'))}  max {fmt(st.get('max'))}")


def summary(args):
    meta = json.loads(args.meta)
    seg_s, part_s = meta["segment_s"], meta["part_s"]
    runs = {}
    for spec in args.run:
        proto, path = spec.split("=", 1)
        with open(path) as f:
            runs[proto] = json.load(f)
    with open(args.baseline) as f:
        base = json.load(f)
    b95 = base["segments"]["p95"]

    def ok(v, goal, ge=False):
        if v is None:
            return None
        return v >= goal if ge else v <= goal

    def div(a, b):
        return a / b if a is not None and b else None

    def sub(a, b):
        return a - b if a is not None and b is not None else None

    pf = {True: "PASS", False: "FAIL", None: "n/a"}
    result = dict(meta)
    result["protocols"] = {}
    result["baseline_ffmpeg_hls"] = base
    result["encoder_capacity_x"] = args.capacity
    print(f"== summary ({meta['size']} @{meta['fps']} fps, {meta['duration_s']} s per run, "
          f"ladder {meta['ladder']}, {seg_s:g} s segments / {part_s:g} s parts, "
          f"nproc {meta['nproc']}) ==")
    for proto, r in runs.items():
        srv = r.get("server") or {}
        parts, segs = srv.get("parts") or {}, srv.get("segments") or {}
        cli = r["client"]
        enc = r["encoder_speed"]
        cp, cs = cli["parts"], cli["segments"]
        cmp = {
            "segment_p95_ratio_over_baseline": div(segs.get("p95"), b95),
            "part_p95_sooner_than_baseline_segment_p95_s": sub(b95, parts.get("p95")),
            "client_segment_p95_ratio_over_baseline": div(cs.get("p95"), b95),
            "client_part_p95_sooner_than_baseline_segment_p95_s": sub(b95, cp.get("p95")),
            # The first frame of a chunk waits for the whole chunk, then for its listing.
            "chunk_plus_p95_baseline_s": None if b95 is None else seg_s + b95,
            "chunk_plus_p95_oxcast_part_s": None if parts.get("p95") is None else part_s + parts["p95"],
            "chunk_plus_p95_oxcast_part_client_s": None if cp.get("p95") is None else part_s + cp["p95"],
        }
        goals = {
            "part_p95_le_1s": ok(parts.get("p95"), 1.0),
            "segment_p95_le_1_5s": ok(segs.get("p95"), 1.5),
            # Paced by a real-time publisher the encoder reports ~1.0x whenever it keeps up;
            # whether it can is its unpaced capacity.
            "encoder_ge_1x": ok(args.capacity, 1.0, ge=True),
        }
        print(f"-- {proto}: stream {r['stream_id']}, variant {cli['variant']}, "
              f"master.m3u8 up at {fmt(r.get('master_s'))}, publisher ended at "
              f"{fmt(r.get('publisher_ended_s'))} (times from publisher launch)")
        print(f"   server-side listing delay (its own stats, both video rungs, read at "
              f"t={fmt(srv.get('t_s'))}):")
        print(line("parts", parts))
        print(line("segments", segs))
        print(f"   encoder capacity (unpaced ladder encode) {fmt(args.capacity, 'x', 2)};  while live (server health, ~2 s windows, paced by the publisher)  min {fmt(enc['min'], 'x', 2)}  median {fmt(enc['median'], 'x', 2)}"
              f"  ({enc['samples']} samples)   dropped frames {r.get('dropped_frames')}")
        print(f"   client-observed (includes publisher start-up and HTTP), {cli['variant']}:")
        print(line("parts", cp))
        print(line("segments", cs))
        eos = cli.get("end_of_stream_segment")
        if eos:
            print(f"     (end-of-stream segment {eos['uri']}, {eos['media_end_s']:.3f} s media end, "
                  f"listed {fmt(eos['delay_s'])} after it; not in the stats above)")
        print(f"     part delay drift (last third - first third, medians): "
              f"{fmt(cli.get('part_delay_drift_s'))};  "
              f"first-playlist items not timed: {cli['initial_items_excluded']}, "
              f"blocking reloads {cli['reloads']}, timed out {cli['blocking_timeouts']}")
        ratio = cmp["segment_p95_ratio_over_baseline"]
        sooner = cmp["part_p95_sooner_than_baseline_segment_p95_s"]
        print(f"   vs ffmpeg-hls baseline (segment p95 {fmt(b95)}):")
        print(f"     segment p95 ratio oxcast/baseline: {fmt(ratio, 'x', 2)} server-side, "
              f"{fmt(cmp['client_segment_p95_ratio_over_baseline'], 'x', 2)} client-observed")
        if sooner is not None:
            word = "sooner" if sooner >= 0 else "later"
            print(f"     part p95 {fmt(parts.get('p95'))} vs baseline segment p95 {fmt(b95)}: "
                  f"a viewer can start playing a part {abs(sooner):.3f}s {word} "
                  f"(client-observed part p95 {fmt(cp.get('p95'))}: "
                  f"{fmt(cmp['client_part_p95_sooner_than_baseline_segment_p95_s'])})")
        print(f"     per media instant (chunk length + p95 listing delay): baseline "
              f"{seg_s:g}+{fmt(b95)} = {fmt(cmp['chunk_plus_p95_baseline_s'])}, oxcast part "
              f"{part_s:g}+{fmt(parts.get('p95'))} = {fmt(cmp['chunk_plus_p95_oxcast_part_s'])} "
              f"(client-observed {fmt(cmp['chunk_plus_p95_oxcast_part_client_s'])})")
        print(f"   goals: part p95 <= 1.0 s: {pf[goals['part_p95_le_1s']]}   "
              f"segment p95 <= 1.5 s: {pf[goals['segment_p95_le_1_5s']]}   "
              f"encoder >= 1.0x: {pf[goals['encoder_ge_1x']]}")
        if r.get("errors"):
            print(f"   follower notes ({len(r['errors'])}): " + "; ".join(r["errors"][:5]))
        result["protocols"][proto] = {
            "stream_id": r["stream_id"],
            "server": srv,
            "encoder_speed": enc,
            "dropped_frames": r.get("dropped_frames"),
            "client_observed": {k: v for k, v in cli.items() if k != "items"},
            "client_items": cli["items"],
            "master_available_s": r.get("master_s"),
            "publisher_ended_s": r.get("publisher_ended_s"),
            "health_samples": r["health"],
            "server_latency_reads": r["server_reads"],
            "follower_errors": r.get("errors"),
            "vs_baseline": cmp,
            "goals": goals,
        }
    print(f"-- baseline: ffmpeg -f hls (fMP4, {seg_s:g} s segments, no parts), same source and "
          f"load, no network; its {meta['ladder'].split()[0]} playlist file polled every 50 ms, "
          f"times from ffmpeg launch")
    print(line("segments", base["segments"]))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("follow")
    f.add_argument("--base", required=True)
    f.add_argument("--stream", required=True)
    f.add_argument("--t0", type=float, required=True)
    f.add_argument("--duration", type=float, required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--sample-every", type=int, default=2)
    f.add_argument("--final-before-end", type=float, default=1.0)
    f.add_argument("--master-timeout", type=float, default=10.0)
    f.add_argument("--tail", type=float, default=15.0)
    f.add_argument("--pub-end-file", help="file in which the caller writes the publisher's end")
    w = sub.add_parser("watch-file")
    w.add_argument("--playlist", required=True)
    w.add_argument("--t0", type=float, required=True)
    w.add_argument("--stop-file", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--interval", type=float, default=0.05)
    s = sub.add_parser("summary")
    s.add_argument("--run", action="append", default=[])
    s.add_argument("--baseline", required=True)
    s.add_argument("--capacity", type=float, help="x real time of the live ladder encode, unpaced")
    s.add_argument("--meta", required=True)
    s.add_argument("--out", required=True)
    a = p.parse_args()
    return {"follow": follow, "watch-file": watch_file, "summary": summary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
