//! Objects sent while they are written: the segment in progress (low-latency DASH) and the
//! part a preload hint names (LL-HLS).
//!
//! The encoder writes each rendition as CMAF chunks a fraction of a part long. A low-latency
//! DASH client asks for a segment as soon as its first chunk exists (`availabilityTimeOffset`);
//! an LL-HLS client asks for the hinted part before it exists. Both are held until the object
//! starts, then read with chunked transfer: what the session holds of it, then each chunk as it
//! is added, ending when the object is complete. A response that cannot be completed (the
//! session ends, or it takes far too long) ends with an error instead of a short body, so that
//! no cache keeps half an object.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::session::Session;
use crate::state::{Progress, SessionState};

/// An object of a live session: whole, or one still being written.
pub enum LiveObject {
    Whole(Bytes),
    Growing(BoxStream<'static, std::io::Result<Bytes>>),
}

/// Which object is growing.
#[derive(Clone)]
pub(crate) enum Growing {
    /// `seg-N.m4s`.
    Segment(u64),
    /// `part-N-I.m4s`.
    Part(String),
}

impl Growing {
    /// What a request for `file` may wait for.
    pub(crate) fn of(file: &str) -> Option<Self> {
        if let Some(n) = segment_number(file) {
            return Some(Self::Segment(n));
        }
        let rest = file.strip_prefix("part-")?.strip_suffix(".m4s")?;
        let (n, i) = rest.split_once('-')?;
        (n.parse::<u64>().is_ok() && i.parse::<u64>().is_ok()).then(|| Self::Part(file.into()))
    }

    fn progress(&self, st: &SessionState, rendition: &str, from: usize) -> Progress {
        match self {
            Self::Segment(n) => st.segment_progress(rendition, *n, from),
            Self::Part(file) => st.part_progress(rendition, file, from),
        }
    }
}

/// The number of `seg-N.m4s`.
pub(crate) fn segment_number(file: &str) -> Option<u64> {
    file.strip_prefix("seg-")?
        .strip_suffix(".m4s")?
        .parse()
        .ok()
}

fn cut_short(why: &str) -> std::io::Error {
    std::io::Error::other(format!("live object not completed: {why}"))
}

/// `what` of `rendition` as a stream if it is being written or about to start (held until it
/// starts, at most `hold`; then it may take `3 × hold` to complete); `None` when it is neither
/// (complete and gone from memory, or unknown: read it the usual way).
pub(crate) async fn open(
    s: Arc<Session>,
    rendition: String,
    what: Growing,
    hold: Duration,
) -> Option<LiveObject> {
    let deadline = tokio::time::Instant::now() + hold;
    // Chunks arrive on `grown`, which also moves with every listed change.
    let mut grown = s.grown.subscribe();
    let progress = move |s: &Session, rendition: &str, from: usize| {
        what.progress(&s.state.lock().expect("state"), rendition, from)
    };
    let first = loop {
        grown.borrow_and_update();
        match progress(&s, &rendition, 0) {
            Progress::NotYet => {}
            Progress::Writing(b) => break b,
            Progress::Done(b) => return Some(LiveObject::Whole(b)),
            Progress::Gone => return None,
        }
        tokio::select! {
            r = grown.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    };
    let deadline = tokio::time::Instant::now() + 3 * hold;
    let sent = first.len();
    let head = stream::once(async move { Ok(first) });
    let tail = stream::unfold(
        Some((s, rendition, grown, sent, progress)),
        move |st| async move {
            let (s, rendition, mut grown, sent, progress) = st?;
            loop {
                grown.borrow_and_update();
                match progress(&s, &rendition, sent) {
                    Progress::Writing(b) if !b.is_empty() => {
                        let n = sent + b.len();
                        return Some((Ok(b), Some((s, rendition, grown, n, progress))));
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
                    r = grown.changed() => if r.is_err() {
                        return Some((Err(cut_short("the session ended")), None));
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        return Some((Err(cut_short("the encoder stopped")), None));
                    }
                }
            }
        },
    );
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

    #[test]
    fn growing_objects_by_name() {
        assert!(matches!(
            Growing::of("seg-3.m4s"),
            Some(Growing::Segment(3))
        ));
        assert!(
            matches!(Growing::of("part-3-1.m4s"), Some(Growing::Part(f)) if f == "part-3-1.m4s")
        );
        for f in [
            "part-3.m4s",
            "part-x-1.m4s",
            "part-3-1.mp4",
            "init-0.mp4",
            "part--.m4s",
        ] {
            assert!(Growing::of(f).is_none(), "{f}");
        }
    }
}
