//! LL-HLS live fan-out load client: N concurrent viewers of one live rendition, each holding a
//! blocking playlist reload (`index.m3u8?_HLS_msn=M&_HLS_part=P`) for the next part on its own
//! keep-alive connection, and how long after a part appears each of them has it.
//!
//! ```text
//! live_fanout --url http://127.0.0.1:PORT/live/STREAM/SESSION/RENDITION/index.m3u8 \
//!             --clients N --seconds S [--ramp-rate R] [--grace-s G] [--timeout-s T]
//!             [--threads T] [--server-pid PID] [--publisher-pid PID]
//! ```
//!
//! Each client: one connection; a plain GET of the playlist, whose
//! `#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-M-P.m4s"` names the next part; then, in a loop, a
//! GET of `?_HLS_msn=M&_HLS_part=P`, noting the instant the response is complete for every part
//! the answer lists that this client had not seen yet (normally just (M,P); more when it fell
//! behind), and the answer's new preload hint. Connections are opened at `--ramp-rate` per
//! second; counting starts once every client has its first hint, and covers the parts from the
//! newest first hint on whose first completion falls within the next `--seconds`. The run goes
//! on `--grace-s` longer so the last of them can reach every client.
//!
//! The instant a part is published is not visible to a client: it is taken as the earliest
//! completion of that part across all clients (the first waiter is woken when it is published).
//! The delay of a (client, part) pair is its completion minus that earliest one.
//!
//! With `--server-pid`, the server's RSS (/proc/PID/status VmRSS) is read before the first
//! connection and every 250 ms while all clients wait, and its CPU time (/proc/PID/stat
//! utime+stime; its children, the live encoder, separately) over the counted window.
//!
//! Prints a table, then one JSON line (the last line of stdout).

mod http;
mod playlist;
mod procfs;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use playlist::PartKey;

const MAX_CLIENTS: usize = 20_000;
const MAX_SECONDS: u64 = 300;
const RSS_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
struct Args {
    url: String,
    clients: usize,
    seconds: u64,
    ramp_rate: f64,
    grace_s: f64,
    timeout_s: f64,
    threads: usize,
    server_pid: Option<u32>,
    publisher_pid: Option<u32>,
}

const USAGE: &str =
    "usage: live_fanout --url http://127.0.0.1:PORT/live/STREAM/SESSION/RENDITION/index.m3u8 \
--clients N --seconds S [--ramp-rate R (2000/s)] [--grace-s G (5)] [--timeout-s T (10)] \
[--threads T (1)] [--server-pid PID] [--publisher-pid PID]";

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        clients: 0,
        seconds: 0,
        ramp_rate: 2000.0,
        grace_s: 5.0,
        timeout_s: 10.0,
        threads: 1,
        server_pid: None,
        publisher_pid: None,
    };
    let mut i = 0;
    while i < argv.len() {
        let (flag, inline) = match argv[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (argv[i].clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                argv.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))?
            }
        };
        let bad = |what: &str| format!("{flag}: {what}, got {value:?}");
        match flag.as_str() {
            "--url" => a.url = value.clone(),
            "--clients" => a.clients = value.parse().map_err(|_| bad("a whole number"))?,
            "--seconds" => a.seconds = value.parse().map_err(|_| bad("whole seconds"))?,
            "--ramp-rate" => a.ramp_rate = value.parse().map_err(|_| bad("a number"))?,
            "--grace-s" => a.grace_s = value.parse().map_err(|_| bad("a number"))?,
            "--timeout-s" => a.timeout_s = value.parse().map_err(|_| bad("a number"))?,
            "--threads" => a.threads = value.parse().map_err(|_| bad("a whole number"))?,
            "--server-pid" => a.server_pid = Some(value.parse().map_err(|_| bad("a pid"))?),
            "--publisher-pid" => a.publisher_pid = Some(value.parse().map_err(|_| bad("a pid"))?),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
        i += 1;
    }
    if a.url.is_empty() {
        return Err(format!("--url is required\n{USAGE}"));
    }
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if a.seconds == 0 || a.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    if !(1.0..=100_000.0).contains(&a.ramp_rate) {
        return Err("--ramp-rate must be 1..=100000 connections per second".into());
    }
    if !(0.0..=60.0).contains(&a.grace_s) {
        return Err("--grace-s must be 0..=60".into());
    }
    if !(0.5..=60.0).contains(&a.timeout_s) {
        return Err("--timeout-s must be 0.5..=60".into());
    }
    if a.threads == 0 || a.threads > 16 {
        return Err("--threads must be 1..=16".into());
    }
    Ok(a)
}

