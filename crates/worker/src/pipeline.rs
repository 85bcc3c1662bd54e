//! One attempt at processing one video: source → probe → encode → package → manifests → poster.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use oxcast_db::{Job, Published, Rendition};
use oxcast_media::{dash, hls, ladder};
use oxcast_store::keys;
use oxcast_transcode::{EncodePlan, Input, RenditionKind};

use crate::package::{package_rendition, Cuts, PackagedRendition, Placement};
use crate::runner::{Progress, WorkerContext};
use crate::{Error, Result};

/// Share of the progress bar spent encoding; packaging and the poster take the rest.
const ENCODE_SHARE: f64 = 0.9;

/// How a processing job ended well: published whole, or split into chunk jobs.
pub(crate) enum Processed {
    Published(Published),
    Split(Vec<oxcast_db::NewTask>),
}

pub(crate) async fn process(
    ctx: &WorkerContext,
    job: &Job,
    work: &Path,
    progress: &Arc<Progress>,
) -> Result<Processed> {
    let cfg = &ctx.config;
    let mut step = std::time::Instant::now();
    let mut lap = |name: &str| {
        tracing::info!(
            step = name,
            secs = step.elapsed().as_secs_f64(),
            "step done"
        );
        step = std::time::Instant::now();
    };
    let source = fetch_source(ctx, job, work).await?;
    lap("fetch");
    progress.set(0.01);

    let probe = oxcast_transcode::probe(&cfg.transcode.ffprobe, &source).await?;
    tracing::info!(?probe, "probed");
    check_limits(ctx, &probe)?;
    lap("probe");

    // Anamorphic sources are laddered at their display aspect: square pixels in every rung.
    let (width, height) = ladder::square_pixel_size(probe.width, probe.height, probe.sar);
    let src = ladder::SourceVideo {
        width,
        height,
        rotation: probe.rotation,
    };
    let poster = work.join("poster.jpg");
    let rungs = ladder::build_ladder(&src, &ladder_spec(&cfg.transcode.ladder));
    if rungs.is_empty() {
        return Err(Error::Rejected("no rendition fits this source".into()));
    }
    let (display_w, display_h) = ladder::display_size(&src);
    if let Some(tasks) = crate::chunked::split(ctx, &probe, &rungs, (display_w, display_h))? {
        // Anything an earlier, interrupted attempt stored is replaced, never mixed in; no
        // chunk job exists yet to have written anything.
        ctx.store
            .delete_prefix(&keys::video_prefix(job.video_id))
            .await?;
        tracing::info!(chunks = tasks.len(), "split into chunk jobs");
        return Ok(Processed::Split(tasks));
    }
    let plan = EncodePlan {
        source: source.clone(),
        out_dir: work.join("out"),
        rungs,
        audio: probe.has_audio,
        preset: cfg.transcode.preset.clone(),
        segment_s: cfg.transcode.segment_s,
        frame_rate: oxcast_transcode::output_frame_rate(probe.frame_rate_ratio),
        deinterlace: probe.interlaced,
        tone_map: probe.is_hdr().then(|| probe.color_transfer.clone()),
        audio_stream: probe.audio_index,
        audio_bitrate: cfg.transcode.audio_bitrate,
        duration_s: probe.duration_s,
        video_duration_s: probe.video_duration_s,
        video_start_s: probe.video_start_s,
        poster: Some(oxcast_transcode::Poster {
            at_s: probe.duration_s * POSTER_AT,
            max_width: POSTER_WIDTH,
            path: poster.clone(),
        }),
        window: None,
    };
    let p = progress.clone();
    let encoded = oxcast_transcode::encode_ladder(&cfg.transcode.ffmpeg, &plan, &move |f| {
        p.set(0.02 + f * (ENCODE_SHARE - 0.02))
    })
    .await?;
    lap("encode");

    // Anything an earlier, interrupted attempt stored is replaced, never mixed in.
    let prefix = keys::video_prefix(job.video_id);
    let stale = ctx.store.delete_prefix(&prefix).await?;
    if stale > 0 {
        tracing::info!(stale, "removed objects of an earlier attempt");
    }

    let mut video: Vec<(PackagedRendition, ladder::Rung)> = Vec::new();
    let mut audio = None;
    let count = encoded.renditions.len() as f64;
    // Video first (the encoder lists it first): audio then cuts where the video does.
    for (i, r) in encoded.renditions.iter().enumerate() {
        let cuts = match (r.kind, video.first()) {
            (RenditionKind::Audio, Some((v, _))) => Cuts::At(v.cut_times()),
            _ => Cuts::Target(cfg.transcode.segment_s),
        };
        let packaged = package_rendition(
            &ctx.store,
            job.video_id,
            &r.name,
            &r.path,
            &cuts,
            &Placement::whole(&r.name),
        )
        .await?;
        match r.kind {
            RenditionKind::Video => video.push((packaged, r.rung.clone().expect("video rung"))),
            RenditionKind::Audio => audio = Some(packaged),
        }
        progress.set(ENCODE_SHARE + 0.08 * (i + 1) as f64 / count);
    }
    let published =
        write_manifests(ctx, job, &video, audio.as_ref(), (display_w, display_h)).await?;
    lap("package");

    if tokio::fs::try_exists(&poster).await? {
        ctx.store
            .put_file(&keys::video_object(job.video_id, "poster.jpg")?, &poster)
            .await?;
    } else {
        tracing::warn!("ffmpeg produced no poster frame");
    }
    progress.set(0.99);
    lap("poster");
    Ok(Processed::Published(published))
}

