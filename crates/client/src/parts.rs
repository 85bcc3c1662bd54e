//! Part maths: which bytes of the file belong to part N. Pure functions, no I/O.
//!
//! Parts are numbered from 1. Part N covers `[(N-1)*part_size, min(N*part_size, size))`, so
//! every part but the last is exactly `part_size` bytes and the last holds the remainder.

use std::ops::Range;

/// How many parts a file of `size` bytes has with parts of `part_size` bytes.
///
/// Returns `None` if `part_size` is zero or the count does not fit a `u32`.
pub fn part_count(size: u64, part_size: u64) -> Option<u32> {
    if part_size == 0 {
        return None;
    }
    u32::try_from(size.div_ceil(part_size)).ok()
}

/// The byte range of part `part_number` (1-based), or `None` if there is no such part.
pub fn part_range(part_number: u32, part_size: u64, size: u64) -> Option<Range<u64>> {
    let count = part_count(size, part_size)?;
    if part_number == 0 || part_number > count {
        return None;
    }
    let start = u64::from(part_number - 1) * part_size;
    let end = start.saturating_add(part_size).min(size);
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_rounds_up() {
        assert_eq!(part_count(0, 10), Some(0));
        assert_eq!(part_count(1, 10), Some(1));
        assert_eq!(part_count(10, 10), Some(1));
        assert_eq!(part_count(11, 10), Some(2));
        assert_eq!(part_count(4500, 1000), Some(5));
        assert_eq!(part_count(10, 0), None);
        assert_eq!(part_count(u64::MAX, 1), None);
        // 5 TiB in 8 MiB parts.
        assert_eq!(part_count(5 << 40, 8 << 20), Some(655_360));
    }

    #[test]
    fn ranges_cover_the_file_exactly() {
        assert_eq!(part_range(1, 1000, 4500), Some(0..1000));
        assert_eq!(part_range(2, 1000, 4500), Some(1000..2000));
        assert_eq!(part_range(5, 1000, 4500), Some(4000..4500));
        assert_eq!(part_range(6, 1000, 4500), None);
        assert_eq!(part_range(0, 1000, 4500), None);
        // Exact multiple: the last part is full.
        assert_eq!(part_range(3, 1000, 3000), Some(2000..3000));
        assert_eq!(part_range(4, 1000, 3000), None);
        // Smaller than one part.
        assert_eq!(part_range(1, 1000, 7), Some(0..7));
        // Empty file: no parts.
        assert_eq!(part_range(1, 1000, 0), None);
        // No overflow near the top of u64.
        let size = u64::MAX - 5;
        let ps = 1 << 62;
        assert_eq!(part_range(4, ps, size), Some(3 * ps..size));
    }

    #[test]
    fn ranges_are_contiguous() {
        for (size, ps) in [(1u64, 1u64), (4500, 1000), (8 << 20, 3 << 20), (99, 7)] {
            let n = part_count(size, ps).unwrap();
            let mut next = 0;
            for i in 1..=n {
                let r = part_range(i, ps, size).unwrap();
                assert_eq!(r.start, next);
                assert!(r.end > r.start && r.end - r.start <= ps);
                next = r.end;
            }
            assert_eq!(next, size);
        }
    }
}
