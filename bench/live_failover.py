#!/usr/bin/env python3
"""The driver of bench/live_failover.sh (stdlib only). Not meant to be run on its own.

The deployment (PostgreSQL, SeaweedFS, an api node, an ingest node, two live encoders) is
started by the shell script; this process runs the measurement on it:

1. Baseline: --baselines times, a fresh publish (the publisher started against the ingest,
   the stream idle before) until the first part is listed on the api node's first variant:
   the floor any failover includes (the encoder's probe of the stream and its start). All but
   the last publisher are stopped again, and the session is let end (the grace period) before
   the next; the last one keeps publishing for the failover phase.
2. Failover, --kills times: wait until the stream is steady (>= --steady-s of new parts listed
   since the last discontinuity), find the encoder running it (its /metrics gauge
   oxcast_live_sessions_active), SIGKILL it, and time on the api node's first variant when the
   first part after the new #EXT-X-DISCONTINUITY is listed; then check the publisher is still
   running and the session the same, and start a replacement encoder (new data dir, new ports)
   so that two are available for the next kill.

The api node's variant playlist is followed by two threads at once: LL-HLS blocking reloads
(?_HLS_msn=M&_HLS_part=P from #EXT-X-PRELOAD-HINT) and a plain reload every --poll-ms; a part's
listing time is the earlier of the two (both are in the JSON). Every part listed is fetched
once (can the api node serve what it lists?). Every answer that is not 200 is counted.

All times are wall-clock (time.time(), the same clock as bash's $EPOCHREALTIME).
"""

import argparse
import http.client
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

ATTR_URI = re.compile(r'URI="([^"]*)"')
ATTR_DUR = re.compile(r"DURATION=([0-9.]+)")
PART_URI = re.compile(r"part-(\d+)-(\d+)\.m4s$")


class StepFailed(Exception):
    """A step of the benchmark broke: reported, and the script exits non-zero."""


def pct(values, p):
    """Nearest-rank percentile, the server's rule (s[round((n-1)*p)])."""
    s = sorted(values)
    if not s:
        return None
    return s[int(round((len(s) - 1) * p))]


def r3(v):
    return None if v is None else round(v, 3)


def ms(v):
    return None if v is None else round(v * 1000.0, 1)


class Node:
    """One HTTP endpoint, one keep-alive connection (one per thread)."""

    def __init__(self, base, token=None):
        u = urllib.parse.urlsplit(base)
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
    """[(part uri, duration, epoch)], preload hint (msn, part) or None, ended.

    epoch: EXT-X-DISCONTINUITY-SEQUENCE plus the #EXT-X-DISCONTINUITY tags above the part,
    i.e. how many discontinuities came before it in the session."""
    parts, hint, ended = [], None, False
    epoch = 0
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            epoch = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            epoch += 1
        elif line.startswith("#EXT-X-PART:"):
            u, d = ATTR_URI.search(line), ATTR_DUR.search(line)
            if u:
                parts.append((u.group(1), float(d.group(1)) if d else 0.0, epoch))
        elif line.startswith("#EXT-X-PRELOAD-HINT:") and "TYPE=PART" in line:
            u = ATTR_URI.search(line)
            m = PART_URI.search(u.group(1)) if u else None
            if m:
                hint = (int(m.group(1)), int(m.group(2)))
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
    return parts, hint, ended


