//! Chunk-parallel encoding of long videos, in four steps that are each a job any worker may
//! lease, so a worker that vanishes costs its running chunk, never the video:
//!
//! 1. **split** (the processing job): probe once, decide the ladder and the chunks
//!    ([`oxcast_media::chunks`]), queue one job per chunk and one for the audio.
//! 2. **chunk**: encode frames `[first, end)` for the whole ladder, starting on a forced
//!    closed-GOP keyframe; package the output moved to its place in the video (absolute
//!    `tfdt`, segment and sequence numbers carried on); check its frame count and boundaries;
//!    store it under the attempt's own folder and, once accepted, move it to the final keys.
//! 3. **audio**: encode the audio once for the whole file, so no priming gap or click sits at a
//!    join; staged as one file.
//! 4. **stitch** (queued by the last acceptance): check the chunks join up, cut the audio where
//!    the video's segments start, write the playlists and the MPD over the chunk segments (no
//!    re-encode, no concatenation) and publish.
//!
//! Staging keys live under `videos/{id}/chunks/`; the stitch removes what is left there before
//! publishing, so a published video holds exactly its published objects.

use std::path::Path;
use std::sync::Arc;

use oxcast_db::{Job, JobKind, NewTask, Published, TaskResult};
use oxcast_media::chunks::{self, Chunk, ChunkSegment, FrameRate};
use oxcast_media::cmaf::FIRST_SEGMENT_NUMBER;
use oxcast_media::ladder::Rung;
use oxcast_store::keys;
use oxcast_transcode::{EncodePlan, Probe, RenditionKind, Window};
use serde::{Deserialize, Serialize};

use crate::package::{package_rendition, Cuts, PackagedRendition, Placement};
use crate::pipeline::{fetch_source, write_manifests, POSTER_AT, POSTER_WIDTH};
use crate::runner::{Progress, WorkerContext};
use crate::{Error, Result};

/// Test hook: the chunk with this index encodes one frame short on its first attempt, which the
/// frame-count check must catch (and the retry then gets right).
const SHORT_CHUNK_HOOK: &str = "OXCAST_TEST_SHORT_CHUNK";

/// The encode settings decided once, from one probe, and shared by every job of the video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub rungs: Vec<Rung>,
    pub frame_rate: (u32, u32),
    pub preset: String,
    pub segment_s: f64,
    pub deinterlace: bool,
    pub tone_map: Option<String>,
    pub audio_stream: usize,
    pub audio_bitrate: u32,
    pub duration_s: f64,
    pub video_duration_s: f64,
    pub video_start_s: f64,
    /// Output frames expected from the whole source (the last chunk's check allows one more
    /// or one fewer: only the frame-rate filter knows the tail exactly).
    pub total_frames: u64,
    pub display: (u32, u32),
    pub poster_frame: u64,
}

impl Settings {
    fn rate(&self) -> FrameRate {
        FrameRate::new(self.frame_rate.0, self.frame_rate.1)
    }

