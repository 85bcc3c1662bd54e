//! The `Range` request header (RFC 9110 14.1.2), resolved against an object's size.
//!
//! The header comes from anyone on the internet: parsing never panics and never overflows,
//! whatever the numbers (property-tested below).

/// A single byte range from a `Range` header, resolved against the object size.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum RangeRequest {
    Full,
    Partial(std::ops::Range<u64>),
    Unsatisfiable,
}

/// Anything that is not one well-formed `bytes=` range is answered with the whole object, as
/// RFC 9110 allows for a header the server does not understand.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    // Multiple ranges are legal but no player asks for them; serve the whole object instead.
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    // A number too large for u64 is still a number: it means "to the end" (or past it).
    let number = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeRequest::Full,
        (true, false) => {
            if !digits(b) {
                return RangeRequest::Full;
            }
            let n = number(b);
            if n == 0 {
                return RangeRequest::Unsatisfiable;
            }
            size.saturating_sub(n)..size
        }
        (false, _) => {
            if !digits(a) || !(b.is_empty() || digits(b)) {
                return RangeRequest::Full;
            }
            let start = number(a);
            let end = if b.is_empty() {
                size
            } else {
                let last = number(b);
                if last < start {
                    return RangeRequest::Full;
                }
                // `last` is inclusive; u64::MAX + 1 would overflow, and is past any size anyway.
                last.saturating_add(1).min(size)
            };
            start..end
        }
    };
    if range.start >= size || range.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use RangeRequest::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Partial(0..4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Partial(5..10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Partial(8..10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=1-+2"), 10), Full);
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let max = u64::MAX;
        assert_eq!(
            parse_range(Some(&format!("bytes=0-{max}")), 10),
            Partial(0..10)
        );
        assert_eq!(
            parse_range(Some(&format!("bytes=0-{max}")), max),
            Partial(0..max)
        );
        assert_eq!(
            parse_range(Some(&format!("bytes={max}-{max}")), 10),
            Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=0-99999999999999999999999"), 10),
            Partial(0..10)
        );
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), 10),
            Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-99999999999999999999999"), 10),
            Partial(0..10)
        );
    }

    proptest! {
        /// Any header at all: no panic, and a partial range always lies inside the object.
        #[test]
        fn any_header_resolves_inside_the_object(h in ".{0,64}", size in any::<u64>()) {
            if let Partial(r) = parse_range(Some(&h), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }

        #[test]
        fn any_numbers_resolve_inside_the_object(
            a in prop::option::of(any::<u64>()),
            b in prop::option::of(any::<u64>()),
            size in any::<u64>(),
        ) {
            let h = format!(
                "bytes={}-{}",
                a.map(|v| v.to_string()).unwrap_or_default(),
                b.map(|v| v.to_string()).unwrap_or_default()
            );
            match parse_range(Some(&h), size) {
                Partial(r) => prop_assert!(r.start < r.end && r.end <= size),
                Unsatisfiable => prop_assert!(
                    a.is_some_and(|a| a >= size) || (a.is_none() && (b == Some(0) || size == 0))
                ),
                Full => prop_assert!(
                    (a.is_none() && b.is_none()) || matches!((a, b), (Some(a), Some(b)) if b < a)
                ),
            }
        }
    }
}
