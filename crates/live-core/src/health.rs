//! A live session's health over time, and the alerts a streamer should see. Pure: the session
//! feeds it media and encoder readings and ticks it once a second with the injected clock.
//!
//! The alert rules, and why:
//! - no keyframe for more than two segment durations: a segment can only start on one, so
//!   viewers wait, and players that join mid-gap stall;
//! - the live encoder below 0.9x real time for 5 s: viewers fall behind and the ingest buffer
//!   fills until the publisher is dropped;
//! - the incoming bitrate over 10 s above 2.5x or below 0.5x the ladder's top rung: far above
//!   wastes the streamer's upload on bits the top rung throws away (and risks drops on a weak
//!   uplink); far below, the top rung can look no better than the starved source.

use std::collections::VecDeque;

/// One point of the charts: a second of the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// End of the second, epoch ms.
    pub t_ms: i64,
    /// What arrived from the publisher during the second, kbit/s.
    pub ingest_kbps: f64,
    /// Frames per second the live encoder produced (over its last few seconds).
    pub fps: f64,
    /// The live encoder's speed relative to real time (over its last few seconds).
    pub encoder_speed: f64,
    /// Frames the encoder dropped since the session started.
    pub dropped_frames: u64,
    /// Time between the publisher's last two keyframes, once two arrived.
    pub keyframe_interval_s: Option<f64>,
    pub viewers: u64,
}

/// What the encoder reports at a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EncoderReading {
    pub fps: f64,
    pub speed: f64,
    pub dropped_frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    NoKeyframe,
    EncoderSlow,
    BitrateHigh,
    BitrateLow,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NoKeyframe => "no_keyframe",
            AlertKind::EncoderSlow => "encoder_slow",
            AlertKind::BitrateHigh => "bitrate_high",
            AlertKind::BitrateLow => "bitrate_low",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// What is wrong and what to change, for the streamer.
    pub message: String,
    /// When the condition began, epoch ms.
    pub since_ms: i64,
}

/// What the alert rules compare against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertRules {
    pub segment_s: f64,
    /// The top encoded rung's video bitrate, kbit/s (none when only the source is passed on).
    pub top_kbps: Option<f64>,
}

/// Below this speed, sustained, the live encoder is behind.
pub const SLOW_SPEED: f64 = 0.9;
/// How long a slowdown must last before it is an alert.
const SLOW_SECONDS: usize = 5;
/// Bitrate alerts average over this many seconds.
const BITRATE_SECONDS: usize = 10;
const BITRATE_HIGH: f64 = 2.5;
const BITRATE_LOW: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct HealthMonitor {
    window_ms: i64,
    samples: VecDeque<Sample>,
    bytes_since_tick: u64,
    last_tick_ms: Option<i64>,
    /// When media started flowing in the current publisher connection.
    media_since_ms: Option<i64>,
    last_keyframe_ms: Option<i64>,
    keyframe_interval_s: Option<f64>,
}

