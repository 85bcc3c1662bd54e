//! A rendition's packager: reads the encoder's fMP4 pipe, splits it into init and CMAF chunks,
//! hands them to the session's state (which groups them into parts and segments) and queues
//! what was finished for the store, in order, off the listing path.

use std::sync::Arc;

use bytes::Bytes;
use oxcast_base::clock::SharedClock;
use oxcast_media::mp4::{Fmp4Splitter, SplitEvent};
use oxcast_store::{keys, Key, Store};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use oxcast_base::SessionId;
use oxcast_db::{Db, SegmentRow};
use oxcast_live_core::state::Added;

use crate::fence::Fence;
use crate::publish::{Signal, TOPIC};
use crate::session::Session;

pub(crate) enum Write {
    Put(Key, Bytes),
    /// Put, then signal the change to other nodes.
    Publish(Key, Bytes, Signal),
    Signal(Signal),
    /// Records a segment stored just before in the session's index (what an encoder that
    /// takes the session over continues from).
    Index(SessionId, SegmentRow),
    Flush(oneshot::Sender<()>),
}

/// Queues what a rendition's packager finished: its parts and segments, each segment followed
/// by its index row. `parts: false` when the parts are stored already.
pub(crate) async fn queue_added(session: &Session, rendition: &str, added: Added, parts: bool) {
    let (video, id) = {
        let st = session.state.lock().expect("state");
        (st.video_id, st.session_id)
    };
    let key = |file: &str| keys::video_object(video, &format!("{rendition}/{file}")).ok();
    if parts {
        for (file, data) in added.parts {
            if let Some(k) = key(&file) {
                let _ = session.writer.send(Write::Put(k, data)).await;
            }
        }
    }
    for c in added.segments {
        let Some(k) = key(&c.name) else { continue };
        let _ = session.writer.send(Write::Put(k, c.data)).await;
        let s = c.segment;
        let row = SegmentRow {
            rendition: rendition.to_string(),
            number: s.number,
            epoch: s.epoch,
            start_ticks: s.start_ticks,
            ticks: s.ticks,
            duration_s: s.duration_s,
            discontinuity: s.discontinuity,
            pdt_ms: s.pdt_ms,
            bytes: s.bytes,
        };
        let _ = session.writer.send(Write::Index(id, row)).await;
    }
}