/// Where the poster is taken (a share of the duration) and its largest width.
pub(crate) const POSTER_AT: f64 = 0.1;
pub(crate) const POSTER_WIDTH: u32 = 1280;

/// Writes every rendition's media playlist, the master playlist and the MPD over packaged
/// renditions, and says what is published: the last step before `ready`, for a whole-file
/// encode and for stitched chunks alike.
pub(crate) async fn write_manifests(
    ctx: &WorkerContext,
    job: &Job,
    video: &[(PackagedRendition, ladder::Rung)],
    audio: Option<&PackagedRendition>,
    (width, height): (u32, u32),
) -> Result<Published> {
    for p in video.iter().map(|(p, _)| p).chain(audio) {
        put(
            ctx,
            job,
            &format!("{}/index.m3u8", p.name),
            media_playlist(p),
        )
        .await?;
    }
    put(ctx, job, "master.m3u8", master_playlist(video, audio)).await?;
    put(ctx, job, "manifest.mpd", mpd(video, audio)).await?;
    let duration_s = video.first().map_or(0.0, |(p, _)| p.duration_s());
    let audio_peak = audio.map_or(0, |a| a.peak_bandwidth());
    Ok(Published {
        duration_s,
        width,
        height,
        renditions: video
            .iter()
            .map(|(p, rung)| Rendition {
                name: rung.name.clone(),
                width: rung.width,
                height: rung.height,
                bandwidth: p.peak_bandwidth() + audio_peak,
                codecs: match audio {
                    Some(a) => format!("{},{}", p.track.codec, a.track.codec),
                    None => p.track.codec.clone(),
                },
            })
            .collect(),
    })
}

async fn put(ctx: &WorkerContext, job: &Job, name: &str, text: String) -> Result<()> {
    let key = keys::video_object(job.video_id, name)?;
    ctx.store.put(&key, Bytes::from(text)).await?;
    Ok(())
}

/// The uploaded source as ffmpeg input: the parts read in place when the store is local,
/// otherwise concatenated, in order, into a scratch file.
pub(crate) async fn fetch_source(ctx: &WorkerContext, job: &Job, work: &Path) -> Result<Input> {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt;
    let upload = ctx
        .db
        .upload_for_video(job.video_id)
        .await?
        .ok_or(Error::NoSource(job.video_id))?;
    // Sent straight to the bucket: one object. A scratch copy rather than ranged reads: ffmpeg
    // reads the source several times (probe, audio, each chunk of each rung) and seeks in it
    // (an MP4's index may sit at its end), and it may only read a local file
    // (-protocol_whitelist file), so one sequential download is the cheapest and safest.
    if let Some(s3) = ctx.db.s3_upload(upload.id).await? {
        let dest = work.join("source");
        let size = ctx
            .store
            .download(&oxcast_store::Key::from(s3.object_key.as_str()), &dest)
            .await?;
        check_size(size, upload.size)?;
        return Ok(Input::File(dest));
    }
    // The parts' records name the objects that count (one per PUT; see oxcast_store::keys).
    let parts = ctx.db.parts(upload.id).await?;
    let keys: Vec<_> = parts
        .iter()
        .map(|p| keys::upload_part(upload.id, p.part_number, p.object.as_deref()))
        .collect();
    if keys.len() != upload.part_count() as usize {
        return Err(Error::Rejected(format!(
            "the upload has {} of its {} parts",
            keys.len(),
            upload.part_count()
        )));
    }
    let local: Option<Vec<_>> = keys.iter().map(|k| ctx.store.local_path(k)).collect();
    if let Some(input) = local.and_then(Input::parts) {
        let mut size = 0;
        for key in &keys {
            size += ctx.store.head(key).await?.map_or(0, |m| m.size);
        }
        check_size(size, upload.size)?;
        return Ok(input);
    }
    let dest = work.join("source");
    let mut out = tokio::fs::File::create(&dest).await?;
    for key in &keys {
        let mut body = ctx.store.get(key, None).await?.body;
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk?).await?;
        }
    }
    out.flush().await?;
    check_size(out.metadata().await?.len(), upload.size)?;
    Ok(Input::File(dest))
}

fn check_size(stored: u64, expected: u64) -> Result<()> {
    if stored != expected {
        return Err(Error::Rejected(format!(
            "stored upload is {stored} bytes, expected {expected}"
        )));
    }
    Ok(())
}