/// Where the clients go: a loopback address, the Host header, the playlist path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("--url must start with http:// (no TLS)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if !path.ends_with(".m3u8") {
        return Err("--url must name a media playlist (…/index.m3u8)".into());
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, p) = r.split_once(']').ok_or("bad [IPv6] host in --url")?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in --url: {p:?}"))?,
        None => 80,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("--url host must be a loopback IP or localhost, got {host:?}"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--url host {ip} is not a loopback address: this load client only targets this machine"
        ));
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        host: authority.to_string(),
        path: path.to_string(),
    })
}

/// What every client task shares.
struct Shared {
    target: Target,
    timeout: Duration,
    /// Instants are stored as microseconds since this.
    t0: Instant,
    /// A client that has no first hint by then gives up.
    initial_deadline: Instant,
}

impl Shared {
    fn us(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.t0)
            .as_micros()
            .min(u32::MAX as u128) as u32
    }
}

enum Event {
    Ready { hint: PartKey },
    Failed,
}

#[derive(Default)]
struct ClientOut {
    /// (part, µs since t0 its answer was complete), first sighting only.
    records: Vec<(PartKey, u32)>,
    errors: Vec<(String, u64)>,
    requests: u64,
    body_bytes: u64,
    /// Answers that listed more than one part new to the client: it had fallen behind.
    late: u64,
    connects: u64,
    ready: bool,
}

impl ClientOut {
    fn error(&mut self, kind: &str) {
        match self.errors.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((kind.to_string(), 1)),
        }
    }
}

/// Sleeps, unless told to stop first; true when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let slept = tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    };
    !slept || *stop.borrow()
}

