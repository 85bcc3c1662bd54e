#!/usr/bin/env python3
"""The follower of bench/live_nodes.sh (stdlib only). Not meant to be run on its own.

Follows the first variant of one live stream on two oxcast nodes at once: A, the node that
encodes it (api,ingest,live), and B, an api-only node that serves it from the bucket. For each
next part (the playlist's EXT-X-PRELOAD-HINT) it sends the same LL-HLS blocking reload to A and
B at the same moment, from two threads, and notes when each complete answer arrived; B - A is
what serving through another node costs. It also notes when each segment first appears on each
node, GETs every part B lists once on B (can B serve what it lists?), counts every answer that
is not 200, and reads A's own listing-delay stats (GET /api/v1/live-streams/{id}/latency) just
before the publisher stops. Prints the summary and writes the result JSON.

All times are wall-clock (time.time(), the same clock as bash's $EPOCHREALTIME).
"""

import argparse
import http.client
import json
import queue
import re
import sys
import threading
import time
import urllib.parse

ATTR_URI = re.compile(r'URI="([^"]*)"')
PART_URI = re.compile(r"part-(\d+)-(\d+)\.m4s$")
SEG_URI = re.compile(r"seg-(\d+)\.m4s$")

# A blocking reload answered within this long of being sent was not held: the part existed
# already (the follower fell behind), so B - A says nothing about B's lag.
HELD_MIN_S = 0.020


def pct(values, p):
    """Nearest-rank percentile, the server's rule (s[round((n-1)*p)])."""
    s = sorted(values)
    if not s:
        return None
    return s[int(round((len(s) - 1) * p))]


def stats_ms(values_s):
    ms = [v * 1000.0 for v in values_s]
    return {
        "count": len(ms),
        "p50": rounded(pct(ms, 0.5)),
        "p95": rounded(pct(ms, 0.95)),
        "max": rounded(max(ms)) if ms else None,
    }


def rounded(v, nd=1):
    return None if v is None else round(v, nd)


class Node:
    """One oxcast node, one keep-alive connection (each thread uses its own Node)."""

    def __init__(self, name, base, token=None):
        u = urllib.parse.urlsplit(base)
        self.name = name
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = None

    def get(self, path, timeout=10.0):
        """(status, body bytes, wall time the whole answer was read); status 0 on an error."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            try:
                self.conn.request("GET", path, headers=self.headers)
                r = self.conn.getresponse()
                body = r.read()
                done = time.time()
                if r.getheader("connection", "").lower() == "close":
                    self.close()
                return r.status, body, done
            except (http.client.HTTPException, OSError) as e:
                self.close()
                # A kept-alive connection the server closed meanwhile: once more, fresh.
                if attempt == 0 and isinstance(
                    e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                ):
                    continue
                return 0, str(e).encode(), time.time()
        return 0, b"unreachable", time.time()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def parse(text):
    """(part URIs, segment URIs, init URI, preload hint (msn, part) or None, ended)."""
    parts, segs, init, hint, ended = [], [], None, None, False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-PART:"):
            u = ATTR_URI.search(line)
            if u:
                parts.append(u.group(1))
        elif line.startswith("#EXT-X-MAP:"):
            u = ATTR_URI.search(line)
            init = u.group(1) if u else init
        elif line.startswith("#EXT-X-PRELOAD-HINT:") and "TYPE=PART" in line:
            u = ATTR_URI.search(line)
            m = PART_URI.search(u.group(1)) if u else None
            if m:
                hint = (int(m.group(1)), int(m.group(2)))
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
        elif line and not line.startswith("#"):
            segs.append(line)
    return parts, segs, init, hint, ended


class Counter:
    """Non-200 answers by node, phase and status."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by = {}

    def add(self, node, phase, status):
        with self.lock:
            key = f"{node} {phase} {status}"
            self.by[key] = self.by.get(key, 0) + 1

    def total(self, phase):
        return sum(n for k, n in self.by.items() if k.split()[1] == phase)