fn check_limits(ctx: &WorkerContext, p: &oxcast_transcode::Probe) -> Result<()> {
    let l = &ctx.config.limits;
    if p.duration_s > l.max_duration_s {
        return Err(Error::Rejected(format!(
            "the video is {:.0} s long; the limit is {:.0} s",
            p.duration_s, l.max_duration_s
        )));
    }
    if p.width > l.max_width || p.height > l.max_height {
        return Err(Error::Rejected(format!(
            "the picture is {}x{}; the limit is {}x{}",
            p.width, p.height, l.max_width, l.max_height
        )));
    }
    Ok(())
}

fn media_playlist(p: &PackagedRendition) -> String {
    let ts = p.timescale();
    let segments = p
        .segments
        .iter()
        .map(|s| hls::MediaSegment {
            uri: format!("seg-{}.m4s", s.number),
            duration: s.duration as f64 / ts,
            discontinuity: false,
        })
        .collect();
    hls::MediaPlaylist::vod("init.mp4", segments).render()
}

fn master_playlist(
    video: &[(PackagedRendition, oxcast_media::ladder::Rung)],
    audio: Option<&PackagedRendition>,
) -> String {
    hls::Ladder {
        audio: audio.map(|a| hls::LadderAudio {
            uri: format!("{}/index.m3u8", a.name),
            codecs: a.track.codec.clone(),
            channels: a.track.channels,
            peak: a.peak_bandwidth(),
            average: Some(a.average_bandwidth()),
        }),
        video: video
            .iter()
            .map(|(p, rung)| hls::LadderVideo {
                uri: format!("{}/index.m3u8", p.name),
                codecs: p.track.codec.clone(),
                width: rung.width,
                height: rung.height,
                frame_rate: p.frame_rate(),
                peak: p.peak_bandwidth(),
                average: Some(p.average_bandwidth()),
            })
            .collect(),
        independent_segments: true,
        // Unknown: x264 keeps a source's CEA-608 captions, and players find them.
        captions: None,
    }
    .render()
}

fn representation(p: &PackagedRendition) -> dash::Representation {
    let timeline: Vec<(u64, u64)> = p.segments.iter().map(|s| (s.start, s.duration)).collect();
    dash::Representation {
        id: p.name.clone(),
        bandwidth: p.peak_bandwidth(),
        codecs: p.track.codec.clone(),
        width: p.track.width,
        height: p.track.height,
        frame_rate: p.track.width.and(p.frame_rate()).map(dash_frame_rate),
        audio_sampling_rate: p.track.sample_rate,
        audio_channels: p.track.channels,
        timescale: p.track.timescale,
        initialization: format!("{}/init.mp4", p.name),
        media: format!("{}/seg-$Number$.m4s", p.name),
        start_number: p.segments.first().map_or(1, |s| s.number),
        timeline: dash::compress_timeline(&timeline),
        presentation_time_offset: 0,
    }
}

/// `30`, or `30000/1001` for NTSC-style rates.
fn dash_frame_rate(fps: f64) -> String {
    let rounded = fps.round();
    if (fps - rounded).abs() < 0.01 {
        format!("{rounded}")
    } else {
        format!("{}/1001", (fps * 1001.0).round())
    }
}

fn mpd(
    video: &[(PackagedRendition, oxcast_media::ladder::Rung)],
    audio: Option<&PackagedRendition>,
) -> String {
    let mut sets = vec![dash::AdaptationSet {
        id: 0,
        content_type: dash::ContentType::Video,
        mime_type: "video/mp4".into(),
        segment_alignment: true,
        representations: video.iter().map(|(p, _)| representation(p)).collect(),
    }];
    if let Some(a) = audio {
        sets.push(dash::AdaptationSet {
            id: 1,
            content_type: dash::ContentType::Audio,
            mime_type: "audio/mp4".into(),
            segment_alignment: true,
            representations: vec![representation(a)],
        });
    }
    let duration_s = video.first().map_or(0.0, |(p, _)| p.duration_s());
    dash::StaticMpd {
        duration_s,
        min_buffer_time_s: 2.0,
        adaptation_sets: sets,
    }
    .render()
}

/// The configured ladder as the ladder maths takes it (bits/s).
fn ladder_spec(ladder: &[oxcast_base::config::LadderRung]) -> ladder::LadderSpec {
    ladder::LadderSpec {
        rungs: ladder
            .iter()
            .map(|r| (r.short_side, r.kbps.saturating_mul(1000)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_default_ladder_is_the_standard_one() {
        let defaults = oxcast_base::config::LadderRung::defaults();
        assert_eq!(ladder_spec(&defaults), ladder::LadderSpec::default());
    }

    #[test]
    fn dash_frame_rates() {
        assert_eq!(dash_frame_rate(30.0), "30");
        assert_eq!(dash_frame_rate(29.97003), "30000/1001");
        assert_eq!(dash_frame_rate(25.0001), "25");
    }
}
