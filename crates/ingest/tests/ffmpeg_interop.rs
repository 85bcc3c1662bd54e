//! End-to-end tests with real publishers: Debian's ffmpeg (libx264 + aac) pushes to the RTMP and
//! SRT servers on loopback ports, and ffprobe checks what the handler collected.
//!
//! Needs `ffmpeg` and `ffprobe` (with libsrt) on PATH.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use oxcast_ingest::{
    serve_rtmp_with, serve_srt_socket, Container, IngestConfig, MediaStream, Protocol,
    PublishHandler, PublishRequest, Refusal,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// What the test handler saw of one publisher, once its media stream ended.
#[derive(Debug)]
struct Finished {
    req: PublishRequest,
    accepted: bool,
    container: Container,
    bytes: Vec<u8>,
}

/// Accepts keys starting with `good`, records every request, collects every media stream
/// (including those of refused publishers, which must stay empty).
struct TestHandler {
    requests: Mutex<Vec<PublishRequest>>,
    done_tx: mpsc::UnboundedSender<Finished>,
}

#[async_trait::async_trait]
impl PublishHandler for TestHandler {
    async fn publish(&self, req: PublishRequest, media: MediaStream) -> Result<(), Refusal> {
        self.requests.lock().unwrap().push(req.clone());
        let accepted = req.key.starts_with("good");
        let done_tx = self.done_tx.clone();
        let MediaStream { container, mut rx } = media;
        let r = req.clone();
        tokio::spawn(async move {
            if r.key.contains("slow") {
                // A consumer that stalls for a while: the publisher must be slowed, not cut.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = rx.recv().await {
                bytes.extend_from_slice(&chunk);
            }
            let _ = done_tx.send(Finished {
                req: r,
                accepted,
                container,
                bytes,
            });
        });
        if accepted {
            Ok(())
        } else {
            Err(Refusal(format!("unknown stream key {:?}", req.key)))
        }
    }
}

struct Harness {
    rtmp: SocketAddr,
    srt: SocketAddr,
    handler: Arc<TestHandler>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    shutdown: CancellationToken,
    rtmp_task: JoinHandle<()>,
    srt_task: JoinHandle<oxcast_ingest::Result<()>>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(IngestConfig::default()).await
    }

    async fn start_with(config: IngestConfig) -> Self {
        let config = config
            .with_handshake_timeout(Duration::from_secs(3))
            .with_idle_timeout(Duration::from_secs(5));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(TestHandler {
            requests: Mutex::new(Vec::new()),
            done_tx,
        });
        let shutdown = CancellationToken::new();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtmp = tcp.local_addr().unwrap();
        let srt = udp.local_addr().unwrap();
        let rtmp_task = tokio::spawn(serve_rtmp_with(
            tcp,
            handler.clone(),
            shutdown.clone(),
            config.clone(),
        ));
        let srt_task = tokio::spawn(serve_srt_socket(
            udp,
            handler.clone(),
            shutdown.clone(),
            config,
        ));
        Harness {
            rtmp,
            srt,
            handler,
            done_rx,
            shutdown,
            rtmp_task,
            srt_task,
        }
    }

    fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp.port())
    }

    fn srt_url(&self, streamid: &str) -> String {
        format!("srt://127.0.0.1:{}?streamid={streamid}", self.srt.port())
    }

    fn requests(&self) -> Vec<PublishRequest> {
        self.handler.requests.lock().unwrap().clone()
    }

    async fn next_finished(&mut self) -> Finished {
        tokio::time::timeout(Duration::from_secs(15), self.done_rx.recv())
            .await
            .expect("a media stream should end")
            .expect("handler alive")
    }

    /// Cancels the token; both servers must return promptly.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.rtmp_task)
            .await
            .expect("serve_rtmp stops on shutdown")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.srt_task)
            .await
            .expect("serve_srt stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Publishes `secs` seconds of 640x360 30 fps h264 + aac to `url` as `format`. Returns whether
/// ffmpeg succeeded and how long it ran.
async fn ffmpeg_publish(url: &str, format: &str, secs: u32) -> (bool, Duration) {
    let start = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
        ])
        .args(["-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg on PATH");
    let mut stderr = child.stderr.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(secs as u64 + 20), child.wait())
        .await
        .expect("ffmpeg finishes")
        .unwrap();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err).await;
    if !status.success() {
        eprintln!("ffmpeg {url} exited {status}: {err}");
    }
    (status.success(), start.elapsed())
}

