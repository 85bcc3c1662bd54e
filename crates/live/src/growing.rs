//! Segments sent while they are written, for low-latency DASH.
//!
//! A low-latency DASH client asks for a segment as soon as its first chunk (part) exists
//! (`availabilityTimeOffset`) and reads it with chunked transfer as the encoder produces it.
//! The segment's bytes are the concatenation of its parts, so the response streams what the
//! session holds of the open segment, then each new part as it is added, and ends when the
//! segment closes. A response that cannot be completed (the session ends, or it takes far too
//! long) ends with an error instead of a short body, so that no cache keeps half a segment.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::session::Session;
use crate::state::Progress;

/// An object of a live session: whole, or a segment still being written.
pub enum LiveObject {
    Whole(Bytes),
    Growing(BoxStream<'static, std::io::Result<Bytes>>),
}

/// The number of `seg-N.m4s`.
pub(crate) fn segment_number(file: &str) -> Option<u64> {
    file.strip_prefix("seg-")?
        .strip_suffix(".m4s")?
        .parse()
        .ok()
}

fn cut_short(why: &str) -> std::io::Error {
    std::io::Error::other(format!("live segment not completed: {why}"))
}

/// Segment `number` of `rendition` as a stream, if it is in progress or about to start (held
/// until it starts, at most `hold`); `None` when it is not (complete or unknown: read it the
/// usual way).
pub(crate) async fn open_segment(
    s: Arc<Session>,
    rendition: String,
    number: u64,
    hold: Duration,
) -> Option<LiveObject> {
    let deadline = tokio::time::Instant::now() + hold;
    let mut changed = s.changed.subscribe();
    let first = loop {
        changed.borrow_and_update();
        let p = s
            .state
            .lock()
            .expect("state")
            .segment_progress(&rendition, number, 0);
        match p {
            Progress::NotYet => {}
            Progress::Writing(b) => break b,
            Progress::Done(b) => return Some(LiveObject::Whole(b)),
            Progress::Gone => return None,
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    };
    // Writing a segment takes one segment duration; allow three before giving up on it.
    let deadline = tokio::time::Instant::now() + 3 * hold;
    let sent = first.len();
    let head = stream::once(async move { Ok(first) });
    let tail = stream::unfold(Some((s, rendition, changed, sent)), move |st| async move {
        let (s, rendition, mut changed, sent) = st?;
        loop {
            changed.borrow_and_update();
            let p = s
                .state
                .lock()
                .expect("state")
                .segment_progress(&rendition, number, sent);
            match p {
                Progress::Writing(b) if !b.is_empty() => {
                    let n = sent + b.len();
                    return Some((Ok(b), Some((s, rendition, changed, n))));
                }
                Progress::Done(b) => {
                    if b.len() < sent {
                        return Some((Err(cut_short("it was rewritten")), None));
                    }
                    let rest = b.slice(sent..);
                    return (!rest.is_empty()).then_some((Ok(rest), None));
                }
                Progress::Gone | Progress::NotYet => {
                    return Some((Err(cut_short("the session ended")), None))
                }
                Progress::Writing(_) => {}
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() {
                    return Some((Err(cut_short("the session ended")), None));
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Some((Err(cut_short("the encoder stopped")), None));
                }
            }
        }
    });
    Some(LiveObject::Growing(head.chain(tail).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_number("seg-12.m4s"), Some(12));
        assert_eq!(segment_number("seg-.m4s"), None);
        assert_eq!(segment_number("part-1-0.m4s"), None);
        assert_eq!(segment_number("seg-1.mp4"), None);
    }
}
