//! Times loading a `tokenizer.json` two ways, for BENCHMARKS.md: through the `tokenizers` crate
//! alone, and through `parse_tokenizer_json` (the BPE model read directly). Each way runs in a
//! fresh process, so the peak memory it reports is its own; the system allocator, not loadgen's.
//!
//! ```sh
//! cargo run --release -p tokenperf-core --example tokenizer_load -- path/to/tokenizer.json
//! ```

use std::time::Instant;

use tokenizers::Tokenizer;

/// Peak resident memory of this process so far, KiB (`VmHWM`).
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        return Err("usage: tokenizer_load PATH/TO/tokenizer.json [crate|direct]".into());
    };
    let Some(way) = args.get(2) else {
        // One child process per way, three times each, in turn.
        let me = std::env::current_exe()?;
        for _ in 0..3 {
            for way in ["crate", "direct"] {
                let out = std::process::Command::new(&me).args([path, way]).output()?;
                print!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        return Ok(());
    };
    let json = std::fs::read_to_string(path)?;
    let before = peak_kib();
    let t0 = Instant::now();
    let tokenizer: Tokenizer = match way.as_str() {
        "crate" => json.parse()?,
        _ => tokenperf_core::tokenizer::parse_tokenizer_json(&json)?,
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "{way:>6}: {ms:6.1} ms, peak memory +{:.1} MB, {} tokens in the vocabulary",
        (peak_kib() - before) as f64 / 1024.0,
        tokenizer.get_vocab_size(true)
    );
    Ok(())
}