struct Probe {
    /// `codec_type:codec_name`, sorted.
    streams: Vec<String>,
    /// Span of video packet timestamps, seconds.
    video_span: f64,
}

async fn ffprobe(bytes: &[u8], container: Container) -> Probe {
    let suffix = match container {
        Container::Flv => ".flv",
        Container::MpegTs => ".ts",
    };
    let file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let path = file.path().to_str().unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type,codec_name",
        ])
        .args(["-of", "compact=p=0:nk=1", path])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "ffprobe failed: {out:?}");
    let mut streams: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            // compact with nk=1 prints the fields in ffprobe's order: index|name|type
            let mut f = l.split('|');
            let index = f.next().unwrap_or_default();
            let name = f.next().unwrap_or_default();
            let ty = f.next().unwrap_or_default();
            format!("{ty}:{name}:{index}")
        })
        .collect();
    // MPEG-TS lists each stream again under its program.
    streams.sort();
    streams.dedup();
    let streams = streams
        .into_iter()
        .map(|s| s.rsplit_once(':').unwrap().0.to_string())
        .collect();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0", path])
        .output()
        .await
        .unwrap();
    let pts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    let min = pts.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = pts.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Probe {
        streams,
        video_span: if pts.is_empty() { 0.0 } else { max - min },
    }
}