/// Stores objects in order, off the listing path, and signals what other nodes may now read.
/// A signal is sent only once everything queued before it is stored. Nothing is written while
/// the session's [`Fence`] says no, and nothing at all once it is lost.
pub(crate) async fn write_objects(
    store: Store,
    db: Db,
    mut rx: mpsc::Receiver<Write>,
    fence: Fence,
) {
    let mut fenced_off = false;
    let mut queued = std::collections::VecDeque::new();
    loop {
        if queued.is_empty() {
            match rx.recv().await {
                Some(w) => queued.push_back(w),
                None => return,
            }
        }
        // Behind (a slow bucket): a playlist that a newer one of the same rendition follows
        // need not be written at all.
        while let Ok(w) = rx.try_recv() {
            queued.push_back(w);
        }
        let Some(w) = queued.pop_front() else {
            continue;
        };
        if !matches!(w, Write::Flush(_)) && !fence.ready().await {
            if !fenced_off {
                fenced_off = true;
                tracing::info!("this session is no longer written here (its lease went to another node, or it was handed off): its writes are dropped");
                metrics::counter!("oxcast_live_fenced_sessions_total").increment(1);
            }
            continue;
        }
        match w {
            Write::Put(key, data) => {
                put(&store, &key, data).await;
            }
            Write::Publish(key, data, signal) => {
                let superseded = queued
                    .iter()
                    .any(|l| matches!(l, Write::Publish(k, ..) if *k == key));
                if !superseded && put(&store, &key, data).await {
                    notify(&db, &signal).await;
                }
            }
            Write::Signal(signal) => notify(&db, &signal).await,
            Write::Index(session, row) => {
                if let Err(e) = db.add_live_segment(session, &row).await {
                    // Only a takeover reads it; that one then cuts the session shorter.
                    tracing::warn!(error = %e, segment = row.number, "indexing a live segment failed");
                }
            }
            Write::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

async fn put(store: &Store, key: &Key, data: Bytes) -> bool {
    match store.put(key, data).await {
        Ok(_) => {
            metrics::counter!("oxcast_live_objects_written_total").increment(1);
            true
        }
        Err(e) => {
            tracing::error!(%key, error = %e, "storing a live object failed");
            false
        }
    }
}

async fn notify(db: &Db, signal: &Signal) {
    if let Err(e) = db.notify(TOPIC, &signal.payload()).await {
        // Other nodes poll as well: they see the change a little later.
        tracing::warn!(error = %e, "signalling a live change failed");
    }
}

pub(crate) async fn package(
    session: Arc<Session>,
    name: String,
    opening: tokio::task::JoinHandle<std::io::Result<std::fs::File>>,
    epoch: u32,
    wall_start_ms: i64,
    clock: SharedClock,
) {
    let mut rx = match opening.await {
        Ok(Ok(f)) => match tokio::net::unix::pipe::Receiver::from_file(f) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(error = %e, "encoder output is not a pipe");
                return;
            }
        },
        _ => return,
    };
    let video = session.state.lock().expect("state").video_id;
    let mut splitter = Fmp4Splitter::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first_bdt: Option<u64> = None;
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the encoder output failed");
                break;
            }
        };
        let events = match splitter.push(&buf[..n]) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!(error = %e, "the encoder output is not valid fMP4");
                break;
            }
        };
        for ev in events {
            let mut writes = Vec::new();
            let mut done = None;
            let listed;
            // The master lists renditions once each has its init; the MPD changes per segment.
            let manifests;
            {
                let mut st = session.state.lock().expect("state");
                let (seg_s, part_target) = (st.segment_s, st.part_target());
                let Some(r) = st.rendition(&name) else {
                    continue;
                };
                match ev {
                    SplitEvent::Init { bytes, track } => {
                        let data = Bytes::from(bytes);
                        let file = r.set_init(epoch, track, data.clone());
                        writes.push((file, data));
                        listed = true;
                        manifests = true;
                    }
                    SplitEvent::Fragment { bytes, fragment } => {
                        let base = *first_bdt.get_or_insert(fragment.base_media_decode_time);
                        let ts = f64::from(r.track.as_ref().map_or(1, |t| t.timescale.max(1)));
                        let video_rendition = r.rung.is_some();
                        let added =
                            r.add_chunk(&fragment, &bytes, seg_s, part_target, wall_start_ms);
                        listed = !added.is_empty();
                        let end_s = (fragment.base_media_decode_time + fragment.duration - base)
                            as f64
                            / ts;
                        let lat = (clock.now_ms() - wall_start_ms) as f64 / 1000.0 - end_s;
                        if video_rendition && !added.parts.is_empty() {
                            st.part_latency.push(lat);
                            metrics::histogram!("oxcast_live_part_latency_seconds").record(lat);
                        }
                        if video_rendition && !added.segments.is_empty() {
                            st.segment_latency.push(lat);
                            metrics::histogram!("oxcast_live_segment_latency_seconds").record(lat);
                        }
                        manifests = !added.segments.is_empty();
                        done = Some(added);
                    }
                }
            }
            if listed {
                session.bump();
            } else {
                session.bump_grown();
            }
            for (file, data) in writes {
                if let Ok(k) = keys::video_object(video, &format!("{name}/{file}")) {
                    let _ = session.writer.send(Write::Put(k, data)).await;
                }
            }
            if let Some(added) = done {
                queue_added(&session, &name, added, true).await;
            }
            if listed {
                session.publish_media(&name).await;
            }
            if manifests {
                session.publish_manifests(clock.now_ms()).await;
            }
        }
    }
    // The epoch's last partial segment is closed here so it is listed at once.
    let done = {
        let mut st = session.state.lock().expect("state");
        let Some(r) = st.rendition(&name) else { return };
        r.close(wall_start_ms)
    };
    if !done.is_empty() {
        session.bump();
        queue_added(&session, &name, done, true).await;
    }
}
