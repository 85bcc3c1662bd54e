//! The manifests of a live session: the HLS master, each rendition's LL-HLS media playlist
//! and the DASH MPD, rendered from the packager's state (`super`). Pure: no I/O, time passed in.

use oxcast_media::{dash, hls};

use super::{rfc3339_ms, ticks_ms, Segment, SessionState};

impl SessionState {
    /// The live master playlist, or `None` until every rendition has started.
    pub fn master(&self, prefix: &str) -> Option<String> {
        if self.renditions.is_empty() || self.ready().count() != self.renditions.len() {
            return None;
        }
        let audio = self.renditions.iter().find(|r| r.rung.is_none());
        let ladder = hls::Ladder {
            audio: audio.map(|a| hls::LadderAudio {
                uri: format!("{prefix}{}/index.m3u8", a.name),
                codecs: a
                    .track
                    .as_ref()
                    .map(|t| t.codec.clone())
                    .unwrap_or_default(),
                channels: a.track.as_ref().and_then(|t| t.channels),
                peak: a.bandwidth(),
                average: None,
            }),
            video: self
                .renditions
                .iter()
                .filter_map(|r| {
                    let rung = r.rung.as_ref()?;
                    let t = r.track.as_ref()?;
                    Some(hls::LadderVideo {
                        uri: format!("{prefix}{}/index.m3u8", r.name),
                        codecs: t.codec.clone(),
                        width: t.width.unwrap_or(rung.width),
                        height: t.height.unwrap_or(rung.height),
                        frame_rate: None,
                        peak: r.bandwidth(),
                        average: None,
                    })
                })
                .collect(),
            // Segments start with keyframes, but parts need not: kept off for live.
            independent_segments: false,
            captions: Some(self.source_captions),
        };
        Some(ladder.render())
    }