class Counter:
    """Non-200 answers by phase, what was asked and status."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by = {}
        self.phase = "start-up"

    def add(self, what, status):
        with self.lock:
            key = f"{self.phase} {what} {status}"
            self.by[key] = self.by.get(key, 0) + 1

    def total(self, phase):
        with self.lock:
            return sum(n for k, n in self.by.items() if k.split()[0] == phase)


class Follower:
    """Follows one media playlist with blocking reloads and plain polls at once; notes when
    each part is first listed (by each method) and its epoch; fetches every part once."""

    def __init__(self, api, token, path, poll_s, counts):
        self.api, self.token, self.path, self.poll_s = api, token, path, poll_s
        self.base_dir = path[: path.rfind("/") + 1]
        self.counts = counts
        self.lock = threading.Lock()
        self.parts = {}  # uri -> {"t": min, "blocking": t, "poll": t, "epoch", "dur"}
        self.order = []  # uris in first-listed order
        self.stop = threading.Event()
        self.fetch_q = queue.Queue()
        self.fetched = {"ok": 0, "failed": 0, "failures": []}
        self.answers = {"blocking": 0, "poll": 0}
        self.threads = [
            threading.Thread(target=self._blocking, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
            threading.Thread(target=self._fetch, daemon=True),
        ]

    def start(self):
        for t in self.threads:
            t.start()

    def close(self):
        self.stop.set()
        self.fetch_q.put(None)
        for t in self.threads:
            t.join(timeout=1.0)  # daemons: one held in a blocking reload is left behind

    def _record(self, method, text, at):
        parts, hint, ended = parse(text)
        with self.lock:
            self.answers[method] += 1
            for uri, dur, epoch in parts:
                p = self.parts.get(uri)
                if p is None:
                    p = {"t": at, "epoch": epoch, "dur": dur, "blocking": None, "poll": None}
                    self.parts[uri] = p
                    self.order.append(uri)
                    self.fetch_q.put(uri)
                elif at < p["t"]:
                    p["t"] = at
                if p[method] is None:
                    p[method] = at
                if p["epoch"] != epoch:
                    p.setdefault("epoch_changed", epoch)
        return hint, ended

    def _blocking(self):
        n = Node(self.api, self.token)
        hint = None
        while not self.stop.is_set():
            q = "" if hint is None else f"?_HLS_msn={hint[0]}&_HLS_part={hint[1]}"
            status, body, done = n.get(self.path + q, timeout=10)
            if self.stop.is_set():
                break
            if status != 200:
                self.counts.add("blocking-reload", status)
                hint = None
                time.sleep(0.05)
                continue
            asked = hint
            hint, ended = self._record("blocking", body.decode("utf-8", "replace"), done)
            if ended:
                break
            if hint is None or hint == asked:
                time.sleep(0.05)  # not held (no hint, or nothing new): do not spin
        n.close()

    def _poll(self):
        n = Node(self.api, self.token)
        while not self.stop.is_set():
            t = time.time()
            status, body, done = n.get(self.path, timeout=5)
            if status != 200:
                self.counts.add("poll", status)
            else:
                _, ended = self._record("poll", body.decode("utf-8", "replace"), done)
                if ended:
                    break
            self.stop.wait(max(0.0, self.poll_s - (time.time() - t)))
        n.close()

    def _fetch(self):
        n = Node(self.api, self.token)
        while True:
            uri = self.fetch_q.get()
            if uri is None:
                break
            status, body, _ = n.get(self.base_dir + uri, timeout=15)
            if status == 200 and body:
                self.fetched["ok"] += 1
            else:
                self.fetched["failed"] += 1
                self.counts.add("part-fetch", status)
                self.fetched["failures"].append({"uri": uri, "status": status,
                                                 "body": body[:120].decode("utf-8", "replace")})
        n.close()

    def snapshot_of(self, uri):
        with self.lock:
            return dict(self.parts[uri])

    def snapshot(self):
        with self.lock:
            return [(u, dict(self.parts[u])) for u in self.order]


class Bench:
    def __init__(self, args):
        self.a = args
        self.token = args.token or None
        self.api = Node(args.api, self.token)
        self.counts = Counter()
        self.children = []  # Popen of the publishers and replacement encoders
        self.encoders = []  # {"name", "pid", "port", "relay", "popen" (None: the script's)}
        for spec in args.encoder:
            name, pid, port, relay = spec.split(",")
            self.encoders.append({"name": name, "pid": int(pid), "port": int(port),
                                  "relay": int(relay), "popen": None, "alive": True,
                                  "log": os.path.join(args.scratch, f"node-{name}.log")})
        self.next_encoder = len(self.encoders) + 1
        self.publisher = None
        self.finishing = False
        self.old_sessions = set()
        self.master_ended = 0
        self.rng = random.Random(args.seed)
        self.notes = []
        self.deadline = time.time() + args.max_s

    # ------------------------------------------------------------------ processes
    def remember(self):
        """Writes the pids of the children not yet reaped (for the script's cleanup)."""
        live = [p.pid for p in self.children if p.returncode is None]
        with open(self.a.pids_file + ".tmp", "w") as f:
            f.writelines(f"{pid}\n" for pid in live)
        os.replace(self.a.pids_file + ".tmp", self.a.pids_file)

    def spawn(self, cmd, log):
        f = open(log, "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        self.children.append(p)
        self.remember()
        return p

    def stop_child(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.remember()

    def stop_children(self):
        # The publisher first: stopping an encoder under a live stream moves it again.
        if self.publisher is not None:
            self.stop_child(self.publisher)
        for p in reversed(self.children):
            self.stop_child(p)

    def check_time(self, what):
        if time.time() > self.deadline:
            raise StepFailed(f"the run took longer than --max-s {self.a.max_s:g} s ({what})")

    # ------------------------------------------------------------------ api helpers
    def stream(self):
        status, body, _ = self.api.get(f"/api/v1/live-streams/{self.a.stream}")
        if status != 200:
            self.counts.add("stream-info", status)
            return None
        return json.loads(body)

    def session_id(self):
        s = self.stream()
        cur = (s or {}).get("current_session") or {}
        return cur.get("id")

    def variant_path(self, timeout, old_sessions=()):
        """Polls master.m3u8 until 200 for a session not in `old_sessions`; the first
        variant's path. (After a session ends the stream's master keeps naming it, with its
        ended playlists, until the next session is live.)"""
        master = f"/live/{self.a.stream}/master.m3u8"
        end = time.time() + timeout
        while True:
            status, body, _ = self.api.get(master, timeout=5)
            if status == 200:
                variants = [ln.strip() for ln in body.decode().splitlines()
                            if ln.strip() and not ln.startswith("#")]
                if not variants:
                    raise StepFailed("the master playlist lists no variant")
                if variants[0].split("/", 1)[0] not in old_sessions:
                    return f"/live/{self.a.stream}/{variants[0]}", variants[0]
                self.master_ended += 1  # 200, but not yet the new session
            else:
                self.counts.add("master", status)
            if self.publisher is not None and self.publisher.poll() is not None:
                return None, None
            if time.time() > end:
                raise StepFailed(f"GET {master} not 200 within {timeout:g} s "
                                 f"(last: HTTP {status} {body[:120]!r})")
            time.sleep(0.03)

    def metric(self, enc, name):
        n = Node(f"http://127.0.0.1:{enc['port']}", self.token)
        status, body, _ = n.get("/metrics", timeout=3)
        n.close()
        if status != 200:
            return None
        total = 0.0
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith(name) and not line.startswith("#"):
                rest = line[len(name):]
                if rest[:1] in (" ", "{"):
                    try:
                        total += float(line.rsplit(" ", 1)[1])
                    except ValueError:
                        pass
        return total

    def running(self):
        """[(encoder, sessions active)] of the live encoders that run a session."""
        out = []
        for e in self.encoders:
            if not e["alive"]:
                continue
            v = self.metric(e, "oxcast_live_sessions_active")
            if v:
                out.append((e, v))
        return out

    def log_size(self, e):
        try:
            return os.path.getsize(e["log"])
        except OSError:
            return 0

    def started_since(self, sizes):
        """Names of the encoders whose log says 'live encoder started' since `sizes`."""
        names = []
        for e in self.encoders:
            try:
                with open(e["log"], "rb") as f:
                    f.seek(sizes.get(e["name"], 0))
                    if b"live encoder started" in f.read():
                        names.append(e["name"])
            except OSError:
                pass
        return names

    def registered(self, relay_ports):
        """Whether every relay address has a row in nodes (at least one heartbeat)."""
        if not self.a.psql:
            return None
        addrs = ",".join(f"'127.0.0.1:{p}'" for p in relay_ports)
        try:
            out = subprocess.run(
                [self.a.psql, "-X", "-qtA", self.a.db_url, "-c",
                 f"SELECT count(DISTINCT relay_addr) FROM nodes WHERE relay_addr IN ({addrs})"],
                capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0 and out.stdout.strip() == str(len(relay_ports))

    def wait_registered(self, encs, timeout=30.0):
        ports = [e["relay"] for e in encs]
        end = time.time() + timeout
        first = self.registered(ports)
        if first is None:
            # No psql: the beat is every 2 s, the first at start-up.
            time.sleep(2.5)
            return
        while not first:
            if time.time() > end:
                raise StepFailed(f"encoders {[e['name'] for e in encs]} not registered in "
                                 f"the database within {timeout:g} s")
            time.sleep(0.2)
            first = self.registered(ports)

    def start_encoder(self):
        name = f"enc{self.next_encoder}"
        self.next_encoder += 1
        ports = free_ports(4)
        log = os.path.join(self.a.scratch, f"node-{name}.log")
        p = self.spawn(["bash", self.a.node_launcher, name, "live", *map(str, ports)], log)
        e = {"name": name, "pid": p.pid, "port": ports[0], "relay": ports[3], "popen": p,
             "alive": True, "log": log}
        self.encoders.append(e)
        n = Node(f"http://127.0.0.1:{ports[0]}", self.token)
        end = time.time() + 60
        while True:
            status, _, _ = n.get("/healthz", timeout=2)
            if status == 200:
                break
            if p.poll() is not None:
                raise StepFailed(f"replacement encoder {name} exited (status {p.returncode}) "
                                 f"before /healthz answered 200; see {log}")
            if time.time() > end:
                raise StepFailed(f"replacement encoder {name}: /healthz not 200 within 60 s")
            time.sleep(0.1)
        n.close()
        return e

    def start_publisher(self, i):
        log = os.path.join(self.a.scratch, f"publish-{i}.log")
        t0 = time.time()
        self.publisher = self.spawn(["bash", self.a.publish_launcher], log)
        return t0, log

    # ------------------------------------------------------------------ baseline
    def baseline_once(self, i, keep):
        """One fresh publish; seconds from the publisher's launch to the first part listed."""
        for attempt in range(3):
            sizes = {e["name"]: self.log_size(e) for e in self.encoders}
            t0, log = self.start_publisher(i)
            path, variant = self.variant_path(timeout=30, old_sessions=self.old_sessions)
            if path is None:
                self.notes.append(f"baseline {i}: the publisher exited before the stream went "
                                  f"live (attempt {attempt + 1}; see {os.path.basename(log)})")
                time.sleep(1.0)
                continue
            t_master = time.time()
            end = time.time() + 30
            first = None
            last = b""
            while first is None:
                status, body, done = self.api.get(path, timeout=5)
                last = body
                if status == 200:
                    parts, _, _ = parse(body.decode("utf-8", "replace"))
                    if parts:
                        first = done
                        break
                else:
                    self.counts.add("variant", status)
                if self.publisher.poll() is not None:
                    raise StepFailed(f"baseline {i}: the publisher exited (status "
                                     f"{self.publisher.returncode}); see {log}")
                if time.time() > end:
                    raise StepFailed(
                        f"baseline {i}: no part listed within 30 s of the master (variant "
                        f"{variant}, current session {self.session_id()}; last answer HTTP "
                        f"{status}: {last[:700].decode('utf-8', 'replace')!r})")
                time.sleep(self.a.poll_ms / 1000.0)
            run = self.running()
            rec = {
                "i": i,
                "publish_to_master_s": r3(t_master - t0),
                "publish_to_first_part_s": r3(first - t0),
                "session": self.session_id(),
                "variant": variant,
                "encoder": ",".join(e["name"] for e, _ in run) or None,
                "attempts": attempt + 1,
            }
            marks = {}
            for e in self.encoders:
                for line in new_lines(e["log"], sizes.get(e["name"], 0)):
                    for key, text in (("encoder_accepted", "publisher accepted"),
                                      ("encoder_started", "live encoder started")):
                        if text in line:
                            marks.setdefault(key, log_time(line))
            rec["publish_to_log_s"] = {k: (None if v is None else r3(v - t0))
                                       for k, v in marks.items()}
            if rec["session"]:
                self.old_sessions.add(rec["session"])
            if variant.split("/", 1)[0] != rec["session"]:
                self.notes.append(f"baseline {i}: the master named session "
                                  f"{variant.split('/', 1)[0]}, the stream's current session "
                                  f"is {rec['session']}")
            if not keep:
                time.sleep(1.0)
                self.stop_child(self.publisher)
                self.publisher = None
                self.wait_idle(i)
            return rec, path
        raise StepFailed(f"baseline {i}: the publisher was refused 3 times")

    def wait_idle(self, i):
        """After the publisher stops: the session ends once the grace period is over."""
        t = time.time()
        end = t + self.a.grace_s + 40
        while True:
            s = self.stream()
            if s is not None and s.get("status") == "idle" and not self.running():
                return time.time() - t
            if time.time() > end:
                raise StepFailed(f"baseline {i}: the stream not idle within "
                                 f"{self.a.grace_s + 40:g} s of the publisher's stop")
            time.sleep(0.25)

    # ------------------------------------------------------------------ failover
    def wait_steady(self, fol, epoch, k):
        """Until the parts of `epoch` listed add up to --steady-s and one was listed lately."""
        end = time.time() + 30 + self.a.steady_s
        while True:
            snap = fol.snapshot()
            cur = [p for _, p in snap if p["epoch"] == epoch]
            have = sum(p["dur"] for p in cur)
            later = [p for _, p in snap if p["epoch"] > epoch]
            if later:
                raise StepFailed(f"kill {k}: an unexpected discontinuity (epoch "
                                 f"{later[0]['epoch']}) before the kill")
            # Media and wall time both: a new encoder lists the GOP the relay replays to it in
            # a burst, faster than real time.
            if (have >= self.a.steady_s and cur
                    and time.time() - min(p["t"] for p in cur) >= self.a.steady_s
                    and time.time() - max(p["t"] for p in cur) < 1.5):
                return have
            if self.publisher.poll() is not None:
                raise StepFailed(f"kill {k}: the publisher exited while waiting for a steady "
                                 f"stream (status {self.publisher.returncode})")
            if time.time() > end:
                raise StepFailed(f"kill {k}: not steady within {30 + self.a.steady_s:g} s "
                                 f"({have:.1f} s of parts in epoch {epoch})")
            time.sleep(0.1)

    def failover(self, fol, k, epoch, session):
        have = self.wait_steady(fol, epoch, k)
        # Steady is reached at the same point of the segment (GOP) each time: kill at a random
        # point of it instead. Where in its GOP the stream is lost moves kill -> first part,
        # and where between two parts moves the gap (which counts from the last part listed).
        delay = self.rng.uniform(0.0, self.a.phase_s)
        time.sleep(delay)
        spare = [e for e in self.encoders if e["alive"]]
        run = self.running()
        if len(run) != 1:
            raise StepFailed(f"kill {k}: {len(run)} encoders report a session "
                             f"({[(e['name'], v) for e, v in run]}), expected 1")
        victim = run[0][0]
        sizes = {e["name"]: self.log_size(e) for e in self.encoders}
        ingest_log = os.path.join(self.a.scratch, "node-ingest.log")
        ingest_at = file_size(ingest_log)
        kids = descendants(victim["pid"])  # its ffmpeg encoders: do they outlive it?
        t_kill = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        victim["alive"] = False
        if victim["popen"] is not None:
            victim["popen"].wait()
            self.remember()
        # The first part after the new discontinuity.
        end = t_kill + self.a.failover_timeout
        first = None
        while first is None:
            for uri, p in fol.snapshot():
                if p["epoch"] > epoch:
                    first = (uri, p)
                    break
            if first is not None:
                break
            if time.time() > end:
                break
            time.sleep(0.01)
        t_found = time.time()
        snap = fol.snapshot()
        # The last part listed before the SIGKILL; and the killed encoder's parts listed after
        # it (stored before it died, listed once the new encoder published the playlist).
        before = [(u, p) for u, p in snap if p["t"] <= t_kill]
        last_uri, last = max(before, key=lambda x: x[1]["t"])
        old_after = [(u, p) for u, p in snap if p["epoch"] <= epoch and p["t"] > t_kill]
        pub_alive = self.publisher.poll() is None
        same_session = self.session_id() == session
        rec = {
            "k": k,
            "steady_parts_s": round(have, 2),
            "random_delay_s": r3(delay),
            "encoders_available": len(spare),
            "killed": victim["name"],
            "killed_pid": victim["pid"],
            "kill_epoch_s": round(t_kill, 4),
            "last_part_before": last_uri,
            "kill_to_last_part_before_s": r3(last["t"] - t_kill),
            "old_parts_listed_after_kill": [{"uri": u, "after_kill_s": r3(p["t"] - t_kill)}
                                            for u, p in old_after],
            "publisher_running": pub_alive,
            "same_session": same_session,
        }
        if first is None:
            rec.update({"first_part_after": None, "gap_s": None, "kill_to_first_part_s": None})
            fol_state = f"{len(snap)} parts listed, last {last_uri}"
            self.kills.append(rec)
            raise StepFailed(f"kill {k}: no part after a new discontinuity within "
                             f"{self.a.failover_timeout:g} s of the SIGKILL ({fol_state}); "
                             f"publisher running: {pub_alive}")
        uri, p = first
        # Wait a moment for the other method to list it too (its time goes in the JSON).
        time.sleep(max(0.0, 0.3 - (time.time() - t_found)))
        p = dict(fol.snapshot_of(uri))
        # What a viewer waits longest for new media: the longest time between two listings
        # from the last part before the kill to the first part after the discontinuity.
        times = sorted({last["t"], p["t"]} | {q["t"] for _, q in fol.snapshot()
                                              if last["t"] <= q["t"] <= p["t"]})
        rec.update({
            "longest_pause_s": r3(max(b - a for a, b in zip(times, times[1:]))),
            "first_part_after": uri,
            "epoch_after": p["epoch"],
            "gap_s": r3(p["t"] - last["t"]),
            "kill_to_first_part_s": r3(p["t"] - t_kill),
            "first_part_by": {m: (None if p[m] is None else r3(p[m] - t_kill))
                              for m in ("blocking", "poll")},
            "last_part_before_by": {m: (None if last[m] is None else r3(last[m] - t_kill))
                                    for m in ("blocking", "poll")},
        })
        time.sleep(0.5)
        run = self.running()
        rec["taken_over_by"] = ",".join(e["name"] for e, _ in run) or None
        left = [(pid, cmd) for pid, cmd in kids if alive_as(pid, cmd)]
        rec["victim_children"] = len(kids)
        rec["victim_children_alive_after"] = len(left)
        if left:
            self.notes.append(f"kill {k}: {len(left)} of the {len(kids)} child processes of the "
                              f"killed encoder still ran {time.time() - t_kill:.1f} s after the "
                              f"SIGKILL ({', '.join(c[:40] for _, c in left)}); killed now")
            for pid, cmd in left:
                if alive_as(pid, cmd):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        rec["encoder_started_log"] = self.started_since(sizes)
        # Where the time went, from the logs (their clock is this machine's too).
        marks = {}
        for line in new_lines(ingest_log, ingest_at):
            if "lost the live encoder" in line:
                marks.setdefault("ingest_lost_encoder", log_time(line))
            elif "stream moved to another live encoder" in line:
                marks.setdefault("ingest_moved_stream", log_time(line))
        for e in self.encoders:
            if e["name"] in rec["encoder_started_log"]:
                for line in new_lines(e["log"], sizes.get(e["name"], 0)):
                    for key, text in (("encoder_took_over", "took over a live session"),
                                      ("encoder_started", "live encoder started")):
                        if text in line:
                            marks.setdefault(key, log_time(line))
        rec["kill_to_log_s"] = {k: (None if v is None else r3(v - t_kill))
                                for k, v in marks.items()}
        if len(run) != 1:
            self.notes.append(f"kill {k}: after the failover {len(run)} encoders report a "
                              f"session ({rec['taken_over_by']})")
        if not pub_alive:
            self.notes.append(f"kill {k}: the publisher had exited (status "
                              f"{self.publisher.returncode})")
        if not same_session:
            self.notes.append(f"kill {k}: the current session changed")
        if p["epoch"] != epoch + 1:
            self.notes.append(f"kill {k}: the part after the kill is in epoch {p['epoch']}, "
                              f"not {epoch + 1}")
        # A replacement, so that two encoders are available at the next kill.
        t = time.time()
        e = self.start_encoder()
        rec["replacement"] = e["name"]
        rec["replacement_healthz_s"] = r3(time.time() - t)
        self.kills.append(rec)
        return p["epoch"], e

    # ------------------------------------------------------------------ run
    def run(self):
        self.kills, baselines = [], []
        result = {"stream_id": self.a.stream, "baselines": baselines, "kills": self.kills}
        err = None
        fol = None
        try:
            self.wait_registered(self.encoders)
            path = None
            for i in range(1, self.a.baselines + 1):
                self.check_time("baseline")
                self.counts.phase = "baseline"
                rec, path = self.baseline_once(i, keep=(i == self.a.baselines))
                baselines.append(rec)
                started = rec["publish_to_log_s"].get("encoder_started")
                print(f"   baseline {i}: publish -> first part listed "
                      f"{rec['publish_to_first_part_s']:.3f} s (encoder {rec['encoder']} started "
                      f"at {'n/a' if started is None else format(started, '.3f')} s)", flush=True)
            session = self.session_id()
            if session is None:
                raise StepFailed("no current session after the last baseline publish")
            result["session"] = session
            result["variant"] = path
            self.counts.phase = "failover"
            fol = Follower(self.a.api, self.token, path, self.a.poll_ms / 1000.0, self.counts)
            fol.start()
            epoch = 0
            snap = []
            end = time.time() + 10
            while not snap and time.time() < end:
                time.sleep(0.1)
                snap = fol.snapshot()
            if snap:
                epoch = max(p["epoch"] for _, p in snap)
            pending = None  # the last replacement: registered before the next kill
            for k in range(1, self.a.kills + 1):
                self.check_time(f"kill {k}")
                if pending is not None:
                    self.wait_registered([pending])
                epoch, pending = self.failover(fol, k, epoch, session)
                rec = self.kills[-1]
                print(f"   kill {k}: {rec['killed']} -> {rec['taken_over_by']}: gap "
                      f"{rec['gap_s']:.3f} s, kill -> first part {rec['kill_to_first_part_s']:.3f} s,"
                      f" publisher {'running' if rec['publisher_running'] else 'EXITED'}",
                      flush=True)
            # A last look: the stream carries on after the last failover.
            self.wait_steady(fol, epoch, "after the last")
            result["publisher_running_at_end"] = self.publisher.poll() is None
        except StepFailed as e:
            err = str(e)
        finally:
            self.finishing = True  # a SIGTERM now changes nothing: all is stopped below
            if fol is not None:
                fol.close()
                result["parts_listed"] = len(fol.parts)
                result["answers"] = dict(fol.answers)
                result["part_fetches"] = {k: fol.fetched[k] for k in ("ok", "failed")}
                result["part_fetch_failures"] = fol.fetched["failures"][:50]
                snap = fol.snapshot()
                for rec in self.kills:
                    ep = rec.get("epoch_after")
                    new = [p for _, p in snap if p["epoch"] == ep]
                    if new:
                        t1 = min(p["t"] for p in new)
                        rec["new_media_listed_within_1s_s"] = round(
                            sum(p["dur"] for p in new if p["t"] <= t1 + 1.0), 3)
                result["parts"] = [
                    {"uri": u, "epoch": p["epoch"], "t_s": round(p["t"], 4),
                     "blocking_s": None if p["blocking"] is None else round(p["blocking"], 4),
                     "poll_s": None if p["poll"] is None else round(p["poll"], 4)}
                    for u, p in fol.snapshot()]
        result["error"] = err
        result["non_200"] = dict(sorted(self.counts.by.items()))
        result["non_200_failover"] = self.counts.total("failover")
        result["master_named_ended_session"] = self.master_ended
        result["notes"] = self.notes
        result["summary"] = summarize(result, self.a)
        meta = json.loads(self.a.meta) if self.a.meta else {}
        out = dict(meta)
        out["result"] = result
        with open(self.a.out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print_summary(meta, result)
        sys.stdout.flush()
        # After the results are out: the script's cleanup gives a stopped driver 5 s.
        self.stop_children()
        self.api.close()
        if err:
            print(f"live_failover: {err}", file=sys.stderr)
            return 1
        bad = [r["k"] for r in self.kills if not r["publisher_running"]]
        if bad:
            print(f"live_failover: the publisher did not stay connected through kill(s) {bad}",
                  file=sys.stderr)
            return 1
        return 0


LOG_TIME = re.compile(r"^(?:\x1b\[[0-9;]*m)*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def new_lines(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def log_time(line):
    """Epoch seconds of a tracing line's UTC timestamp, or None."""
    import calendar
    m = LOG_TIME.match(line)
    if not m:
        return None
    whole, _, frac = m.group(1).partition(".")
    t = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def descendants(pid):
    """[(pid, command line)] of every process under `pid`, from /proc."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                parent[int(d)] = int(st[st.rfind(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p:
                out.append((c, cmdline(c)))
                todo.append(c)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def alive_as(pid, cmd):
    """Whether `pid` still runs `cmd` (not a zombie, not a reused number)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(")") + 2:].split()[0] != "Z" and cmdline(pid) == cmd


def free_ports(n):
    import socket
    held = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def summarize(r, a):
    kills = [k for k in r["kills"] if k.get("gap_s") is not None]
    gaps = [k["gap_s"] for k in kills]
    k2f = [k["kill_to_first_part_s"] for k in kills]
    base = [b["publish_to_first_part_s"] for b in r["baselines"]]
    b50 = pct(base, 0.5)
    g50 = pct(gaps, 0.5)
    k50 = pct(k2f, 0.5)
    pauses = [k["longest_pause_s"] for k in kills if k.get("longest_pause_s") is not None]
    return {
        "longest_pause_ms": {"p50": ms(pct(pauses, 0.5)), "max": ms(max(pauses)) if pauses else None},
        "old_parts_listed_after_kill": sum(len(k.get("old_parts_listed_after_kill") or [])
                                           for k in r["kills"]),
        "kills_requested": a.kills,
        "kills_measured": len(kills),
        "gap_ms": {"p50": ms(g50), "max": ms(max(gaps)) if gaps else None},
        "kill_to_first_part_ms": {"p50": ms(k50), "max": ms(max(k2f)) if k2f else None},
        "baseline_ms": {"n": len(base), "p50": ms(b50), "min": ms(min(base)) if base else None,
                        "max": ms(max(base)) if base else None},
        "ratio_gap_over_baseline_p50": None if not g50 or not b50 else round(g50 / b50, 2),
        "ratio_kill_to_first_over_baseline_p50": None if not k50 or not b50 else round(k50 / b50, 2),
        "publisher_stayed_connected": sum(1 for k in r["kills"] if k.get("publisher_running")),
        "same_session": sum(1 for k in r["kills"] if k.get("same_session")),
        "non_200_failover": r["non_200_failover"],
    }


def fmt(v):
    return "n/a" if v is None else f"{v:.0f}"


def print_summary(meta, r):
    s = r["summary"]
    print()
    print(f"== summary: {meta.get('size', '?')} @{meta.get('fps', '?')} fps, rungs "
          f"{meta.get('rungs', '?')}, nproc {meta.get('nproc', '?')}; variant "
          f"{r.get('variant', '?')} ==")
    if r["baselines"]:
        print("baseline (fresh publish -> first part listed on the api node): "
              + ", ".join(f"{b['publish_to_first_part_s'] * 1000:.0f}" for b in r["baselines"])
              + " ms")
    if r["kills"]:
        print(f"{'kill':>4}  {'killed':<7} {'took over':<9} {'last old part':>13} "
              f"{'ingest lost':>11} {'enc started':>11} "
              f"{'first new part':>14} {'gap':>7} {'pause':>6}  publisher  session")
        for k in r["kills"]:
            def t(v):
                return "n/a" if v is None else f"{v * 1000:+.0f}"
            logs = k.get("kill_to_log_s") or {}
            print(f"{k['k']:>4}  {k['killed']:<7} {str(k.get('taken_over_by')):<9} "
                  f"{t(k['kill_to_last_part_before_s']):>13} "
                  f"{t(logs.get('ingest_lost_encoder')):>11} "
                  f"{t(logs.get('encoder_started')):>11} "
                  f"{t(k.get('kill_to_first_part_s')):>14} "
                  f"{'n/a' if k.get('gap_s') is None else format(k['gap_s'] * 1000, '.0f'):>7} "
                  f"{'n/a' if k.get('longest_pause_s') is None else format(k['longest_pause_s'] * 1000, '.0f'):>6}  "
                  f"{'running' if k['publisher_running'] else 'EXITED':<9}  "
                  f"{'same' if k['same_session'] else 'CHANGED'}")
        print("   (ms after the SIGKILL: the last part listed on the api node before it, the "
              "ingest's 'lost the live encoder' and the new encoder's 'live encoder started' log "
              "lines, the first part after the new discontinuity listed on the api node; gap = "
              "first new part - last part before the kill; pause = the longest time between two "
              "listings in that gap, shorter when parts of the killed encoder are listed after "
              "the kill)")
        late = [(k["k"], x) for k in r["kills"] for x in (k.get("old_parts_listed_after_kill") or [])]
        if late:
            print("   parts of the killed encoder listed after the kill: " + ", ".join(
                f"kill {n}: {x['uri']} at +{x['after_kill_s'] * 1000:.0f} ms" for n, x in late))
    print()
    ratio = s["ratio_gap_over_baseline_p50"]
    hdr = ("| n | gap p50 / max ms | kill->first part p50 / max ms | longest pause p50 / max ms "
           "| baseline p50 ms (n) | gap/baseline | publisher stayed connected | non-200 |")
    print(hdr)
    print("|" + "---|" * 8)
    print(f"| {s['kills_measured']} | {fmt(s['gap_ms']['p50'])} / {fmt(s['gap_ms']['max'])} "
          f"| {fmt(s['kill_to_first_part_ms']['p50'])} / {fmt(s['kill_to_first_part_ms']['max'])} "
          f"| {fmt(s['longest_pause_ms']['p50'])} / {fmt(s['longest_pause_ms']['max'])} "
          f"| {fmt(s['baseline_ms']['p50'])} ({s['baseline_ms']['n']}) "
          f"| {'n/a' if ratio is None else f'{ratio:.2f}x'} "
          f"| {s['publisher_stayed_connected']} of {len(r['kills'])} "
          f"| {s['non_200_failover']} |")
    print()
    n200 = r["non_200"]
    if n200:
        print("non-200 answers (phase, request, status): "
              + ", ".join(f"{k}: {v}" for k, v in n200.items()))
    if r.get("master_named_ended_session"):
        print(f"master.m3u8 answers still naming the previous, ended session after a fresh "
              f"publish (retried): {r['master_named_ended_session']}")
    if "part_fetches" in r:
        f = r["part_fetches"]
        print(f"parts listed on the api node ({r.get('parts_listed')}), each fetched once: "
              f"{f['ok']} ok, {f['failed']} failed")
        for x in r.get("part_fetch_failures", [])[:5]:
            print(f"   {x['uri']}: HTTP {x['status']} {x['body']!r}")
    if "answers" in r:
        print(f"playlist answers read: {r['answers']['blocking']} blocking reloads, "
              f"{r['answers']['poll']} polls")
    for n in r["notes"]:
        print(f"note: {n}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--api", required=True, help="base URL of the api node")
    p.add_argument("--stream", required=True)
    p.add_argument("--scratch", required=True)
    p.add_argument("--node-launcher", required=True,
                   help="script: NAME ROLES HTTP RTMP SRT RELAY -> execs an oxcast node")
    p.add_argument("--publish-launcher", required=True, help="script that execs the publisher")
    p.add_argument("--encoder", action="append", default=[],
                   help="NAME,PID,HTTP_PORT,RELAY_PORT of a running live encoder (repeat)")
    p.add_argument("--pids-file", required=True,
                   help="every process started here is appended to it (the script's cleanup)")
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--baselines", type=int, default=3)
    p.add_argument("--steady-s", type=float, default=4.0)
    p.add_argument("--grace-s", type=float, default=10.0)
    p.add_argument("--poll-ms", type=float, default=30.0)
    p.add_argument("--phase-s", type=float, default=2.0,
                   help="a kill comes a random 0..phase-s after steady (default: live.segment_s)")
    p.add_argument("--seed", type=int, default=1, help="seed of those random delays")
    p.add_argument("--failover-timeout", type=float, default=20.0)
    p.add_argument("--max-s", type=float, default=600.0)
    p.add_argument("--psql", default="")
    p.add_argument("--db-url", default="")
    p.add_argument("--token", default="")
    p.add_argument("--meta")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    bench = Bench(args)
    # The script's cleanup sends TERM: the results so far are written, then what was started
    # here is stopped.
    def terminated(*_):
        if not bench.finishing:
            bench.finishing = True
            raise StepFailed("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, terminated)
    return bench.run()


if __name__ == "__main__":
    sys.exit(main())
