//! Embeds the vendor bundles that `npm ci` put in web/node_modules: the players (hls.js,
//! dash.js) and the dashboard's charts (uPlot, script and stylesheet). When one is missing the
//! binary still builds, and the page that needs it reports that the front-end dependencies were
//! not installed instead of failing silently.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let bundles = [
        ("hls.min.js", "node_modules/hls.js/dist/hls.min.js"),
        (
            "dash.all.min.js",
            "node_modules/dashjs/dist/modern/umd/dash.all.min.js",
        ),
        (
            "uPlot.iife.min.js",
            "node_modules/uplot/dist/uPlot.iife.min.js",
        ),
        ("uPlot.min.css", "node_modules/uplot/dist/uPlot.min.css"),
    ];
    for (name, rel) in bundles {
        let src = root.join(rel);
        println!("cargo:rerun-if-changed={}", src.display());
        let dest = out.join(name);
        match std::fs::read(&src) {
            Ok(bytes) => std::fs::write(&dest, strip_source_map(&bytes)).unwrap(),
            Err(_) => {
                println!(
                    "cargo:warning={} not found: run `npm ci` in web/ (scripts/deps.sh does) for the web UI's vendor bundles",
                    src.display()
                );
                let msg = if name.ends_with(".css") {
                    format!("/* oxcast was built without {name}: run npm ci in web/ and rebuild */")
                } else {
                    format!(
                        "console.error('oxcast was built without {name}: run npm ci in web/ and rebuild');"
                    )
                };
                std::fs::write(&dest, msg).unwrap();
            }
        }
    }
}

/// The bundles may end with a sourceMappingURL comment for a map we do not ship.
fn strip_source_map(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    match text.rfind("//# sourceMappingURL=") {
        Some(i) => text[..i].as_bytes().to_vec(),
        None => bytes.to_vec(),
    }
}