enum Step {
    Stopped,
    Answer(http::Head),
    Failed(&'static str),
}

/// One GET on `conn` (connecting first if needed), bounded by the timeout and the stop signal.
async fn request(
    sh: &Shared,
    conn: &mut Option<http::Conn>,
    target: &str,
    out: &mut ClientOut,
    stop: &mut watch::Receiver<bool>,
) -> Step {
    if conn.is_none() {
        let r = tokio::select! {
            r = tokio::time::timeout(sh.timeout, http::Conn::connect(sh.target.addr, &sh.target.host)) => r,
            _ = stop.wait_for(|s| *s) => return Step::Stopped,
        };
        out.connects += 1;
        match r {
            Ok(Ok(c)) => *conn = Some(c),
            Ok(Err(_)) => return Step::Failed("connect"),
            Err(_) => return Step::Failed("connect_timeout"),
        }
    }
    let c = conn.as_mut().expect("connected above");
    let r = tokio::select! {
        r = tokio::time::timeout(sh.timeout, c.get(target)) => r,
        _ = stop.wait_for(|s| *s) => return Step::Stopped,
    };
    out.requests += 1;
    match r {
        Ok(Ok(head)) => Step::Answer(head),
        Ok(Err(e)) => {
            *conn = None;
            Step::Failed(e.kind())
        }
        Err(_) => {
            *conn = None;
            Step::Failed("timeout")
        }
    }
}

async fn client(
    sh: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) -> ClientOut {
    let mut out = ClientOut::default();
    let mut conn: Option<http::Conn> = None;
    // The newest part this client knows exists (set by the first playlist).
    let mut last_seen: Option<PartKey>;
    let plain = sh.target.path.clone();
    let mut target = String::with_capacity(plain.len() + 40);

    // First hint: a plain playlist GET, retried until the initial deadline.
    let mut hint = loop {
        if *stop.borrow() || Instant::now() > sh.initial_deadline {
            let _ = events.send(Event::Failed);
            return out;
        }
        match request(&sh, &mut conn, &plain, &mut out, &mut stop).await {
            Step::Stopped => {
                let _ = events.send(Event::Failed);
                return out;
            }
            Step::Answer(head) if head.status == 200 => {
                let c = conn.as_ref().expect("answered");
                out.body_bytes += c.body.len() as u64;
                let s = playlist::scan(&c.body, |_| {});
                if head.close {
                    conn = None;
                }
                if let Some(h) = s.hint {
                    last_seen = s.max_listed;
                    break h;
                }
                out.error(if s.ended { "ended" } else { "no_hint" });
            }
            Step::Answer(head) => {
                out.error(&format!("http_{}", head.status));
                if head.close {
                    conn = None;
                }
            }
            Step::Failed(kind) => out.error(kind),
        }
        if pause(Duration::from_secs(1), &mut stop).await {
            let _ = events.send(Event::Failed);
            return out;
        }
    };
    out.ready = true;
    let _ = events.send(Event::Ready { hint });

    // Blocking reloads for the hinted part; `resync`: a plain GET first (after an error answer).
    let mut resync = false;
    loop {
        if *stop.borrow() {
            break;
        }
        target.clear();
        if resync {
            target.push_str(&plain);
        } else {
            let (m, p) = playlist::msn_part(hint);
            use std::fmt::Write;
            let _ = write!(target, "{plain}?_HLS_msn={m}&_HLS_part={p}");
        }
        let wait = match request(&sh, &mut conn, &target, &mut out, &mut stop).await {
            Step::Stopped => break,
            Step::Failed(kind) => {
                out.error(kind);
                Duration::from_millis(if kind.starts_with("connect") {
                    1000
                } else {
                    100
                })
            }
            Step::Answer(head) if head.status == 200 => {
                let t = sh.us(Instant::now());
                let c = conn.as_ref().expect("answered");
                out.body_bytes += c.body.len() as u64;
                let mut new = 0u32;
                let records = &mut out.records;
                let s = playlist::scan(&c.body, |k| {
                    if last_seen.is_none_or(|l| k > l) {
                        records.push((k, t));
                        last_seen = Some(k);
                        new += 1;
                    }
                });
                if head.close {
                    conn = None;
                }
                if new > 1 {
                    out.late += 1;
                }
                if s.ended {
                    out.error("ended");
                    break;
                }
                match s.hint {
                    Some(h) => {
                        hint = h;
                        let was_resync = std::mem::replace(&mut resync, false);
                        if new == 0 && !was_resync {
                            // Answered without the part it was held for (no publisher?):
                            // don't spin.
                            out.error("no_new_part");
                            Duration::from_millis(200)
                        } else {
                            Duration::ZERO
                        }
                    }
                    None => {
                        out.error("no_hint");
                        resync = true;
                        Duration::from_secs(1)
                    }
                }
            }
            Step::Answer(head) => {
                out.error(&format!("http_{}", head.status));
                if head.close {
                    conn = None;
                }
                if head.status == 503 {
                    // The server caps held requests: retry the same part as told.
                    Duration::from_secs(head.retry_after_s.unwrap_or(1).clamp(1, 10))
                } else {
                    resync = true;
                    Duration::from_secs(1)
                }
            }
        };
        if !wait.is_zero() && pause(wait, &mut stop).await {
            break;
        }
    }
    out
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|u| f64::from(u) / 1000.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// Just enough JSON.
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Int(u64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    fn opt_f(v: Option<f64>) -> J {
        v.map_or(J::Null, J::Num)
    }
    fn opt_i(v: Option<u64>) -> J {
        v.map_or(J::Null, J::Int)
    }
    fn write(&self, o: &mut String) {
        match self {
            J::Null => o.push_str("null"),
            J::Bool(b) => o.push_str(if *b { "true" } else { "false" }),
            J::Num(n) if n.is_finite() => o.push_str(&format!("{}", (n * 1000.0).round() / 1000.0)),
            J::Num(_) => o.push_str("null"),
            J::Int(i) => o.push_str(&i.to_string()),
            J::Str(s) => {
                o.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => o.push_str("\\\""),
                        '\\' => o.push_str("\\\\"),
                        c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                        c => o.push(c),
                    }
                }
                o.push('"');
            }
            J::Arr(v) => {
                o.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    x.write(o);
                }
                o.push(']');
            }
            J::Obj(v) => {
                o.push('{');
                for (i, (k, x)) in v.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    J::Str((*k).to_string()).write(o);
                    o.push(':');
                    x.write(o);
                }
                o.push('}');
            }
        }
    }
}

