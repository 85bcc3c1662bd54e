//! Prints what oxcast-media finds in fMP4 files: `cargo run -p oxcast-media --example fmp4_probe -- FILE...`
//! (A developer tool for checking real ffmpeg output; the library itself does no I/O.)

use oxcast_media::cmaf::plan_segments;
use oxcast_media::mp4::{split_file, Fmp4Splitter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path)?;
        let (track, init, frags) = split_file(&data)?;
        println!("{path}: {track:?}\n  init {init:?}");
        for f in &frags {
            println!("  {f:?}");
        }
        for p in plan_segments(&frags, u64::from(track.timescale) * 4) {
            println!(
                "  segment {p:?} = {:.3}s",
                p.duration as f64 / f64::from(track.timescale)
            );
        }
        // The incremental splitter must agree when fed in odd-sized chunks.
        let mut s = Fmp4Splitter::new();
        let mut n = 0;
        for chunk in data.chunks(4093) {
            n += s.push(chunk)?.len();
        }
        s.finish()?;
        println!("  splitter events: {n} (expected {})", frags.len() + 1);
    }
    Ok(())
}
