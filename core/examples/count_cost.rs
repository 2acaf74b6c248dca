//! Times counting a reply's tokens, as loadgen does once per request: the `tokenizers` crate's
//! `encode` (its pre-tokenizer alone, too) against `TokenCounter::token_starts`, which finds the
//! same token starts a word at a time (`core::wordmemo`). Checks first that both agree on the text.
//!
//! ```sh
//! cargo run --release -p tokenperf-core --example count_cost [-- path/to/tokenizer.json [WORDS]]
//! ```
//! Without a path it uses the project tokenizer; the reply is WORDS (default 100) of the mock's kind
//! of words.

use std::time::Instant;

use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
use tokenperf_core::tokenizer::TokenCounter;

fn main() {
    let mut args = std::env::args().skip(1);
    let t = match args.next() {
        Some(path) => TokenCounter::from_path(std::path::Path::new(&path)).expect("loading"),
        None => TokenCounter::project(),
    };
    let n: usize = args
        .next()
        .map_or(100, |w| w.parse().expect("WORDS is a number"));
    let words = [
        " the", " and", " of", " to", " in", " that", " was", " he", " with", " for", " river",
        " morning", " light",
    ];
    let text: String = (0..n).map(|i| words[(i * 7) % words.len()]).collect();
    let crates = t.inner();
    let want: Vec<usize> = crates
        .encode(text.as_str(), false)
        .unwrap()
        .get_offsets()
        .iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(
        t.token_starts(&text).unwrap(),
        want,
        "both ways give the same starts"
    );
    println!("{}: {n} words, {} tokens", t.name(), want.len());
    let time = |name: &str, f: &dyn Fn() -> usize| {
        let runs = 3_000;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(f());
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / runs as f64);
        }
        println!("{name:>28}: {best:8.2} µs per reply (best of 5 × {runs})");
    };
    time("crate encode", &|| {
        crates.encode(text.as_str(), false).unwrap().len()
    });
    if let Some(pre) = crates.get_pre_tokenizer() {
        time("crate pre-tokenizer alone", &|| {
            let mut p = PreTokenizedString::from(text.as_str());
            pre.pre_tokenize(&mut p).unwrap();
            p.get_splits(OffsetReferential::Original, OffsetType::Byte)
                .len()
        });
    }
    time("TokenCounter::token_starts", &|| {
        t.token_starts(&text).unwrap().len()
    });
}
