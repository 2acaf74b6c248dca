//! Checks the word split `TokenCounter` gives SentencePiece-style tokenizers (LLaMA's) against the
//! `tokenizers` crate on a real `tokenizer.json`, and times both: every line of the project corpus,
//! its first 20,000 characters, and texts with odd spacing, Unicode and special-token strings must
//! encode to the same ids and offsets, with and without special tokens.
//!
//! ```sh
//! cargo run --release -p tokenperf-core --example tokenizer_words -- path/to/tokenizer.json
//! ```

use std::time::Instant;

use tokenizers::Tokenizer;
use tokenperf_core::tokenizer::{PROJECT_CORPUS, TokenCounter};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: tokenizer_words path/to/tokenizer.json");
        std::process::exit(2);
    };
    let json = std::fs::read_to_string(&path).expect("reading the tokenizer");
    let crates: Tokenizer = json.parse().expect("the crate reads it");
    let ours = TokenCounter::from_path(std::path::Path::new(&path)).expect("we read it");
    println!(
        "split into words: {}",
        ours.inner().get_pre_tokenizer().is_some() && crates.get_pre_tokenizer().is_none()
    );
    let mut texts: Vec<String> = PROJECT_CORPUS.lines().map(String::from).collect();
    texts.push(PROJECT_CORPUS.chars().take(20_000).collect());
    for t in [
        "  two  spaces  ",
        "\n\nnew\nlines \n",
        "tabs\tand  \t mixed",
        "über café 🚂 日本語 テスト",
        "<s>special</s> in <unk> text",
        "",
        " ",
        "\u{2581}already\u{2581}marked \u{2581}\u{2581} x",
        "trailing   ",
        "a  b   c    d",
    ] {
        texts.push(t.to_string());
    }
    let mut n = 0;
    for t in &texts {
        for special in [false, true] {
            let a = crates.encode(t.as_str(), special).expect("encodes");
            let b = ours.inner().encode(t.as_str(), special).expect("encodes");
            assert_eq!(a.get_ids(), b.get_ids(), "{t:?}");
            assert_eq!(a.get_offsets(), b.get_offsets(), "{t:?}");
            n += 1;
        }
    }
    println!("{n} encodings identical");
    // A 1,000-word reply, as the mock's words come.
    let words = [
        " the", " and", " of", " to", " in", " that", " was", " he", " with", " for",
    ];
    let text: String = (0..1000).map(|i| words[(i * 7) % words.len()]).collect();
    for (name, t) in [("crate", &crates), ("ours", ours.inner())] {
        let runs = 300;
        let t0 = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(t.encode(text.as_str(), false).expect("encodes"));
        }
        println!("{name}: {:?} per 1,000-word text", t0.elapsed() / runs);
    }
}