    fn plan(&self, source: oxcast_transcode::Input, out: &Path) -> EncodePlan {
        EncodePlan {
            source,
            out_dir: out.to_path_buf(),
            rungs: self.rungs.clone(),
            audio: false,
            preset: self.preset.clone(),
            segment_s: self.segment_s,
            frame_rate: self.frame_rate,
            deinterlace: self.deinterlace,
            tone_map: self.tone_map.clone(),
            audio_stream: self.audio_stream,
            audio_bitrate: self.audio_bitrate,
            duration_s: self.duration_s,
            video_duration_s: self.video_duration_s,
            video_start_s: self.video_start_s,
            poster: None,
            window: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkTask {
    settings: Settings,
    chunk: Chunk,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AudioTask {
    settings: Settings,
}

/// What an accepted chunk made, recorded with its job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkResult {
    chunk: Chunk,
    settings: Settings,
    renditions: Vec<PackagedRendition>,
}

/// Where the accepted audio encode is staged.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AudioResult {
    key: String,
}

/// The jobs a long video becomes, or `None` when it is short enough for one job.
pub(crate) fn split(
    ctx: &WorkerContext,
    probe: &Probe,
    rungs: &[Rung],
    display: (u32, u32),
) -> Result<Option<Vec<NewTask>>> {
    let cfg = &ctx.config.transcode;
    let frame_rate = oxcast_transcode::output_frame_rate(probe.frame_rate_ratio);
    let rate = FrameRate::new(frame_rate.0, frame_rate.1);
    if probe.video_duration_s <= cfg.chunk_s {
        return Ok(None);
    }
    let total_frames = rate.frames_in(probe.video_duration_s);
    let plan = chunks::plan_chunks(
        total_frames,
        rate,
        cfg.segment_s,
        cfg.chunk_s,
        FIRST_SEGMENT_NUMBER,
    );
    if plan.len() < 2 {
        return Ok(None);
    }
    let settings = Settings {
        rungs: rungs.to_vec(),
        frame_rate,
        preset: cfg.preset.clone(),
        segment_s: cfg.segment_s,
        deinterlace: probe.interlaced,
        tone_map: probe.is_hdr().then(|| probe.color_transfer.clone()),
        audio_stream: probe.audio_index,
        audio_bitrate: cfg.audio_bitrate,
        duration_s: probe.duration_s,
        video_duration_s: probe.video_duration_s,
        video_start_s: probe.video_start_s,
        total_frames,
        display,
        poster_frame: rate.frames_in(probe.duration_s * POSTER_AT),
    };
    let mut tasks = Vec::with_capacity(plan.len() + 1);
    // The audio first: it is one long job, so it should not wait behind the chunks.
    if probe.has_audio {
        tasks.push(NewTask {
            kind: JobKind::EncodeAudio,
            chunk: None,
            payload: to_json(&AudioTask {
                settings: settings.clone(),
            }),
        });
    }
    for chunk in plan {
        tasks.push(NewTask {
            kind: JobKind::EncodeChunk,
            chunk: Some(chunk.index),
            payload: to_json(&ChunkTask {
                settings: settings.clone(),
                chunk,
            }),
        });
    }
    Ok(Some(tasks))
}

/// A packaged rendition's segments as the chunk checks see them.
fn timeline(p: &PackagedRendition) -> Vec<ChunkSegment> {
    p.segments
        .iter()
        .map(|g| ChunkSegment {
            number: g.number,
            start: g.start,
            duration: g.duration,
            samples: g.samples,
        })
        .collect()
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("task types serialise")
}

fn payload<T: serde::de::DeserializeOwned>(job: &Job) -> Result<T> {
    let text = job.payload.as_deref().unwrap_or_default();
    serde_json::from_str(text).map_err(|e| {
        Error::Rejected(format!(
            "{} job {} has a bad payload: {e}",
            job.kind.as_str(),
            job.id
        ))
    })
}

/// The folder a chunk's attempts stage under (`chunks/c3`), and this attempt's (`…/a2`).
fn chunk_folder(chunk: u32) -> String {
    format!("chunks/c{chunk}")
}

/// Removes what an attempt that lost its lease staged (another worker owns the step now, and
/// a stitch may already have published without it).
pub(crate) async fn discard_attempt(ctx: &WorkerContext, job: &Job) {
    let folder = match (job.kind, job.chunk) {
        (JobKind::EncodeChunk, Some(c)) => format!("{}/a{}", chunk_folder(c), job.attempt),
        (JobKind::EncodeAudio, _) => format!("chunks/audio/a{}", job.attempt),
        _ => return,
    };
    if let Ok(prefix) = keys::video_object(job.video_id, &folder) {
        match ctx.store.delete_prefix(&prefix).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "removed what the lost attempt staged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not remove a lost attempt's staging"),
        }
    }
}