impl HealthMonitor {
    /// Keeps the samples of the last `window_ms` (the charts' 30 minutes).
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms: window_ms.max(1000),
            samples: VecDeque::new(),
            bytes_since_tick: 0,
            last_tick_ms: None,
            media_since_ms: None,
            last_keyframe_ms: None,
            keyframe_interval_s: None,
        }
    }

    /// Media arrived: `bytes` of it, holding `keyframes` video keyframes.
    pub fn on_media(&mut self, now_ms: i64, bytes: usize, keyframes: u32) {
        self.bytes_since_tick = self.bytes_since_tick.saturating_add(bytes as u64);
        self.media_since_ms.get_or_insert(now_ms);
        if keyframes > 0 {
            if let Some(last) = self.last_keyframe_ms {
                // Several in one chunk only happens for tiny GOPs; the gap is what matters.
                let gap = (now_ms - last).max(0) as f64 / 1000.0;
                self.keyframe_interval_s = Some(gap / f64::from(keyframes));
            }
            self.last_keyframe_ms = Some(now_ms);
        }
    }

    /// The publisher went away: keyframe timing starts afresh with the next one.
    pub fn on_publisher_gone(&mut self) {
        self.media_since_ms = None;
        self.last_keyframe_ms = None;
    }

    /// Closes the second that ends at `now_ms` into a sample.
    pub fn tick(&mut self, now_ms: i64, encoder: EncoderReading, viewers: u64) -> &Sample {
        let span_ms = match self.last_tick_ms {
            Some(t) if now_ms > t => now_ms - t,
            _ => 1000,
        };
        let ingest_kbps = self.bytes_since_tick as f64 * 8.0 / span_ms as f64;
        self.bytes_since_tick = 0;
        self.last_tick_ms = Some(now_ms);
        let sample = Sample {
            t_ms: now_ms,
            ingest_kbps: (ingest_kbps * 10.0).round() / 10.0,
            fps: encoder.fps,
            encoder_speed: encoder.speed,
            dropped_frames: encoder.dropped_frames,
            keyframe_interval_s: self
                .keyframe_interval_s
                .map(|s| (s * 100.0).round() / 100.0),
            viewers,
        };
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| s.t_ms <= now_ms - self.window_ms)
        {
            self.samples.pop_front();
        }
        self.samples.back().expect("just pushed")
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// The samples after `since_ms` (all with `None`), oldest first.
    pub fn since(&self, since_ms: Option<i64>) -> impl Iterator<Item = &Sample> {
        let from = since_ms.map_or(0, |t| self.samples.partition_point(|s| s.t_ms <= t));
        self.samples.range(from..)
    }

    /// The alerts in force at `now_ms`; none while no publisher is connected.
    pub fn alerts(&self, now_ms: i64, rules: AlertRules, publishing: bool) -> Vec<Alert> {
        let mut out = Vec::new();
        let Some(media_since) = self.media_since_ms.filter(|_| publishing) else {
            return out;
        };
        let limit_ms = (rules.segment_s * 2.0 * 1000.0) as i64;
        let from = self.last_keyframe_ms.unwrap_or(media_since);
        if now_ms - from > limit_ms {
            out.push(Alert {
                kind: AlertKind::NoKeyframe,
                message: format!(
                    "no keyframe for {:.0} s (more than two {} s segments): set the encoder's \
                     keyframe interval to {} s",
                    (now_ms - from) as f64 / 1000.0,
                    rules.segment_s,
                    rules.segment_s
                ),
                since_ms: from + limit_ms,
            });
        }
        let recent: Vec<&Sample> = self
            .samples
            .iter()
            .rev()
            .take_while(|s| s.t_ms > media_since)
            .collect();
        let slow = recent
            .iter()
            .take_while(|s| s.encoder_speed > 0.0 && s.encoder_speed < SLOW_SPEED)
            .count();
        if slow >= SLOW_SECONDS {
            let speed = recent[0].encoder_speed;
            out.push(Alert {
                kind: AlertKind::EncoderSlow,
                message: format!(
                    "the live encoder runs at {speed:.2}x real time: viewers fall behind; \
                     encode fewer rungs (live.rungs) or use a faster preset (live.preset)"
                ),
                since_ms: recent[slow - 1].t_ms - 1000,
            });
        }
        if let Some(top) = rules.top_kbps.filter(|t| *t > 0.0) {
            if recent.len() >= BITRATE_SECONDS {
                let window = &recent[..BITRATE_SECONDS];
                let kbps =
                    window.iter().map(|s| s.ingest_kbps).sum::<f64>() / BITRATE_SECONDS as f64;
                let since_ms = window[BITRATE_SECONDS - 1].t_ms - 1000;
                if kbps > top * BITRATE_HIGH {
                    out.push(Alert {
                        kind: AlertKind::BitrateHigh,
                        message: format!(
                            "the stream arrives at {kbps:.0} kbit/s, far above the top rung's \
                             {top:.0}: lower the encoder's bitrate to save upload bandwidth"
                        ),
                        since_ms,
                    });
                } else if kbps < top * BITRATE_LOW {
                    out.push(Alert {
                        kind: AlertKind::BitrateLow,
                        message: format!(
                            "the stream arrives at {kbps:.0} kbit/s, far below the top rung's \
                             {top:.0}: raise the encoder's bitrate, or the top rung looks no \
                             better than this"
                        ),
                        since_ms,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const RULES: AlertRules = AlertRules {
        segment_s: 2.0,
        top_kbps: Some(1000.0),
    };

    fn enc(speed: f64) -> EncoderReading {
        EncoderReading {
            fps: 30.0,
            speed,
            dropped_frames: 0,
        }
    }

    /// `secs` seconds of media at `kbps` with a keyframe every `gop_s` seconds (0: none).
    fn run(m: &mut HealthMonitor, from_s: i64, secs: i64, kbps: u64, gop_s: i64, speed: f64) {
        for s in from_s..from_s + secs {
            // Ten chunks a second.
            for i in 0..10 {
                let t = T0 + s * 1000 + i * 100;
                let key = gop_s > 0 && i == 0 && s % gop_s == 0;
                m.on_media(t, (kbps * 1000 / 8 / 10) as usize, u32::from(key));
            }
            m.tick(T0 + (s + 1) * 1000, enc(speed), 2);
        }
    }

    fn kinds(a: &[Alert]) -> Vec<AlertKind> {
        a.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn samples_carry_bitrate_keyframe_interval_and_viewers() {
        let mut m = HealthMonitor::new(30 * 60 * 1000);
        run(&mut m, 0, 6, 800, 2, 1.0);
        let s = m.latest().unwrap();
        assert_eq!(s.t_ms, T0 + 6000);
        assert!((s.ingest_kbps - 800.0).abs() < 1.0, "{s:?}");
        assert_eq!(s.keyframe_interval_s, Some(2.0));
        assert_eq!((s.viewers, s.fps), (2, 30.0));
        assert_eq!(m.since(None).count(), 6);
        assert_eq!(m.since(Some(T0 + 4000)).count(), 2);
        assert_eq!(m.since(Some(T0 + 4500)).count(), 2);
        assert_eq!(m.since(Some(T0 + 6000)).count(), 0);
        assert!(m.alerts(T0 + 6000, RULES, true).is_empty());
    }

    #[test]
    fn a_long_tick_gap_is_averaged_not_counted_as_one_second() {
        let mut m = HealthMonitor::new(60_000);
        m.tick(T0, enc(1.0), 0);
        m.on_media(T0 + 500, 250_000, 0);
        let s = m.tick(T0 + 2000, enc(1.0), 0);
        assert_eq!(s.ingest_kbps, 1000.0);
    }

    #[test]
    fn only_the_window_is_kept() {
        let mut m = HealthMonitor::new(60_000);
        run(&mut m, 0, 200, 100, 2, 1.0);
        assert_eq!(m.since(None).count(), 60);
        assert_eq!(m.since(None).next().unwrap().t_ms, T0 + 141_000);
    }

    #[test]
    fn no_keyframe_alerts_after_two_segments_and_clears_on_one() {
        let mut m = HealthMonitor::new(60_000);
        run(&mut m, 0, 4, 800, 0, 1.0);
        assert!(
            m.alerts(T0 + 4000, RULES, true).is_empty(),
            "exactly two segments"
        );
        run(&mut m, 4, 2, 800, 0, 1.0);
        let a = m.alerts(T0 + 6000, RULES, true);
        assert_eq!(kinds(&a), [AlertKind::NoKeyframe]);
        assert_eq!(a[0].since_ms, T0 + 4000);
        assert!(
            a[0].message.contains("keyframe interval to 2 s"),
            "{}",
            a[0].message
        );
        // A keyframe arrives: the gap restarts from it.
        m.on_media(T0 + 6100, 100, 1);
        assert!(m.alerts(T0 + 9000, RULES, true).is_empty());
        assert_eq!(
            kinds(&m.alerts(T0 + 10_200, RULES, true)),
            [AlertKind::NoKeyframe]
        );
        // Not while nobody publishes; a reconnect starts the clock afresh.
        assert!(m.alerts(T0 + 10_200, RULES, false).is_empty());
        m.on_publisher_gone();
        m.on_media(T0 + 20_000, 100, 0);
        assert!(m.alerts(T0 + 23_000, RULES, true).is_empty());
        assert_eq!(
            kinds(&m.alerts(T0 + 24_100, RULES, true)),
            [AlertKind::NoKeyframe]
        );
    }

    #[test]
    fn a_slow_encoder_alerts_after_five_seconds_and_clears_when_it_catches_up() {
        let mut m = HealthMonitor::new(60_000);
        run(&mut m, 0, 3, 800, 1, 1.0);
        run(&mut m, 3, 4, 800, 1, 0.6);
        assert!(
            m.alerts(T0 + 7000, RULES, true).is_empty(),
            "four slow seconds"
        );
        run(&mut m, 7, 1, 800, 1, 0.6);
        let a = m.alerts(T0 + 8000, RULES, true);
        assert_eq!(kinds(&a), [AlertKind::EncoderSlow]);
        assert_eq!(a[0].since_ms, T0 + 3000);
        assert!(a[0].message.contains("0.60x"), "{}", a[0].message);
        run(&mut m, 8, 1, 800, 1, 1.0);
        assert!(m.alerts(T0 + 9000, RULES, true).is_empty());
        // Speed 0 is "not measured yet", not slow.
        let mut m = HealthMonitor::new(60_000);
        run(&mut m, 0, 8, 800, 1, 0.0);
        assert!(m.alerts(T0 + 8000, RULES, true).is_empty());
    }

    #[test]
    fn bitrate_far_from_the_top_rung_alerts_over_ten_seconds() {
        for (kbps, want) in [
            (1000, None),
            (2400, None),
            (2600, Some(AlertKind::BitrateHigh)),
            (600, None),
            (400, Some(AlertKind::BitrateLow)),
        ] {
            let mut m = HealthMonitor::new(60_000);
            run(&mut m, 0, 9, kbps, 1, 1.0);
            assert!(m.alerts(T0 + 9000, RULES, true).is_empty(), "{kbps}: 9 s");
            run(&mut m, 9, 1, kbps, 1, 1.0);
            let a = m.alerts(T0 + 10_000, RULES, true);
            assert_eq!(kinds(&a), want.into_iter().collect::<Vec<_>>(), "{kbps}");
            let mut no_top = RULES;
            no_top.top_kbps = None;
            assert!(m.alerts(T0 + 10_000, no_top, true).is_empty());
        }
    }

    #[test]
    fn the_ten_seconds_start_with_the_current_publisher() {
        let mut m = HealthMonitor::new(60_000);
        run(&mut m, 0, 20, 1000, 1, 1.0);
        m.on_publisher_gone();
        // Silence while reconnecting does not read as a starved stream.
        for s in 20..25 {
            m.tick(T0 + (s + 1) * 1000, enc(0.0), 0);
        }
        run(&mut m, 25, 5, 1000, 1, 1.0);
        assert!(m.alerts(T0 + 30_000, RULES, true).is_empty());
    }
}
