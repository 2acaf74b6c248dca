//! Times reading one stream event, as loadgen does for every event it receives:
//! `StreamEvent::parse` (the one-pass skim, `core::openai::skim`) against serde_json's full
//! reading of the same text, on the shapes real servers send.
//!
//! ```sh
//! cargo run --release -p tokenperf-core --example event_cost
//! ```

use std::time::Instant;

use tokenperf_core::openai::StreamEvent;

fn main() {
    let events = [
        (
            "mock-server, completions",
            r#"{"id":"cmpl-d6296d7b29dcce5400000001","object":"text_completion","created":1796257873,"model":"m","choices":[{"index":0,"text":" iron","logprobs":null,"finish_reason":null}]}"#,
        ),
        (
            "vLLM, chat",
            r#"{"id":"chatcmpl-3f1c2a9e8b7d4c6fa1e2b3c4d5e6f708","object":"chat.completion.chunk","created":1718000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" morning"},"logprobs":null,"finish_reason":null}]}"#,
        ),
        (
            "llama.cpp, chat",
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":" light"}}],"created":1718000000,"id":"chatcmpl-Yq0sKx3mB2vH9cT1rW8nP5dL6fJ4aZ7e","model":"gpt-3.5-turbo","system_fingerprint":"b4500-a1b2c3d4","object":"chat.completion.chunk"}"#,
        ),
    ];
    for (name, text) in events {
        let ev = StreamEvent::parse(text).expect("a valid event");
        let full: StreamEvent = serde_json::from_str(text).expect("a valid event");
        assert_eq!(
            format!("{ev:?}"),
            format!("{full:?}"),
            "both readings agree"
        );
        let time = |f: &dyn Fn() -> usize| {
            let runs = 200_000;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let start = Instant::now();
                for _ in 0..runs {
                    std::hint::black_box(f());
                }
                best = best.min(start.elapsed().as_secs_f64() * 1e9 / runs as f64);
            }
            best
        };
        let skim = time(&|| {
            let ev = StreamEvent::parse(std::hint::black_box(text)).unwrap();
            ev.content().map_or(0, str::len)
        });
        let serde = time(&|| {
            let ev: StreamEvent = serde_json::from_str(std::hint::black_box(text)).unwrap();
            ev.content().map_or(0, str::len)
        });
        println!(
            "{name:>26} ({} bytes): parse {skim:6.1} ns, serde_json {serde:6.1} ns (best of 5 × 200,000)",
            text.len()
        );
    }
}