/// A reading of the processes being watched.
#[derive(Default, Clone)]
struct Cpu {
    machine: Option<procfs::Machine>,
    server_threads: HashMap<u32, (String, u64)>,
    server_ticks: Option<u64>,
    children: HashMap<u32, u64>,
    publisher_ticks: Option<u64>,
    self_s: f64,
}

fn read_cpu(a: &Args) -> Cpu {
    Cpu {
        machine: procfs::machine(),
        server_threads: a.server_pid.map(procfs::thread_ticks).unwrap_or_default(),
        server_ticks: a.server_pid.and_then(procfs::stat).map(|s| s.ticks),
        children: a
            .server_pid
            .map(procfs::descendant_ticks)
            .unwrap_or_default(),
        publisher_ticks: a.publisher_pid.and_then(procfs::stat).map(|s| s.ticks),
        self_s: procfs::self_cpu_s(),
    }
}

async fn run(a: Args, target: Target, nofile: u64) -> J {
    let n = a.clients;
    let t0 = Instant::now();
    let ramp = Duration::from_secs_f64(n as f64 / a.ramp_rate);
    let timeout = Duration::from_secs_f64(a.timeout_s);
    let sh = Arc::new(Shared {
        target: target.clone(),
        timeout,
        t0,
        initial_deadline: t0 + ramp + timeout + Duration::from_secs(10),
    });
    let rss_before = a.server_pid.and_then(procfs::rss_kib);

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(n);
    eprintln!(
        "live_fanout: {n} clients -> {} (ramp {:.1} s at {}/s)",
        target.addr,
        ramp.as_secs_f64(),
        a.ramp_rate
    );
    let (mut ready, mut failed) = (0usize, 0usize);
    let mut k0: Option<PartKey> = None;
    let mut take = |e: Event, ready: &mut usize, failed: &mut usize| match e {
        Event::Ready { hint } => {
            *ready += 1;
            k0 = Some(k0.map_or(hint, |k| k.max(hint)));
        }
        Event::Failed => *failed += 1,
    };
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / a.ramp_rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        handles.push(tokio::spawn(client(
            sh.clone(),
            ev_tx.clone(),
            stop_rx.clone(),
        )));
        while let Ok(e) = ev_rx.try_recv() {
            take(e, &mut ready, &mut failed);
        }
    }
    drop(ev_tx);
    let ramp_done = t0.elapsed();
    let all_deadline = sh.initial_deadline + Duration::from_secs(2);
    while ready + failed < n {
        match tokio::time::timeout_at(all_deadline, ev_rx.recv()).await {
            Ok(Some(e)) => take(e, &mut ready, &mut failed),
            _ => break,
        }
    }
    let t_all = Instant::now();
    let all_after = t_all - t0;
    eprintln!(
        "live_fanout: ramp done in {:.2} s; {ready} of {n} clients waiting after {:.2} s ({failed} failed); counting {} s",
        ramp_done.as_secs_f64(),
        all_after.as_secs_f64(),
        a.seconds
    );

    // The counted window: every client holds a request (or is about to re-ask).
    let cpu_start = read_cpu(&a);
    let rss_connected = a.server_pid.and_then(procfs::rss_kib);
    let t_end = t_all + Duration::from_secs(a.seconds);
    let mut rss_samples: Vec<u64> = Vec::new();
    let mut self_rss_max = 0u64;
    let mut next = t_all;
    while next < t_end {
        if let Some(r) = a.server_pid.and_then(procfs::rss_kib) {
            rss_samples.push(r);
        }
        next += RSS_EVERY;
        tokio::time::sleep_until(next.min(t_end)).await;
    }
    let cpu_end = read_cpu(&a);
    if let Some(r) = procfs::rss_kib(std::process::id()) {
        self_rss_max = self_rss_max.max(r);
    }
    let window_s = (Instant::now() - t_all).as_secs_f64();

    tokio::time::sleep(Duration::from_secs_f64(a.grace_s)).await;
    let _ = stop_tx.send(true);
    let mut outs = Vec::with_capacity(n);
    for h in handles {
        if let Ok(o) = h.await {
            outs.push(o);
        }
    }
    let total_s = t0.elapsed().as_secs_f64();

    // ------------------------------------------------------------------ statistics
    let end_us = sh.us(t_end);
    let k0 = k0.unwrap_or(u64::MAX);
    let mut by_part: HashMap<PartKey, Vec<u32>> = HashMap::new();
    let mut errors: Vec<(String, u64)> = Vec::new();
    let (mut requests, mut bytes, mut late, mut connects) = (0u64, 0u64, 0u64, 0u64);
    for o in &outs {
        for &(k, t) in &o.records {
            if k >= k0 {
                by_part.entry(k).or_default().push(t);
            }
        }
        for (kind, c) in &o.errors {
            match errors.iter_mut().find(|(k, _)| k == kind) {
                Some((_, x)) => *x += c,
                None => errors.push((kind.clone(), *c)),
            }
        }
        requests += o.requests;
        bytes += o.body_bytes;
        late += o.late;
        connects += o.connects;
    }
    errors.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let mut parts: Vec<(PartKey, Vec<u32>)> = by_part
        .into_iter()
        .filter(|(_, v)| v.iter().min().is_some_and(|&e| e <= end_us))
        .collect();
    parts.sort_by_key(|(k, _)| *k);
    let mut delays: Vec<u32> = Vec::new();
    let mut spreads: Vec<u32> = Vec::new();
    let mut reached_all = 0usize;
    let mut min_reached = usize::MAX;
    let mut per_part = Vec::new();
    for (k, v) in &parts {
        let earliest = *v.iter().min().expect("non-empty");
        let latest = *v.iter().max().expect("non-empty");
        delays.extend(v.iter().map(|t| t - earliest));
        spreads.push(latest - earliest);
        if v.len() >= n {
            reached_all += 1;
        }
        min_reached = min_reached.min(v.len());
        let (m, p) = playlist::msn_part(*k);
        per_part.push(J::Obj(vec![
            ("part", J::Str(format!("{m}.{p}"))),
            (
                "first_s",
                J::Num(f64::from(earliest) / 1e6 - all_after.as_secs_f64()),
            ),
            ("clients", J::Int(v.len() as u64)),
            ("spread_ms", J::Num(f64::from(latest - earliest) / 1000.0)),
        ]));
    }
    delays.sort_unstable();
    spreads.sort_unstable();
    let counted = parts.len();
    let min_reached = if counted == 0 { 0 } else { min_reached };
    let (d50, d99, dmax) = (
        ms(pct(&delays, 0.5)),
        ms(pct(&delays, 0.99)),
        ms(delays.last().copied()),
    );
    let (s50, smax) = (ms(pct(&spreads, 0.5)), ms(spreads.last().copied()));

    let tck = procfs::clk_tck();
    let pct_of = |cpu_s: Option<f64>| cpu_s.map(|c| 100.0 * c / window_s);
    let server_cpu_s = match (cpu_start.server_ticks, cpu_end.server_ticks) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / tck),
        _ => None,
    };
    let children_cpu_s = a
        .server_pid
        .map(|_| procfs::descendant_cpu_s(&cpu_start.children, &cpu_end.children));
    let publisher_cpu_s = match (cpu_start.publisher_ticks, cpu_end.publisher_ticks) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / tck),
        _ => None,
    };
    let client_cpu_s = cpu_end.self_s - cpu_start.self_s;
    // The whole machine over the window, as % of one core (so up to nproc × 100).
    let machine = match (cpu_start.machine, cpu_end.machine) {
        (Some(x), Some(y)) => Some(y.since(&x)),
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get()) as f64;
    let mpct = |t: u64, m: &procfs::Machine| {
        if m.total == 0 {
            0.0
        } else {
            100.0 * cores * t as f64 / m.total as f64
        }
    };
    // Server threads by name (tokio's workers share one), busiest first.
    let mut threads: Vec<(String, u32, f64)> = Vec::new();
    for (tid, (name, t1)) in &cpu_end.server_threads {
        let t0 = cpu_start.server_threads.get(tid).map_or(0, |x| x.1);
        let s = t1.saturating_sub(t0) as f64 / tck;
        match threads.iter_mut().find(|(n, _, _)| n == name) {
            Some(e) => {
                e.1 += 1;
                e.2 += s;
            }
            None => threads.push((name.clone(), 1, s)),
        }
    }
    threads.sort_by(|x, y| y.2.total_cmp(&x.2));
    let busiest_thread = cpu_end
        .server_threads
        .iter()
        .map(|(tid, (_, t1))| {
            t1.saturating_sub(cpu_start.server_threads.get(tid).map_or(0, |x| x.1))
        })
        .max()
        .map(|t| 100.0 * t as f64 / tck / window_s);
    let mut sorted_rss = rss_samples.clone();
    sorted_rss.sort_unstable();
    let rss_max = sorted_rss.last().copied();
    let rss_median = sorted_rss
        .get(sorted_rss.len().saturating_sub(1) / 2)
        .copied();
    let per_client_kib = match (rss_before, rss_max) {
        (Some(b), Some(m)) => Some(m.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    let per_client_connected_kib = match (rss_before, rss_connected) {
        (Some(b), Some(c)) => Some(c.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    let nproc = std::thread::available_parallelism().map_or(0, |p| p.get());

    // ------------------------------------------------------------------ table
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let cpu = |s: Option<f64>| match (s, pct_of(s)) {
        (Some(s), Some(p)) => format!("{p:.0}% of a core ({s:.1} s)"),
        _ => "-".into(),
    };
    let (first_m, first_p) = playlist::msn_part(k0.min(u64::MAX >> 1));
    println!();
    println!("== live fan-out: {n} clients, {} s counted ==", a.seconds);
    println!("url                  {}", a.url);
    println!(
        "clients waiting      {ready} of {n} ({failed} failed to get a first playlist); ramp {:.1} s at {}/s, all waiting {:.2} s after the first connect",
        ramp_done.as_secs_f64(),
        a.ramp_rate,
        all_after.as_secs_f64()
    );
    println!(
        "parts                {reached_all} of {counted} parts reached all clients (from part {first_m}.{first_p}; fewest clients for a part: {min_reached})"
    );
    println!(
        "delay p50/p99/max    {} / {} / {} ms   (response complete − earliest completion of that part)",
        fmt_ms(d50),
        fmt_ms(d99),
        fmt_ms(dmax)
    );
    println!(
        "last client got it   p50 {} ms, max {} ms after the first (per part)",
        fmt_ms(s50),
        fmt_ms(smax)
    );
    println!(
        "requests             {requests} ({:.0}/s), {:.1} MiB of playlist bodies, {late} answers behind by more than a part, {connects} connects",
        requests as f64 / total_s,
        bytes as f64 / (1 << 20) as f64
    );
    let err_text = if errors.is_empty() {
        "none".to_string()
    } else {
        errors
            .iter()
            .map(|(k, c)| format!("{k} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("errors               {err_text}");
    if a.server_pid.is_some() {
        let kib = |k: Option<f64>| k.map_or("-".into(), |k| format!("{k:.1} KiB"));
        println!(
            "server RSS           before {} → all connected {} → waiting {} (max; median {})",
            mib(rss_before),
            mib(rss_connected),
            mib(rss_max),
            mib(rss_median),
        );
        println!(
            "RSS per client       {} (waiting max − before; goal ≤ 30 KiB), {} when all had connected",
            kib(per_client_kib),
            kib(per_client_connected_kib)
        );
        println!("server CPU           {}", cpu(server_cpu_s));
        let by_name: Vec<String> = threads
            .iter()
            .filter(|t| t.2 > 0.0)
            .take(6)
            .map(|(n, k, s)| format!("{n} ×{k} {:.0}%", 100.0 * s / window_s))
            .collect();
        println!(
            "server threads       {} (busiest single thread {}%)",
            if by_name.is_empty() {
                "-".into()
            } else {
                by_name.join(", ")
            },
            busiest_thread.map_or("-".into(), |b| format!("{b:.0}"))
        );
        println!(
            "live encoder CPU     {}  (the server's child processes)",
            cpu(children_cpu_s)
        );
    }
    if a.publisher_pid.is_some() {
        println!("publisher CPU        {}", cpu(publisher_cpu_s));
    }
    println!(
        "client CPU           {}, RSS {}, {} runtime thread(s), descriptor limit {nofile}",
        cpu(Some(client_cpu_s)),
        mib(Some(self_rss_max)),
        a.threads
    );
    // Machine time not spent by the watched processes: other processes, and kernel work not
    // charged to any of them (softirq). Other load on the machine shows here.
    let known = [
        server_cpu_s,
        children_cpu_s,
        publisher_cpu_s,
        Some(client_cpu_s),
    ]
    .iter()
    .flatten()
    .sum::<f64>();
    let other_pct = machine
        .as_ref()
        .map(|m| (mpct(m.total - m.idle, m) - 100.0 * known / window_s).max(0.0));
    if let Some(m) = &machine {
        println!(
            "machine CPU          {:.0}% busy of {:.0}% ({} cores): user {:.0}%, system {:.0}%, irq+softirq {:.0}%, steal {:.0}%, idle {:.0}%",
            mpct(m.total - m.idle, m),
            cores * 100.0,
            cores,
            mpct(m.user, m),
            mpct(m.system, m),
            mpct(m.irq, m),
            mpct(m.steal, m),
            mpct(m.idle, m)
        );
        println!(
            "other CPU            {:.0}% of a core: machine busy minus the processes above (other processes, unattributed kernel work)",
            other_pct.unwrap_or(0.0)
        );
    }
    println!(
        "note: a part's publish time is approximated by its earliest completion across all clients \
(the first waiter is woken when it is published); the server, its encoder, the publisher and \
this client share {nproc} cores."
    );

    let mut err_obj = Vec::new();
    for (k, c) in &errors {
        err_obj.push(J::Arr(vec![J::Str(k.clone()), J::Int(*c)]));
    }
    J::Obj(vec![
        ("clients", J::Int(n as u64)),
        ("seconds", J::Int(a.seconds)),
        ("url", J::Str(a.url.clone())),
        ("ramp_rate", J::Num(a.ramp_rate)),
        ("ramp_s", J::Num(ramp_done.as_secs_f64())),
        ("all_waiting_after_s", J::Num(all_after.as_secs_f64())),
        ("clients_ready", J::Int(ready as u64)),
        ("clients_failed", J::Int(failed as u64)),
        ("window_s", J::Num(window_s)),
        ("first_counted_part", J::Str(format!("{first_m}.{first_p}"))),
        ("parts_counted", J::Int(counted as u64)),
        ("parts_reached_all", J::Int(reached_all as u64)),
        ("min_clients_per_part", J::Int(min_reached as u64)),
        (
            "delay_ms",
            J::Obj(vec![
                ("samples", J::Int(delays.len() as u64)),
                ("p50", J::opt_f(d50)),
                ("p99", J::opt_f(d99)),
                ("max", J::opt_f(dmax)),
            ]),
        ),
        (
            "last_client_ms",
            J::Obj(vec![("p50", J::opt_f(s50)), ("max", J::opt_f(smax))]),
        ),
        ("requests", J::Int(requests)),
        ("body_bytes", J::Int(bytes)),
        ("late_answers", J::Int(late)),
        ("connects", J::Int(connects)),
        ("errors", J::Arr(err_obj)),
        (
            "server_rss_kib",
            J::Obj(vec![
                ("before", J::opt_i(rss_before)),
                ("connected", J::opt_i(rss_connected)),
                ("waiting_max", J::opt_i(rss_max)),
                ("waiting_median", J::opt_i(rss_median)),
                ("samples", J::Int(rss_samples.len() as u64)),
            ]),
        ),
        (
            "server_rss_samples_kib",
            J::Arr(rss_samples.iter().map(|&k| J::Int(k)).collect()),
        ),
        (
            "server_rss_per_client_at_connect_kib",
            J::opt_f(per_client_connected_kib),
        ),
        ("server_rss_per_client_kib", J::opt_f(per_client_kib)),
        (
            "cpu_pct_of_core",
            J::Obj(vec![
                ("server", J::opt_f(pct_of(server_cpu_s))),
                ("encoder", J::opt_f(pct_of(children_cpu_s))),
                ("publisher", J::opt_f(pct_of(publisher_cpu_s))),
                ("client", J::opt_f(pct_of(Some(client_cpu_s)))),
            ]),
        ),
        (
            "machine_cpu_pct_of_core",
            match &machine {
                Some(m) => J::Obj(vec![
                    ("busy", J::Num(mpct(m.total - m.idle, m))),
                    ("user", J::Num(mpct(m.user, m))),
                    ("system", J::Num(mpct(m.system, m))),
                    ("irq", J::Num(mpct(m.irq, m))),
                    ("steal", J::Num(mpct(m.steal, m))),
                    ("idle", J::Num(mpct(m.idle, m))),
                    ("other", J::opt_f(other_pct)),
                ]),
                None => J::Null,
            },
        ),
        (
            "server_threads_cpu_pct",
            J::Arr(
                threads
                    .iter()
                    .map(|(n, k, s)| {
                        J::Obj(vec![
                            ("name", J::Str(n.clone())),
                            ("threads", J::Int(u64::from(*k))),
                            ("pct", J::Num(100.0 * s / window_s)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("server_busiest_thread_pct", J::opt_f(busiest_thread)),
        ("client_rss_kib", J::Int(self_rss_max)),
        ("client_threads", J::Int(a.threads as u64)),
        ("nofile", J::Int(nofile)),
        ("nproc", J::Int(nproc as u64)),
        (
            "publish_time",
            J::Str("earliest completion of the part across all clients".into()),
        ),
        ("parts", J::Arr(per_part)),
        (
            "ok",
            J::Bool(ready == n && counted > 0 && reached_all == counted),
        ),
    ])
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let target = match parse_url(&a.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let nofile = procfs::raise_nofile();
    let need = a.clients as u64 + 64;
    if nofile < need {
        eprintln!(
            "descriptor limit {nofile} is below the {need} that {} clients need: raise it (ulimit -n)",
            a.clients
        );
        return ExitCode::from(2);
    }
    let rt = if a.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = rt.block_on(run(a, target, nofile));
    let mut line = String::new();
    json.write(&mut line);
    println!("{line}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn bounds() {
        let u = "--url http://127.0.0.1:1/live/a/b/360p/index.m3u8";
        assert!(args(&format!("{u} --clients 20000 --seconds 300")).is_ok());
        assert!(args(&format!("{u} --clients 20001 --seconds 3")).is_err());
        assert!(args(&format!("{u} --clients 10 --seconds 301")).is_err());
        assert!(args(&format!("{u} --clients 0 --seconds 3")).is_err());
        assert!(args(&format!("{u} --clients=5 --seconds=3 --threads=2")).is_ok());
        assert!(args(&format!("{u} --clients 5 --seconds 3 --bogus 1")).is_err());
    }

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8080/live/s/x/360p/index.m3u8?_HLS_msn=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/live/s/x/360p/index.m3u8");
        assert!(parse_url("http://[::1]:9/a/index.m3u8").is_ok());
        assert_eq!(
            parse_url("http://localhost:9/a/index.m3u8").unwrap().addr,
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_url("http://10.0.0.1:9/a/index.m3u8").is_err());
        assert!(parse_url("http://example.com/a/index.m3u8").is_err());
        assert!(parse_url("https://127.0.0.1/a/index.m3u8").is_err());
        assert!(parse_url("http://127.0.0.1:9/a/seg.m4s").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(pct(&v, 0.5), Some(50));
        assert_eq!(pct(&v, 0.99), Some(99));
        assert_eq!(pct(&v, 1.0), Some(100));
        assert_eq!(pct(&[7], 0.5), Some(7));
        assert_eq!(pct(&[], 0.5), None);
    }

    #[test]
    fn json() {
        let mut s = String::new();
        J::Obj(vec![
            ("a", J::Str("x\"y\n".into())),
            (
                "b",
                J::Arr(vec![J::Int(1), J::Num(0.12345), J::Null, J::Bool(true)]),
            ),
        ])
        .write(&mut s);
        assert_eq!(s, r#"{"a":"x\"y\u000a","b":[1,0.123,null,true]}"#);
    }
}
