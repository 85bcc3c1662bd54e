//! One publisher connection (an epoch of its session): its media probed, the real-time
//! encoder started on it, one packager per rendition, until the publisher goes away.

use super::*;

impl LiveManager {
    /// Buffers the start of the media until ffprobe can tell the picture size for the ladder.
    /// Probes early and again with more data: the first bytes usually carry the codec headers.
    pub(super) async fn probe_head(&self, media: &mut MediaStream) -> Result<Head, String> {
        let mut head: Vec<u8> = Vec::new();
        let mut first_at = None;
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        let mut next_probe = 48 * 1024;
        let mut probe = Probed::Unreadable;
        loop {
            let mut closed = false;
            tokio::select! {
                chunk = media.rx.recv() => match chunk {
                    Some(c) => {
                        // Latency is measured from when media arrives, not from the handshake.
                        first_at.get_or_insert_with(|| self.clock.now_ms());
                        head.extend_from_slice(&c);
                    }
                    None => closed = true,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let timed_out = tokio::time::Instant::now() >= deadline;
            if head.len() >= next_probe || closed || timed_out {
                if !head.is_empty() {
                    probe =
                        probe_source(&self.config.transcode.ffprobe, media.container, &head).await;
                }
                if matches!(probe, Probed::Video(_)) || closed || timed_out || head.len() >= 4 << 20
                {
                    break;
                }
                next_probe = head.len() * 4;
            }
        }
        match probe {
            Probed::Video(probe) => {
                if let Some(why) = crate::probe::over_limits(&probe, &self.config.limits) {
                    return Err(why);
                }
                Ok(Head {
                    probe,
                    bytes: head,
                    first_at: first_at.unwrap_or_else(|| self.clock.now_ms()),
                })
            }
            other => Err(other.refusal(head.len(), PROBE_WAIT)),
        }
    }

    pub(super) async fn encode_epoch(
        &self,
        session: &Arc<Session>,
        mut media: MediaStream,
        head: Head,
        kick: CancellationToken,
    ) -> Result<Option<String>, String> {
        let Head {
            probe,
            bytes: head,
            first_at,
        } = head;
        session.state.lock().expect("state").health.ingest_bytes += head.len() as u64;
        let mut meter = MediaMeter::new(media.container, session.clone(), self.clock.clone());
        meter.on_chunk(&head);

        let cfg = &self.config.live;
        let mut ladder = live_ladder(&probe.source, cfg);
        if cfg.passthrough {
            let (w, h) = ladder::display_size(&probe.source);
            ladder.insert(
                0,
                Rung {
                    name: "source".into(),
                    width: w,
                    height: h,
                    video_bitrate: 0,
                    max_bitrate: 0,
                    buffer_size: 0,
                },
            );
        }
        // Taken over from a lost encoder: carry on after what it stored.
        let adopted = self
            .continue_adopted(session, &ladder, probe.has_audio)
            .await?;
        let (rungs, epoch, session_id) = {
            let mut st = session.state.lock().expect("state");
            let first = st.renditions.is_empty();
            if first {
                st.set_renditions(&ladder, probe.has_audio);
            }
            if first || adopted {
                st.source_captions = probe.closed_captions;
                st.dvr_window_s = cfg.dvr_window_s;
            }
            session.monitor.lock().expect("monitor").top_kbps = st
                .renditions
                .iter()
                .filter_map(|r| r.rung.as_ref())
                .map(|r| f64::from(r.video_bitrate) / 1000.0)
                .reduce(f64::max)
                .filter(|k| *k > 0.0);
            st.publishing = true;
            let rungs: Vec<Rung> = st
                .renditions
                .iter()
                .filter_map(|r| r.rung.clone())
                .collect();
            let audio = st.renditions.iter().any(|r| r.rung.is_none());
            (rungs, st.begin_epoch(first_at), (st.session_id, audio))
        };
        let (session_id, audio) = session_id;
        let dir = self.scratch.join(format!("{session_id}-{epoch}"));
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
        let mut outputs: Vec<LiveOutput> = rungs
            .iter()
            .map(|r| LiveOutput {
                name: r.name.clone(),
                passthrough: r.name == "source",
                rung: Some(r.clone()),
                fifo: dir.join(format!("{}.mp4", r.name)),
            })
            .collect();
        if audio && probe.has_audio {
            outputs.push(LiveOutput {
                name: AUDIO.into(),
                rung: None,
                passthrough: false,
                fifo: dir.join("audio.mp4"),
            });
        }
        let plan = EncoderPlan {
            container: media.container,
            outputs: outputs.clone(),
            has_audio: probe.has_audio,
            preset: cfg.preset.clone(),
            segment_s: cfg.segment_s,
            part_s: cfg.part_s,
            frame_rate: probe.frame_rate,
        };
        // A FIFO opened for reading blocks until ffmpeg opens it for writing; opening it that
        // way (not non-blocking) is what makes ffmpeg closing it read as end of stream.
        let mut readers = Vec::new();
        for o in &outputs {
            encoder::mkfifo(&o.fifo).map_err(|e| format!("mkfifo: {e}"))?;
            let path = o.fifo.clone();
            readers.push((
                o.name.clone(),
                tokio::task::spawn_blocking(move || std::fs::File::open(path)),
            ));
        }
        let mut child = encoder::spawn(&self.config.transcode.ffmpeg, &plan)
            .map_err(|e| format!("starting ffmpeg: {e}"))?;
        tracing::info!(
            epoch,
            renditions = outputs.len(),
            width = probe.source.width,
            height = probe.source.height,
            "live encoder started"
        );

        let mut stdin = child.stdin.take().expect("piped");
        let pump_session = session.clone();
        let mut rate = (cfg.max_ingest_kbps > 0)
            .then(|| oxcast_live_core::rate::IngestRate::new(cfg.max_ingest_kbps));
        let refused: Arc<Mutex<Option<String>>> = Arc::default();
        let pump_refused = refused.clone();
        let pump_clock = self.clock.clone();
        // Ends with the publisher, or when it is disconnected (`kick`: its media stream is
        // dropped, which closes its connection); the encoder then drains and exits.
        self.tasks.spawn(async move {
            if stdin.write_all(&head).await.is_err() {
                return;
            }
            loop {
                let chunk = tokio::select! {
                    c = media.rx.recv() => match c {
                        Some(c) => c,
                        None => break,
                    },
                    _ = kick.cancelled() => {
                        tracing::info!("publisher disconnected by the server");
                        break;
                    }
                };
                pump_session
                    .state
                    .lock()
                    .expect("state")
                    .health
                    .ingest_bytes += chunk.len() as u64;
                metrics::counter!("oxcast_live_ingest_bytes_total").increment(chunk.len() as u64);
                meter.on_chunk(&chunk);
                if let Some(why) = rate
                    .as_mut()
                    .and_then(|r| r.on_bytes(pump_clock.now_ms(), chunk.len()))
                {
                    tracing::warn!(reason = %why, "publisher over the bitrate limit; disconnecting");
                    metrics::counter!("oxcast_live_publish_refused_total", "reason" => "bitrate")
                        .increment(1);
                    *pump_refused.lock().expect("refused") = Some(why);
                    break;
                }
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            drop(media);
            let _ = stdin.shutdown().await;
        });

        let stderr = child.stderr.take().expect("piped");
        let stats_session = session.clone();
        let stats = self.tasks.spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut stats = EncoderStats::default();
            let mut errors = Vec::new();
            // ffmpeg's own fps and speed average over the whole run and hide a slowdown;
            // report rates over the last couple of seconds instead.
            let mut window: Option<(std::time::Instant, f64, u64)> = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains('=') && !line.contains(' ') {
                    if stats.apply(&line) {
                        let now = std::time::Instant::now();
                        let (t0, out0, frames0) =
                            *window.get_or_insert((now, stats.out_time_s, stats.frames));
                        let dt = now.duration_since(t0).as_secs_f64();
                        if dt >= 2.0 {
                            let speed = (stats.out_time_s - out0) / dt;
                            let fps = stats.frames.saturating_sub(frames0) as f64 / dt;
                            let mut st = stats_session.state.lock().expect("state");
                            st.health.fps = (fps * 10.0).round() / 10.0;
                            st.health.encoder_speed = (speed * 100.0).round() / 100.0;
                            metrics::gauge!("oxcast_live_encoder_speed").set(speed);
                            window = Some((now, stats.out_time_s, stats.frames));
                        }
                        stats_session
                            .state
                            .lock()
                            .expect("state")
                            .health
                            .dropped_frames = stats.dropped_frames;
                    }
                } else if errors.len() < 20 {
                    errors.push(line);
                }
            }
            errors
        });

        let mut packagers = Vec::new();
        for (name, rx) in readers {
            let s = session.clone();
            let span = tracing::info_span!("rendition", %name);
            packagers.push(
                self.tasks.spawn(
                    package(s, name, rx, epoch, first_at, self.clock.clone()).instrument(span),
                ),
            );
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        // If ffmpeg died before opening an output, release the reader blocked in open().
        for o in &outputs {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&o.fifo);
        }
        for p in packagers {
            let _ = p.await;
        }
        let errors = stats.await.unwrap_or_default();
        if let Some(why) = refused.lock().expect("refused").take() {
            return Ok(Some(why));
        }
        if !status.success() && !errors.is_empty() {
            return Err(format!("encoder exited ({status}): {}", errors.join(" | ")));
        }
        Ok(None)
    }
}
