//! The little of an LL-HLS media playlist the client reads: the parts listed
//! (`#EXT-X-PART:...,URI="part-M-P.m4s"`), the preload hint
//! (`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-M-P.m4s"`) and `#EXT-X-ENDLIST`.

/// A part as one ordered number: media sequence number in the high bits, part index in the low.
pub type PartKey = u64;

const PART_BITS: u32 = 20;

pub fn key(msn: u64, part: u64) -> PartKey {
    (msn << PART_BITS) | (part & ((1 << PART_BITS) - 1))
}

pub fn msn_part(k: PartKey) -> (u64, u64) {
    (k >> PART_BITS, k & ((1 << PART_BITS) - 1))
}

/// `part-M-P.m4s` (possibly behind a path) as (M, P).
pub fn parse_part_uri(uri: &[u8]) -> Option<(u64, u64)> {
    let name = uri.rsplit(|&b| b == b'/').next()?;
    let rest = name.strip_prefix(b"part-")?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (nums, _ext) = rest.split_at(dot);
    let dash = nums.iter().position(|&b| b == b'-')?;
    let msn = digits(&nums[..dash])?;
    let part = digits(&nums[dash + 1..])?;
    (part < (1 << PART_BITS)).then_some((msn, part))
}

fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The quoted `URI="..."` attribute of a tag line.
fn uri_attr(line: &[u8]) -> Option<&[u8]> {
    let at = line.windows(5).position(|w| w == b"URI=\"")? + 5;
    let rest = &line[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Key of the hinted next part, if the playlist has a part preload hint.
    pub hint: Option<PartKey>,
    /// Largest part key listed.
    pub max_listed: Option<PartKey>,
    pub ended: bool,
    /// Part URIs that were not `part-M-P.m4s`.
    pub odd_uris: u32,
}

/// Reads a playlist; `on_part` gets the key of every `#EXT-X-PART` listed, in order.
pub fn scan(body: &[u8], mut on_part: impl FnMut(PartKey)) -> Scan {
    let mut out = Scan::default();
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() != Some(&b'#') {
            continue;
        }
        if line.starts_with(b"#EXT-X-PART:") {
            match uri_attr(line).and_then(parse_part_uri) {
                Some((m, p)) => {
                    let k = key(m, p);
                    out.max_listed = Some(out.max_listed.map_or(k, |x| x.max(k)));
                    on_part(k);
                }
                None => out.odd_uris += 1,
            }
        } else if line.starts_with(b"#EXT-X-PRELOAD-HINT:") {
            if line.windows(9).any(|w| w == b"TYPE=PART") {
                match uri_attr(line).and_then(parse_part_uri) {
                    Some((m, p)) => out.hint = Some(key(m, p)),
                    None => out.odd_uris += 1,
                }
            }
        } else if line.starts_with(b"#EXT-X-ENDLIST") {
            out.ended = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: &[u8] = b"#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init-0.mp4\"\n\
#EXT-X-PART:DURATION=0.50000,URI=\"part-1-3.m4s\"\n#EXTINF:2.00000,\nseg-1.m4s\n\
#EXT-X-PART:DURATION=0.50000,URI=\"part-2-0.m4s\",INDEPENDENT=YES\r\n\
#EXT-X-PART:DURATION=0.50000,URI=\"part-2-1.m4s\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-2-2.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=2,LAST-PART=1\n";

    #[test]
    fn parts_hint_and_order() {
        let mut seen = Vec::new();
        let s = scan(PL, |k| seen.push(msn_part(k)));
        assert_eq!(seen, vec![(1, 3), (2, 0), (2, 1)]);
        assert_eq!(s.hint.map(msn_part), Some((2, 2)));
        assert_eq!(s.max_listed.map(msn_part), Some((2, 1)));
        assert!(!s.ended);
        assert_eq!(s.odd_uris, 0);
        assert!(key(1, 3) < key(2, 0) && key(2, 0) < key(2, 1));
    }

    #[test]
    fn ended_and_odd() {
        let s = scan(
            b"#EXT-X-PART:DURATION=0.5,URI=\"chunk7.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"x\"\n#EXT-X-ENDLIST\n",
            |_| panic!("no part"),
        );
        assert!(s.ended && s.hint.is_none());
        assert_eq!(s.odd_uris, 1);
    }

    #[test]
    fn part_uris() {
        assert_eq!(parse_part_uri(b"part-12-3.m4s"), Some((12, 3)));
        assert_eq!(parse_part_uri(b"../360p/part-0-0.m4s"), Some((0, 0)));
        assert_eq!(parse_part_uri(b"part-12.m4s"), None);
        assert_eq!(parse_part_uri(b"part--1.m4s"), None);
        assert_eq!(parse_part_uri(b"seg-1.m4s"), None);
    }
}