/// Asserts the collected stream is h264 + aac lasting about `secs`.
async fn assert_media(f: &Finished, container: Container, secs: u32) {
    assert!(f.accepted, "{:?}", f.req);
    assert_eq!(f.container, container);
    assert!(f.bytes.len() > 10_000, "only {} bytes", f.bytes.len());
    let probe = ffprobe(&f.bytes, container).await;
    assert_eq!(
        probe.streams,
        vec!["audio:aac", "video:h264"],
        "{:?}",
        f.req
    );
    let want = secs as f64;
    eprintln!(
        "{} {:?}: {} bytes, {:?}, video {:.2}s",
        f.req.key,
        f.req.protocol,
        f.bytes.len(),
        probe.streams,
        probe.video_span
    );
    assert!(
        (want - 0.8..=want + 0.3).contains(&probe.video_span),
        "video lasts {:.2}s, pushed {want}s ({:?})",
        probe.video_span,
        f.req
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_delivers_flv() {
    let mut h = Harness::start().await;
    let (ok, _) = ffmpeg_publish(&h.rtmp_url("good-rtmp"), "flv", 4).await;
    assert!(ok, "ffmpeg RTMP publish failed");
    let f = h.next_finished().await;
    assert_eq!(f.req.key, "good-rtmp");
    assert_eq!(f.req.protocol, Protocol::Rtmp);
    assert!(f.req.peer.ip().is_loopback());
    assert_eq!(&f.bytes[..3], b"FLV");
    assert_media(&f, Container::Flv, 4).await;
    assert_eq!(h.requests().len(), 1);

    // The bytes are what `ffmpeg -f flv -i pipe:0` reads.
    let mut child = Command::new("ffmpeg")
        .args([
            "-v", "error", "-f", "flv", "-i", "pipe:0", "-f", "null", "-",
        ])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&f.bytes).await.unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success());

    // The publisher's @setDataFrame became onMetaData.
    let file = tempfile::Builder::new().suffix(".flv").tempfile().unwrap();
    std::fs::write(file.path(), &f.bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format_tags=encoder",
            "-of",
            "csv=p=0",
        ])
        .arg(file.path())
        .output()
        .await
        .unwrap();
    let encoder = String::from_utf8_lossy(&out.stdout);
    assert!(
        encoder.starts_with("Lavf"),
        "onMetaData encoder: {encoder:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_slow_consumer_backpressures_without_loss() {
    let mut h = Harness::start_with(IngestConfig::default().with_channel_capacity(4)).await;
    let (ok, took) = ffmpeg_publish(&h.rtmp_url("good-slow"), "flv", 2).await;
    assert!(ok, "publisher must survive a 2 s consumer stall");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let f = h.next_finished().await;
    assert_media(&f, Container::Flv, 2).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_publish_delivers_mpegts() {
    let mut h = Harness::start().await;
    // The access-control form, unencoded: ffmpeg passes it through as-is.
    let (ok, _) = ffmpeg_publish(&h.srt_url("#!::r=good-srt,m=publish"), "mpegts", 4).await;
    assert!(ok, "ffmpeg SRT publish failed");
    let f = h.next_finished().await;
    assert_eq!(f.req.key, "good-srt");
    assert_eq!(f.req.protocol, Protocol::Srt);
    assert_eq!(f.bytes[0], 0x47, "MPEG-TS sync byte");
    assert_media(&f, Container::MpegTs, 4).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_are_refused_without_media() {
    let mut h = Harness::start().await;
    let rtmp_url = h.rtmp_url("bad-rtmp");
    // `#!::r=bad-srt,m=publish`, URL-encoded for ffmpeg's srt:// query.
    let srt_url = h.srt_url("%23%21%3A%3Ar%3Dbad-srt%2Cm%3Dpublish");
    // A good key on the wrong application never reaches the handler.
    let app_url = format!("rtmp://127.0.0.1:{}/other/good-app", h.rtmp.port());
    let rtmp = ffmpeg_publish(&rtmp_url, "flv", 4);
    let srt = ffmpeg_publish(&srt_url, "mpegts", 4);
    let app = ffmpeg_publish(&app_url, "flv", 4);
    let ((rtmp_ok, rtmp_took), (srt_ok, srt_took), (app_ok, app_took)) =
        tokio::join!(rtmp, srt, app);
    assert!(!rtmp_ok, "RTMP publish with a wrong key must fail");
    assert!(!srt_ok, "SRT publish with a wrong key must fail");
    assert!(!app_ok, "RTMP publish to another application must fail");
    assert!(
        rtmp_took < Duration::from_secs(3),
        "RTMP refusal took {rtmp_took:?}"
    );
    assert!(
        app_took < Duration::from_secs(3),
        "RTMP app refusal took {app_took:?}"
    );
    assert!(
        srt_took < Duration::from_secs(3),
        "SRT refusal took {srt_took:?}"
    );

    let mut keys: Vec<_> = h
        .requests()
        .into_iter()
        .map(|r| (r.key, r.protocol))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        keys,
        vec![
            ("bad-rtmp".to_string(), Protocol::Rtmp),
            ("bad-srt".to_string(), Protocol::Srt)
        ]
    );
    for _ in 0..2 {
        let f = h.next_finished().await;
        assert!(!f.accepted);
        assert!(
            f.bytes.is_empty(),
            "refused {:?} got {} bytes",
            f.req,
            f.bytes.len()
        );
    }
    h.stop().await;
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A client-side RTMP handshake, so garbage can be sent past it.
async fn rtmp_handshake(addr: SocketAddr) -> TcpStream {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await.unwrap()
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                s.write_all(&response_bytes).await.unwrap();
                return s;
            }
        }
    }
}