    /// One rendition's LL-HLS playlist model.
    pub fn playlist(&self, rendition: &str) -> Option<hls::LivePlaylist> {
        let r = self.renditions.iter().find(|r| r.name == rendition)?;
        r.track.as_ref()?;
        let pdt = |ms: i64| rfc3339_ms(ms);
        let mut last_epoch = None;
        let start = r.window_start(self.dvr_window_s);
        let (gone, listed) = r.segments.split_at(start);
        let segments = listed
            .iter()
            .map(|s| {
                let new_epoch = last_epoch != Some(s.epoch);
                last_epoch = Some(s.epoch);
                hls::LiveSegment {
                    number: s.number,
                    uri: format!("seg-{}.m4s", s.number),
                    duration: s.duration_s,
                    discontinuity: s.discontinuity,
                    map_uri: new_epoch.then(|| format!("init-{}.mp4", s.epoch)),
                    program_date_time: new_epoch.then(|| pdt(s.pdt_ms)),
                    parts: s
                        .parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| hls::Part {
                            uri: format!("part-{}-{i}.m4s", s.number),
                            duration: p.duration_s,
                            independent: p.independent,
                        })
                        .collect(),
                }
            })
            .collect();
        let open_new_epoch = last_epoch != Some(r.epoch);
        let open_number = r.next_number;
        let open_pdt = self.epochs.get(r.epoch as usize).map(|e| {
            e.wall_start_ms + r.open.start_ticks.map_or(0, |t| ticks_ms(t, r.timescale()))
        });
        Some(hls::LivePlaylist {
            target_duration: self.target_duration(),
            part_target: self.part_target(),
            first_number: listed.first().map_or(open_number, |s| s.number),
            // Discontinuities that slid out of the window are still counted.
            discontinuity_sequence: gone.iter().filter(|s| s.discontinuity).count() as u64,
            // EVENT promises that nothing is removed: only without a window.
            playlist_type_event: self.dvr_window_s.is_none(),
            segments,
            open_parts: r
                .open
                .parts
                .iter()
                .enumerate()
                .map(|(i, p)| hls::Part {
                    uri: format!("part-{open_number}-{i}.m4s"),
                    duration: p.duration_s,
                    independent: p.independent,
                })
                .collect(),
            open_map_uri: open_new_epoch.then(|| format!("init-{}.mp4", r.epoch)),
            open_discontinuity: open_new_epoch && r.epoch > 0 && !r.open.parts.is_empty(),
            open_program_date_time: (open_new_epoch && !r.open.parts.is_empty())
                .then(|| open_pdt.map(pdt))
                .flatten(),
            preload_hint: (!self.ended)
                .then(|| format!("part-{open_number}-{}.m4s", r.open.parts.len())),
            ended: self.ended,
            rendition_reports: self
                .ready()
                .filter(|o| o.name != r.name)
                .filter_map(|o| {
                    let (last_msn, last_part) = o.live_edge()?;
                    Some(hls::RenditionReport {
                        uri: format!("../{}/index.m3u8", o.name),
                        last_msn,
                        last_part,
                    })
                })
                .collect(),
        })
    }

    /// The DASH MPD: dynamic while live, static once ended. One period per epoch.
    pub fn mpd(&self, prefix: &str, utc_timing_url: &str, now_ms: i64) -> Option<String> {
        if self.renditions.is_empty() || self.ready().count() != self.renditions.len() {
            return None;
        }
        let mut periods = Vec::new();
        let mut media_offset = 0.0;
        for (e, epoch) in self.epochs.iter().enumerate() {
            let e = e as u32;
            let mut sets = Vec::new();
            let mut epoch_duration: f64 = 0.0;
            for (video, content) in [
                (true, dash::ContentType::Video),
                (false, dash::ContentType::Audio),
            ] {
                let reps: Vec<dash::Representation> = self
                    .renditions
                    .iter()
                    .filter(|r| r.rung.is_some() == video)
                    .filter_map(|r| {
                        let t = r.track.as_ref()?;
                        let all: Vec<&Segment> =
                            r.segments.iter().filter(|s| s.epoch == e).collect();
                        // The media time at the period's start, whatever slid out of the window.
                        let pto = all.first()?.start_ticks;
                        let ticks = |s: &[&Segment]| -> Vec<(u64, u64)> {
                            s.iter().map(|s| (s.start_ticks, s.ticks)).collect()
                        };
                        // Segments of one length are addressed by number from the period start
                        // (a template with a duration, as small as it gets): keep them all.
                        // Otherwise the timeline lists only the time-shift window.
                        let from = r.window_start(self.dvr_window_s);
                        let from = r.segments.get(from).map_or(u64::MAX, |s| s.number);
                        // A period that slid out of the window entirely goes.
                        all.last().filter(|s| s.number >= from)?;
                        let segs =
                            if dash::constant_duration(&dash::compress_timeline(&ticks(&all)))
                                .is_some()
                            {
                                all
                            } else {
                                all.into_iter().filter(|s| s.number >= from).collect()
                            };
                        let first = segs.first()?;
                        let d: f64 = segs.iter().map(|s| s.duration_s).sum();
                        epoch_duration = epoch_duration.max(d);
                        let timeline = ticks(&segs);
                        Some(dash::Representation {
                            id: r.name.clone(),
                            bandwidth: r.bandwidth(),
                            codecs: t.codec.clone(),
                            width: t.width,
                            height: t.height,
                            frame_rate: None,
                            audio_sampling_rate: t.sample_rate,
                            audio_channels: t.channels,
                            timescale: t.timescale,
                            initialization: format!("{prefix}{}/init-{e}.mp4", r.name),
                            media: format!("{prefix}{}/seg-$Number$.m4s", r.name),
                            start_number: first.number,
                            timeline: dash::compress_timeline(&timeline),
                            presentation_time_offset: pto,
                        })
                    })
                    .collect();
                if !reps.is_empty() {
                    sets.push(dash::AdaptationSet {
                        id: sets.len() as u32,
                        content_type: content,
                        mime_type: if video { "video/mp4" } else { "audio/mp4" }.into(),
                        segment_alignment: true,
                        representations: reps,
                    });
                }
            }
            if sets.is_empty() {
                continue;
            }
            // Live periods sit on the wall clock (a reconnect leaves a real gap); a finished
            // session's periods follow each other in media time.
            let start_s = if self.ended {
                media_offset
            } else {
                (epoch.wall_start_ms - self.started_at_ms) as f64 / 1000.0
            };
            media_offset += epoch_duration;
            periods.push(dash::LivePeriod {
                id: format!("p{e}"),
                start_s,
                adaptation_sets: sets,
            });
        }
        let session_s = ((now_ms - self.started_at_ms) as f64 / 1000.0).max(0.0);
        // Three parts behind the part being written, plus a second for the encoder and the
        // network: what the LL-HLS players reach too (PART-HOLD-BACK is three parts).
        let target_latency = 3.0 * self.part_s + 1.0;
        Some(
            dash::DynamicMpd {
                availability_start_time: rfc3339_ms(self.started_at_ms),
                publish_time: rfc3339_ms(now_ms),
                minimum_update_period_s: self.segment_s,
                time_shift_buffer_depth_s: self
                    .dvr_window_s
                    .map_or(session_s, |w| w.min(session_s))
                    + 2.0 * self.segment_s,
                // Shaka takes its distance from live from here, not from ServiceDescription,
                // and plays about a second behind it (measured): a second less than the
                // target puts it where dash.js is.
                suggested_presentation_delay_s: (target_latency - 1.0).max(self.part_s),
                min_buffer_time_s: self.segment_s,
                utc_timing_url: utc_timing_url.to_string(),
                periods,
                low_latency: Some(dash::LowLatency {
                    availability_time_offset_s: (self.segment_s - self.part_s).max(0.0),
                    target_latency_s: target_latency,
                    min_latency_s: 2.0 * self.part_s,
                    max_latency_s: 2.0 * self.segment_s + 2.0,
                }),
                ended: self.ended.then_some(media_offset),
            }
            .render(),
        )
    }
}