/// Encodes, packages, checks and promotes one chunk; returns its result for the record.
pub(crate) async fn encode_chunk(
    ctx: &WorkerContext,
    job: &Job,
    work: &Path,
    progress: &Arc<Progress>,
) -> Result<String> {
    let task: ChunkTask = payload(job)?;
    let (s, chunk) = (&task.settings, &task.chunk);
    let rate = s.rate();
    let folder = chunk_folder(chunk.index);
    // What a dead attempt of this chunk staged goes first.
    ctx.store
        .delete_prefix(&keys::video_object(job.video_id, &folder)?)
        .await?;
    let staging = format!("{folder}/a{}", job.attempt);

    let source = fetch_source(ctx, job, work).await?;
    progress.set(0.02);
    let mut end_frame = chunk.end_frame;
    if job.attempt == 1
        && std::env::var(SHORT_CHUNK_HOOK)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            == Some(chunk.index)
    {
        tracing::warn!("test hook: encoding this chunk one frame short");
        end_frame = end_frame.map(|e| e - 1);
    }
    let mut plan = s.plan(source, &work.join("out"));
    let frames = end_frame
        .unwrap_or(s.total_frames)
        .saturating_sub(chunk.first_frame);
    plan.duration_s = rate.time_of(frames).max(0.001);
    plan.window = Some(Window {
        first_frame: chunk.first_frame,
        end_frame,
        keyframes: chunk.keyframes.clone(),
    });
    let poster = work.join("poster.jpg");
    let has_poster =
        s.poster_frame >= chunk.first_frame && chunk.end_frame.is_none_or(|e| s.poster_frame < e);
    if has_poster {
        plan.poster = Some(oxcast_transcode::Poster {
            at_s: rate.time_of(s.poster_frame - chunk.first_frame),
            max_width: POSTER_WIDTH,
            path: poster.clone(),
        });
    }
    let p = progress.clone();
    let encoded = oxcast_transcode::encode_ladder(&ctx.config.transcode.ffmpeg, &plan, &move |f| {
        p.set(0.02 + f * 0.9)
    })
    .await?;

    let mut renditions = Vec::new();
    for r in encoded
        .renditions
        .iter()
        .filter(|r| r.kind == RenditionKind::Video)
    {
        let place = Placement {
            folder: format!("{staging}/{}", r.name),
            first_number: chunk.first_segment,
            shift_frames: chunk.first_frame,
            frame_rate: s.frame_rate,
            // One fragment per segment (one GOP each), numbered on across chunks.
            sequence_offset: u32::try_from(chunk.first_segment - FIRST_SEGMENT_NUMBER)
                .unwrap_or(u32::MAX),
        };
        let packaged = package_rendition(
            &ctx.store,
            job.video_id,
            &r.name,
            &r.path,
            &Cuts::Target(s.segment_s),
            &place,
        )
        .await?;
        let frame_duration = place.frame_duration(packaged.track.timescale).unwrap_or(0);
        let segments = timeline(&packaged);
        // A chunk that is not exactly the stretch it stands for is retried, never published.
        // The source's tail is only an estimate (a probed duration): a second's slack there.
        let tail_tolerance = rate.fps().ceil() as u64;
        chunks::check_chunk_output(
            chunk,
            &segments,
            frame_duration,
            s.total_frames,
            tail_tolerance,
        )
        .map_err(|e| {
            Error::ChunkCheck(format!("{} rendition {}: {e}", job.kind.as_str(), r.name))
        })?;
        renditions.push(packaged);
    }
    let counts: Vec<u64> = renditions
        .iter()
        .map(|r| r.segments.iter().map(|g| g.samples).sum())
        .collect();
    if counts.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::ChunkCheck(format!(
            "chunk {}: renditions disagree on the frame count: {counts:?}",
            chunk.index
        )));
    }
    progress.set(0.95);

    // Accepted by its checks: move it to the keys the manifests name. The lease is checked
    // first, so an attempt that lost its chunk to another worker does not overwrite it.
    let lease_ms = (ctx.config.worker.lease_s * 1000) as i64;
    if !ctx
        .db
        .heartbeat_job(job, ctx.clock.now_ms(), lease_ms)
        .await?
    {
        return Err(Error::LeaseLost);
    }
    for r in &renditions {
        let from =
            |name: &str| keys::video_object(job.video_id, &format!("{staging}/{}/{name}", r.name));
        let to = |name: &str| keys::video_object(job.video_id, &format!("{}/{name}", r.name));
        for g in &r.segments {
            let name = format!("seg-{}.m4s", g.number);
            ctx.store.rename(&from(&name)?, &to(&name)?).await?;
        }
        if chunk.index == 0 {
            ctx.store
                .rename(&from("init.mp4")?, &to("init.mp4")?)
                .await?;
        }
    }
    if has_poster && tokio::fs::try_exists(&poster).await? {
        ctx.store
            .put_file(&keys::video_object(job.video_id, "poster.jpg")?, &poster)
            .await?;
    }
    // The other chunks' init segments (the same encoder settings, so the same init) and
    // anything else staged go.
    ctx.store
        .delete_prefix(&keys::video_object(job.video_id, &folder)?)
        .await?;
    Ok(to_json(&ChunkResult {
        chunk: chunk.clone(),
        settings: s.clone(),
        renditions,
    }))
}

/// Encodes the whole file's audio once and stages it for the stitch.
pub(crate) async fn encode_audio(
    ctx: &WorkerContext,
    job: &Job,
    work: &Path,
    progress: &Arc<Progress>,
) -> Result<String> {
    let task: AudioTask = payload(job)?;
    ctx.store
        .delete_prefix(&keys::video_object(job.video_id, "chunks/audio")?)
        .await?;
    let source = fetch_source(ctx, job, work).await?;
    let mut plan = task.settings.plan(source, &work.join("out"));
    plan.rungs.clear();
    plan.audio = true;
    let p = progress.clone();
    let encoded = oxcast_transcode::encode_ladder(&ctx.config.transcode.ffmpeg, &plan, &move |f| {
        p.set(f * 0.9)
    })
    .await?;
    let audio = encoded
        .renditions
        .iter()
        .find(|r| r.kind == RenditionKind::Audio)
        .ok_or_else(|| Error::Rejected("the audio encode made no audio".into()))?;
    let key = keys::video_object(
        job.video_id,
        &format!("chunks/audio/a{}/audio.mp4", job.attempt),
    )?;
    ctx.store.put_file(&key, &audio.path).await?;
    Ok(to_json(&AudioResult {
        key: key.to_string(),
    }))
}