def pair(a, b, path, timeout):
    """The same GET on both nodes, released at the same moment; [(sent, status, body, done)]."""
    gate = threading.Barrier(2)
    out = [None, None]

    def one(i, node):
        gate.wait()
        sent = time.time()
        status, body, done = node.get(path, timeout)
        out[i] = (sent, status, body, done)

    ts = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate((a, b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def run(args):
    token = args.token or None
    a, b = Node("A", args.a, token), Node("B", args.b, token)
    t0, end_publish = args.t0, args.t0 + args.duration
    counts = Counter()
    notes = []
    result = {"stream_id": args.stream, "t0_epoch_s": t0}

    # ---- A's own stats, read 1 s before the publisher's -t runs out (the session's whole
    # life so far; after the end the session, and its stats, are gone).
    latency = {}

    def read_latency():
        delay = end_publish - 1.0 - time.time()
        if delay > 0:
            time.sleep(delay)
        n = Node("A", args.a, token)
        status, body, done = n.get(f"/api/v1/live-streams/{args.stream}/latency")
        n.close()
        latency["t_s"] = round(done - t0, 3)
        latency["status"] = status
        try:
            latency["body"] = json.loads(body)
        except ValueError:
            latency["body"] = body.decode("utf-8", "replace")[:300]

    lat_thread = threading.Thread(target=read_latency, daemon=True)
    lat_thread.start()

    # ---- every part B lists, fetched once on B, right after it was listed
    fetch_q = queue.Queue()
    fetched = {"ok": 0, "failed": 0, "failures": []}

    def fetcher():
        n = Node("B", args.b, token)
        while True:
            uri = fetch_q.get()
            if uri is None:
                break
            status, body, _ = n.get(uri, timeout=15)
            if status == 200 and body:
                fetched["ok"] += 1
            else:
                fetched["failed"] += 1
                fetched["failures"].append({"uri": uri, "status": status,
                                            "body": body[:120].decode("utf-8", "replace")})
        n.close()

    fetch_thread = threading.Thread(target=fetcher, daemon=True)
    fetch_thread.start()
    queued = set()

    def fetch_listed(base_dir, text):
        p_uris, _, init, _, _ = parse(text)
        for u in ([init] if init else []) + p_uris:
            if u not in queued:
                queued.add(u)
                fetch_q.put(base_dir + u)

    # ---- the master playlist, on both nodes (retried while the stream starts)
    master_path = f"/live/{args.stream}/master.m3u8"
    masters = {}
    deadline = time.time() + args.master_timeout
    for node in (b, a):
        while True:
            status, body, done = node.get(master_path, timeout=5)
            if status == 200:
                masters[node.name] = (body.decode(), round(done - t0, 3))
                break
            counts.add(node.name, "start-up", status)
            if time.time() > deadline:
                raise SystemExit(f"live_nodes: GET {node.name}{master_path} not 200 within "
                                 f"{args.master_timeout:g} s (last: HTTP {status} {body[:120]!r})")
            time.sleep(0.1)
    if masters["A"][0] != masters["B"][0]:
        notes.append("the master playlists of A and B differ")
    variants = [ln.strip() for ln in masters["B"][0].splitlines()
                if ln.strip() and not ln.startswith("#")]
    if not variants:
        raise SystemExit("live_nodes: the master playlist lists no variant")
    variant = variants[0]
    path = f"/live/{args.stream}/{variant}"
    base_dir = path[: path.rfind("/") + 1]

    # ---- the follower
    rounds = []
    seen_seg = {"A": {}, "B": {}}  # uri -> first wall time listed (None: in the first read)

    def record(node, text, at):
        for u in parse(text)[1]:
            seen_seg[node].setdefault(u, at)

    status, body, done = a.get(path)
    if status != 200:
        raise SystemExit(f"live_nodes: GET A{path}: HTTP {status}: {body[:200]!r}")
    text_a = body.decode()
    follow_start = done
    record("A", text_a, None)  # already listed: not timed
    status, body, _ = b.get(path)
    if status == 200:
        record("B", body.decode(), None)
        fetch_listed(base_dir, body.decode())
    else:
        counts.add("B", "start-up", status)
    hint = parse(text_a)[3]
    ended = parse(text_a)[4]
    skip_until = follow_start + args.skip
    hard_stop = end_publish + args.tail

    while not ended and time.time() < hard_stop:
        if hint is None:
            q, want = "", None
        else:
            q = f"?_HLS_msn={hint[0]}&_HLS_part={hint[1]}"
            want = f"part-{hint[0]}-{hint[1]}.m4s"
        (sa, st_a, body_a, da), (_, st_b, body_b, db) = pair(a, b, path + q, args.hold_timeout)
        phase = "follow" if sa < end_publish else "after-end"
        txt_a = body_a.decode("utf-8", "replace")
        txt_b = body_b.decode("utf-8", "replace")
        for name, st in (("A", st_a), ("B", st_b)):
            if st != 200:
                counts.add(name, phase, st)
        if st_a == 200:
            record("A", txt_a, da)
        if st_b == 200:
            record("B", txt_b, db)
            fetch_listed(base_dir, txt_b)
        if want is not None:
            # The part asked for, or the segment it belongs to (a playlist that has moved on
            # lists the finished segment instead of its parts).
            whole = f"seg-{hint[0]}.m4s"
            both = st_a == 200 and st_b == 200 and all(
                want in t or whole in t for t in (txt_a, txt_b))
            rounds.append({
                "part": want,
                "sent_s": round(sa - t0, 4),
                "a_s": round(da - t0, 4),
                "b_s": round(db - t0, 4),
                "a_status": st_a,
                "b_status": st_b,
                "a_held_s": round(da - sa, 4),
                "lag_s": round(db - da, 4),
                "both_listed": both,
                "startup": da < skip_until,
                "after_end": phase == "after-end",
            })
        asked = hint
        if st_a == 200 or st_b == 200:
            _, _, _, hint, ended = parse(txt_a if st_a == 200 else txt_b)
            if hint is not None and hint == asked:
                # Answered without the part asked for: the stream has stopped growing (its
                # end), so the same reload would be answered at once again.
                if phase == "after-end":
                    break
                time.sleep(0.1)
        else:
            if st_a == 0 and st_b == 0:
                raise SystemExit(f"live_nodes: neither node answers: {body_a[:200]!r}")
            if phase == "after-end":
                break  # the session is over (404) or holds no more parts (503)
            hint = None  # a plain reload next, for a fresh hint
            time.sleep(0.1)

    fetch_q.put(None)
    fetch_thread.join(timeout=30)
    lat_thread.join(timeout=max(0.0, end_publish - time.time()) + 15)
    a.close()
    b.close()

    # ---- figures
    timed = [r for r in rounds if r["both_listed"] and not r["startup"] and not r["after_end"]]
    held = [r for r in timed if r["a_held_s"] >= HELD_MIN_S]
    part_lag = [r["lag_s"] for r in held]
    seg_lag, seg_items = [], []
    for uri, at_a in seen_seg["A"].items():
        at_b = seen_seg["B"].get(uri)
        if at_a is None or at_b is None or at_a < skip_until or at_a >= end_publish:
            continue  # listed at once, in the start-up, or closed by the end of the stream
        seg_lag.append(at_b - at_a)
        seg_items.append({"uri": uri, "a_s": round(at_a - t0, 4), "b_s": round(at_b - t0, 4),
                          "lag_s": round(at_b - at_a, 4)})
    lags = {"parts": stats_ms(part_lag), "segments": stats_ms(seg_lag)}

    body = latency.get("body") if isinstance(latency.get("body"), dict) else {}
    listing = {}
    for kind in ("parts", "segments"):
        srv = body.get(kind) or {}
        a50, a95 = srv.get("p50"), srv.get("p95")
        l50, l95 = lags[kind]["p50"], lags[kind]["p95"]
        b50 = None if a50 is None or l50 is None else a50 * 1000.0 + l50
        b95 = None if a95 is None or l95 is None else a95 * 1000.0 + l95
        listing[kind] = {
            "a_server_count": srv.get("count"),
            "a_p50_ms": None if a50 is None else round(a50 * 1000.0, 1),
            "a_p95_ms": None if a95 is None else round(a95 * 1000.0, 1),
            "b_p50_ms": None if b50 is None else round(b50, 1),
            "b_p95_ms": None if b95 is None else round(b95, 1),
            "ratio_b_over_a_p50": None if b50 is None or not a50 else round(b50 / (a50 * 1000.0), 2),
        }
    goal = None if lags["parts"]["p50"] is None else lags["parts"]["p50"] <= args.goal_ms

    result.update({
        "variant": variant,
        "master_a_s": masters["A"][1],
        "master_b_s": masters["B"][1],
        "follow_start_s": round(follow_start - t0, 3),
        "skip_s": args.skip,
        "held_min_s": HELD_MIN_S,
        "lag_ms": lags,
        "listing_delay_ms": listing,
        "goal_ms": args.goal_ms,
        "goal_b_minus_a_p50": goal,
        "rounds_total": len(rounds),
        "rounds_startup": sum(1 for r in rounds if r["startup"]),
        "rounds_after_end": sum(1 for r in rounds if r["after_end"]),
        "rounds_not_both_listed": sum(
            1 for r in rounds if not r["both_listed"] and not r["startup"] and not r["after_end"]),
        "rounds_not_held": len(timed) - len(held),
        "non_200": dict(sorted(counts.by.items())),
        "non_200_while_publishing": counts.total("follow"),
        "b_part_fetches": {k: fetched[k] for k in ("ok", "failed")},
        "b_part_fetch_failures": fetched["failures"][:50],
        "a_latency_read": latency,
        "notes": notes,
        "rounds": rounds,
        "segments": seg_items,
    })
    meta = json.loads(args.meta) if args.meta else {}
    out = dict(meta)
    out["result"] = result
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print_summary(meta, result)
    if latency.get("status") != 200:
        print(f"live_nodes: A's latency endpoint answered {latency.get('status')}", file=sys.stderr)
        return 1
    if not part_lag:
        print("live_nodes: no part was timed on both nodes", file=sys.stderr)
        return 1
    return 0


def fmt(v, unit=" ms"):
    return "n/a" if v is None else f"{v:.1f}{unit}"


def print_summary(meta, r):
    print(f"== summary: {meta.get('size', '?')} @{meta.get('fps', '?')} fps, "
          f"{meta.get('duration_s', '?')} s, rungs {meta.get('rungs', '?')}, nproc "
          f"{meta.get('nproc', '?')} ==")
    print(f"variant {r['variant']}; master on B at {r['master_b_s']:.2f} s, on A at "
          f"{r['master_a_s']:.2f} s after the publisher's launch; first {r['skip_s']:g} s of "
          f"following not timed")
    print(f"blocking reloads: {r['rounds_total']} pairs; timed {r['lag_ms']['parts']['count']}, "
          f"start-up {r['rounds_startup']}, after the publisher's end {r['rounds_after_end']}, "
          f"not listed by both {r['rounds_not_both_listed']}, not held on A "
          f"{r['rounds_not_held']}")
    print("B - A (the same blocking reload sent to both at once; answer complete on B minus on A):")
    for kind in ("parts", "segments"):
        s = r["lag_ms"][kind]
        print(f"   {kind:<9} n={s['count']:<4} p50 {fmt(s['p50'])}  p95 {fmt(s['p95'])}  "
              f"max {fmt(s['max'])}")
    print("listing delay (A: the server's own stats, both video rungs, whole session; "
          "B: A + the B - A above):")
    for kind in ("parts", "segments"):
        d = r["listing_delay_ms"][kind]
        print(f"   {kind:<9} A p50 {fmt(d['a_p50_ms'])}  p95 {fmt(d['a_p95_ms'])}   "
              f"B p50 {fmt(d['b_p50_ms'])}  p95 {fmt(d['b_p95_ms'])}")
    for kind in ("parts", "segments"):
        ratio = r["listing_delay_ms"][kind]["ratio_b_over_a_p50"]
        print(f"ratio B/A listing delay p50, {kind}: {'n/a' if ratio is None else f'{ratio:.2f}x'}")
    pf = {True: "PASS", False: "FAIL", None: "n/a"}
    print(f"goal B - A part p50 <= {r['goal_ms']:g} ms: {pf[r['goal_b_minus_a_p50']]}")
    body = r["a_latency_read"].get("body")
    if isinstance(body, dict):
        print(f"A's encoder (latency read at {r['a_latency_read']['t_s']:.1f} s): speed "
              f"{body.get('encoder_speed')}, fps {body.get('fps')}, dropped frames "
              f"{body.get('dropped_frames')}")
    n200 = r["non_200"]
    print(f"non-200 answers while publishing: {r['non_200_while_publishing']}"
          + (f"   (all: {', '.join(f'{k}: {v}' for k, v in n200.items())})" if n200 else ""))
    f = r["b_part_fetches"]
    print(f"parts (and init) listed on B, fetched once on B: {f['ok']} ok, {f['failed']} failed")
    for x in r["b_part_fetch_failures"][:5]:
        print(f"   {x['uri']}: HTTP {x['status']} {x['body']!r}")
    for n in r["notes"]:
        print(f"note: {n}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="base URL of node A (api,ingest,live)")
    p.add_argument("--b", required=True, help="base URL of node B (api)")
    p.add_argument("--stream", required=True)
    p.add_argument("--t0", type=float, required=True, help="wall time the publisher started")
    p.add_argument("--duration", type=float, required=True, help="publisher's -t, seconds")
    p.add_argument("--out", required=True)
    p.add_argument("--meta", help="JSON object merged into the result file")
    p.add_argument("--token", default="", help="bearer token for both nodes")
    p.add_argument("--skip", type=float, default=5.0, help="seconds of following not timed")
    p.add_argument("--goal-ms", type=float, default=150.0)
    p.add_argument("--master-timeout", type=float, default=20.0)
    p.add_argument("--hold-timeout", type=float, default=15.0)
    p.add_argument("--tail", type=float, default=3.0,
                   help="seconds to keep following after the publisher's end")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