/// Waits until the server closes `s` (EOF or reset), ignoring what it sends.
async fn wait_closed(mut s: TcpStream, within: Duration) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("server should close the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_survives_garbage() {
    let mut h = Harness::start().await;

    // Random bytes from the first byte on.
    let mut raw = TcpStream::connect(h.rtmp).await.unwrap();
    let _ = raw.write_all(&noise(1, 5000)).await;
    // A version byte, then random handshake packets and chunks.
    let mut v3 = TcpStream::connect(h.rtmp).await.unwrap();
    let mut bytes = vec![3u8];
    bytes.extend(noise(2, 8000));
    let _ = v3.write_all(&bytes).await;
    // A real handshake, then random chunks.
    let mut chunks = rtmp_handshake(h.rtmp).await;
    let _ = chunks.write_all(&noise(3, 20_000)).await;
    // A real handshake, then `@setDataFrame` with nothing after it: rml_rtmp 0.8 indexes past
    // the end of that message (a panic the connection task must contain).
    let mut dataframe = rtmp_handshake(h.rtmp).await;
    {
        use rml_amf0::Amf0Value;
        use rml_rtmp::{chunk_io::ChunkSerializer, messages::RtmpMessage, time::RtmpTimestamp};
        let msg = RtmpMessage::Amf0Data {
            values: vec![Amf0Value::Utf8String("@setDataFrame".into())],
        };
        let payload = msg.into_message_payload(RtmpTimestamp::new(0), 1).unwrap();
        let packet = ChunkSerializer::new()
            .serialize(&payload, true, false)
            .unwrap();
        dataframe.write_all(&packet.bytes).await.unwrap();
    }
    // A silent connection: must not hold anything up, and must be closed by the handshake
    // timeout (3 s here).
    let idle = TcpStream::connect(h.rtmp).await.unwrap();
    let idle_since = Instant::now();

    let (ok, _) = ffmpeg_publish(&h.rtmp_url("good-after-garbage"), "flv", 2).await;
    assert!(ok, "good publish after garbage failed");
    let f = h.next_finished().await;
    assert_eq!(f.req.key, "good-after-garbage");
    assert_media(&f, Container::Flv, 2).await;

    for s in [raw, v3, chunks, dataframe] {
        wait_closed(s, Duration::from_secs(5)).await;
    }
    wait_closed(idle, Duration::from_secs(5)).await;
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for >= Duration::from_millis(2900),
        "closed idle after {idle_for:?}"
    );
    assert_eq!(h.requests().len(), 1, "garbage never reaches the handler");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_survives_garbage() {
    let mut h = Harness::start().await;
    let mut senders = Vec::new();
    for _ in 0..4 {
        senders.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    for (i, s) in senders.iter().enumerate() {
        for j in 0..250u64 {
            let seed = (i as u64) << 32 | j;
            let len = 1 + (seed.wrapping_mul(2654435761) % 1500) as usize;
            let mut d = noise(seed, len);
            if j % 2 == 0 {
                d[0] |= 0x80; // control packet bit: reach the handshake parser
                if d.len() > 1 {
                    d[1] = 0; // handshake type
                }
            }
            let _ = s.send_to(&d, h.srt).await;
        }
    }
    // A well-formed HSv5 induction that is never concluded.
    let mut induction = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    induction.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 5, 0xdc]);
    induction.extend_from_slice(&[0, 0, 0x20, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]);
    induction.extend_from_slice(&[0; 16]);
    let _ = senders[0].send_to(&induction, h.srt).await;

    let (ok, _) = ffmpeg_publish(&h.srt_url("good-after-garbage"), "mpegts", 2).await;
    assert!(ok, "good SRT publish after garbage failed");
    let f = h.next_finished().await;
    assert_eq!(f.req.key, "good-after-garbage");
    assert_media(&f, Container::MpegTs, 2).await;
    assert_eq!(h.requests().len(), 1, "garbage never reaches the handler");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_their_own_streams() {
    let mut h = Harness::start().await;
    let urls = [
        (h.rtmp_url("good-r1"), "flv"),
        (h.rtmp_url("good-r2"), "flv"),
        (h.srt_url("good-s1"), "mpegts"),
        (h.srt_url("publish:good-s2"), "mpegts"),
    ];
    let runs = futures::future::join_all(urls.iter().map(|(u, f)| ffmpeg_publish(u, f, 3))).await;
    assert!(runs.iter().all(|(ok, _)| *ok), "{runs:?}");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(h.next_finished().await);
    }
    got.sort_by(|a, b| a.req.key.cmp(&b.req.key));
    let keys: Vec<_> = got.iter().map(|f| f.req.key.as_str()).collect();
    assert_eq!(keys, ["good-r1", "good-r2", "good-s1", "good-s2"]);
    for f in &got {
        let container = match f.req.protocol {
            Protocol::Rtmp => Container::Flv,
            Protocol::Srt => Container::MpegTs,
        };
        assert_media(f, container, 3).await;
    }
    h.stop().await;
}