/// Joins the accepted chunks and the audio into the published video.
pub(crate) async fn stitch(
    ctx: &WorkerContext,
    job: &Job,
    work: &Path,
    progress: &Arc<Progress>,
) -> Result<Published> {
    let results = ctx.db.task_results(job.video_id).await?;
    let mut chunks_done: Vec<ChunkResult> = Vec::new();
    let mut audio: Option<AudioResult> = None;
    for TaskResult { kind, result, .. } in &results {
        let bad = |e: serde_json::Error| {
            Error::Rejected(format!(
                "a recorded {} result is unreadable: {e}",
                kind.as_str()
            ))
        };
        match kind {
            JobKind::EncodeChunk => chunks_done.push(serde_json::from_str(result).map_err(bad)?),
            JobKind::EncodeAudio => audio = Some(serde_json::from_str(result).map_err(bad)?),
            _ => {}
        }
    }
    chunks_done.sort_by_key(|c| c.chunk.index);
    let Some(first) = chunks_done.first() else {
        return Err(Error::Rejected("no accepted chunks to stitch".into()));
    };
    let settings = first.settings.clone();
    if chunks_done
        .iter()
        .enumerate()
        .any(|(i, c)| c.chunk.index as usize != i)
    {
        return Err(Error::ChunkCheck(format!(
            "chunks missing: have {:?}",
            chunks_done
                .iter()
                .map(|c| c.chunk.index)
                .collect::<Vec<_>>()
        )));
    }

    // One rendition per rung, its segments the chunks' in order; they must join up exactly.
    let mut video: Vec<(PackagedRendition, Rung)> = Vec::new();
    for (i, rung) in settings.rungs.iter().enumerate() {
        let mut whole =
            first.renditions.get(i).cloned().ok_or_else(|| {
                Error::ChunkCheck(format!("chunk 0 has no {} rendition", rung.name))
            })?;
        whole.segments.clear();
        for c in &chunks_done {
            let r = c
                .renditions
                .iter()
                .find(|r| r.name == rung.name)
                .ok_or_else(|| {
                    Error::ChunkCheck(format!(
                        "chunk {} has no {} rendition",
                        c.chunk.index, rung.name
                    ))
                })?;
            whole.segments.extend(r.segments.iter().cloned());
        }
        let segments = timeline(&whole);
        chunks::check_continuous(&segments, FIRST_SEGMENT_NUMBER)
            .map_err(|e| Error::ChunkCheck(format!("rendition {}: {e}", rung.name)))?;
        video.push((whole, rung.clone()));
    }
    progress.set(0.3);

    // The audio, cut where the video's segments start.
    let audio_packaged = match &audio {
        None => None,
        Some(a) => {
            let local = work.join("audio.mp4");
            ctx.store
                .download(&oxcast_store::Key::from(a.key.as_str()), &local)
                .await?;
            let cuts = Cuts::At(video[0].0.cut_times());
            Some(
                package_rendition(
                    &ctx.store,
                    job.video_id,
                    oxcast_transcode::AUDIO_NAME,
                    &local,
                    &cuts,
                    &Placement::whole(oxcast_transcode::AUDIO_NAME),
                )
                .await?,
            )
        }
    };
    if let Some(a) = &audio_packaged {
        if a.segments.len() != video[0].0.segments.len() {
            return Err(Error::ChunkCheck(format!(
                "the audio has {} segments, the video {}",
                a.segments.len(),
                video[0].0.segments.len()
            )));
        }
    }
    progress.set(0.8);
    let published =
        write_manifests(ctx, job, &video, audio_packaged.as_ref(), settings.display).await?;
    // Nothing staged outlives the publish (on the local folder, not even its empty folders).
    let staging = keys::video_object(job.video_id, "chunks")?;
    let removed = ctx.store.delete_prefix(&staging).await?;
    if let Some(dir) = ctx.store.local_path(&staging) {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
    tracing::info!(
        chunks = chunks_done.len(),
        removed_staging = removed,
        "stitched"
    );
    Ok(published)
}
