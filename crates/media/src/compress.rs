//! Compression of manifests: gzip and brotli, chosen by `Accept-Encoding`, each body compressed
//! at most once per coding however many viewers ask for it.
//!
//! A live media playlist is fetched by every viewer about twice a second and grows with the
//! session; compressed it is a tenth of the size. Segments are already compressed media and are
//! never re-encoded.

use std::io::Write;
use std::sync::OnceLock;

use bytes::Bytes;

/// A content coding the origin can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
}

impl Coding {
    pub fn header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
        }
    }
}

/// Bodies shorter than this are sent as they are: the header costs more than it saves.
const MIN_SIZE: usize = 512;

/// The best coding the client accepts (RFC 9110 12.5.3): brotli, then gzip, else none. A coding
/// with `q=0` is refused, and `*` stands for any coding not named.
pub fn negotiate(accept: Option<&str>) -> Coding {
    let Some(accept) = accept else {
        return Coding::Identity;
    };
    let (mut br, mut gzip, mut any) = (None, None, None);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .next()
            .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
        let ok = q > 0.0;
        if name.eq_ignore_ascii_case("br") {
            br = Some(ok);
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(ok);
        } else if name == "*" {
            any = Some(ok);
        }
    }
    if br.or(any) == Some(true) {
        Coding::Br
    } else if gzip.or(any) == Some(true) {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// A body and its compressed forms, each made the first time it is asked for.
#[derive(Debug)]
pub struct Compressible {
    identity: Bytes,
    gzip: OnceLock<Bytes>,
    br: OnceLock<Bytes>,
}

impl Compressible {
    pub fn new(identity: Bytes) -> Self {
        Self {
            identity,
            gzip: OnceLock::new(),
            br: OnceLock::new(),
        }
    }

    pub fn identity(&self) -> &Bytes {
        &self.identity
    }

    /// The body in the coding asked for, and the coding actually used (short bodies stay as
    /// they are).
    pub fn get(&self, coding: Coding) -> (Bytes, Coding) {
        if self.identity.len() < MIN_SIZE {
            return (self.identity.clone(), Coding::Identity);
        }
        let body = match coding {
            Coding::Identity => return (self.identity.clone(), Coding::Identity),
            Coding::Gzip => self.gzip.get_or_init(|| gzip(&self.identity)),
            Coding::Br => self.br.get_or_init(|| brotli(&self.identity)),
        };
        (body.clone(), coding)
    }

    /// Bytes held, for cache weights: the compressed forms, when made, are a fraction of the
    /// body.
    pub fn weight(&self) -> usize {
        let compressed =
            self.gzip.get().map_or(0, Bytes::len) + self.br.get().map_or(0, Bytes::len);
        self.identity.len() + compressed.max(self.identity.len() / 4)
    }
}

fn gzip(b: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing to a Vec cannot fail.
    let _ = e.write_all(b);
    Bytes::from(e.finish().unwrap_or_default())
}

fn brotli(b: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(b.len() / 4);
    // Quality 5: within a few percent of the best ratio on playlists, at a fraction of the time
    // of 11 (a live playlist is recompressed on every part).
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: 22,
        ..Default::default()
    };
    let _ = brotli::BrotliCompress(&mut &b[..], &mut out, &params);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn negotiation_follows_the_header() {
        assert_eq!(negotiate(None), Coding::Identity);
        assert_eq!(negotiate(Some("")), Coding::Identity);
        assert_eq!(negotiate(Some("gzip, deflate, br")), Coding::Br);
        assert_eq!(negotiate(Some("gzip")), Coding::Gzip);
        assert_eq!(negotiate(Some("GZIP")), Coding::Gzip);
        assert_eq!(negotiate(Some("br;q=0, gzip;q=0.5")), Coding::Gzip);
        assert_eq!(negotiate(Some("br;q=0, gzip;q=0")), Coding::Identity);
        assert_eq!(negotiate(Some("*")), Coding::Br);
        assert_eq!(negotiate(Some("*;q=0")), Coding::Identity);
        assert_eq!(negotiate(Some("br;q=0, *")), Coding::Gzip);
        assert_eq!(negotiate(Some("identity")), Coding::Identity);
        assert_eq!(negotiate(Some("br;q=nonsense")), Coding::Identity);
        assert_eq!(negotiate(Some(";;;,,,=q")), Coding::Identity);
    }

    #[test]
    fn bodies_round_trip_and_are_compressed_once() {
        let text: String = (0..2000)
            .map(|i| format!("#EXT-X-PART:DURATION=0.5,URI=\"part-{i}-0.m4s\"\n"))
            .collect();
        let c = Compressible::new(Bytes::from(text.clone()));
        let (g, coding) = c.get(Coding::Gzip);
        assert_eq!(coding, Coding::Gzip);
        assert!(
            g.len() * 5 < text.len(),
            "gzip {} of {}",
            g.len(),
            text.len()
        );
        let mut back = String::new();
        flate2::read::GzDecoder::new(&g[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        let (b, coding) = c.get(Coding::Br);
        assert_eq!(coding, Coding::Br);
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &b[..], &mut back).unwrap();
        assert_eq!(back, text.as_bytes());
        // The same compressed bytes come back, not a second compression.
        assert_eq!(c.get(Coding::Br).0.as_ptr(), b.as_ptr());
        assert_eq!(c.get(Coding::Identity).0, text.as_bytes());
    }

    #[test]
    fn short_bodies_stay_as_they_are() {
        let c = Compressible::new(Bytes::from_static(b"#EXTM3U\n"));
        assert_eq!(
            c.get(Coding::Br),
            (Bytes::from_static(b"#EXTM3U\n"), Coding::Identity)
        );
    }
}
