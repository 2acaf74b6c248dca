//! mock-server over real loopback sockets (port 0): every endpoint, every error status, every fault,
//! usage = re-tokenized count, tokens per chunk, the batching queue, ground truth, and timing within
//! tolerances that hold on a loaded 2-core machine.

use std::sync::Once;
use std::time::{Duration, Instant};

use mock_server::dist::Dist;
use mock_server::{Running, Settings, spawn};
use serde_json::{Value, json};
use tokenperf_core::tokenizer::TokenCounter;

fn client() -> reqwest::Client {
    static P: Once = Once::new();
    P.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}

async fn server(cfg: Settings) -> Running {
    spawn(cfg).await.expect("server starts")
}

fn fast() -> Settings {
    Settings {
        ttft_ms: 5.0,
        itl_ms: 1.0,
        ..Settings::default()
    }
}

fn chat(max_tokens: u64) -> Value {
    json!({
        "model": "m",
        "messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Tell me about the harbor."}],
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// A streamed response: the data payloads with the time each read arrived.
struct Streamed {
    status: u16,
    events: Vec<(Instant, String)>,
    /// The body ended with an error (connection cut).
    cut: bool,
}

async fn stream(s: &Running, path: &str, body: &Value, headers: &[(&str, &str)]) -> Streamed {
    let mut req = client().post(format!("{}{path}", s.base_url())).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let mut buf = String::new();
    let mut events = Vec::new();
    let mut cut = false;
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => {
                let now = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&b));
                while let Some(i) = buf.find("\n\n") {
                    let ev: String = buf.drain(..i + 2).collect();
                    if let Some(d) = ev.trim_end().strip_prefix("data: ") {
                        events.push((now, d.to_string()));
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    Streamed {
        status,
        events,
        cut,
    }
}

fn json_events(s: &Streamed) -> Vec<Value> {
    s.events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect()
}

fn content_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| {
            let c = &e["choices"][0];
            c["delta"]["content"]
                .as_str()
                .or(c["text"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Posts a streaming chat request for `max_tokens` tokens and returns the whole body.
async fn chat_text(base: &str, max_tokens: u64) -> String {
    client()
        .post(format!("{base}/chat/completions"))
        .json(&chat(max_tokens))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn post_status(
    s: &Running,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", s.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test]
async fn chat_stream_is_openai_shaped_and_usage_matches_retokenization() {
    let s = server(fast()).await;
    let r = stream(&s, "/chat/completions", &chat(40), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.events.last().unwrap().1, "[DONE]");
    let ev = json_events(&r);
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    assert!(ev[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let finish = &ev[ev.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = &ev[ev.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 40);
    // The guarantee: re-tokenizing the streamed text gives the count the server reports.
    let text = content_of(&ev);
    assert_eq!(TokenCounter::project().count(&text, false).unwrap(), 40);
    // No ground truth unless asked: plain OpenAI chunks.
    assert!(r.events.iter().all(|(_, d)| !d.contains("tokenperf")));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn completions_stream_and_non_streaming_bodies() {
    let s = server(fast()).await;
    let body =
        json!({"model": "m", "prompt": "Once upon a time", "max_tokens": 12, "stream": true});
    let r = stream(&s, "/completions", &body, &[]).await;
    let ev = json_events(&r);
    assert_eq!(ev[0]["object"], "text_completion");
    assert!(
        ev[0]["choices"][0]["delta"].is_null(),
        "no role chunk in completions"
    );
    assert_eq!(
        TokenCounter::project()
            .count(&content_of(&ev), false)
            .unwrap(),
        12
    );
    assert!(
        ev.iter().all(|e| e["usage"].is_null()),
        "no usage chunk without include_usage"
    );

    for (path, body) in [
        (
            "/completions",
            json!({"model": "m", "prompt": ["a", "b"], "max_tokens": 9}),
        ),
        (
            "/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_completion_tokens": 9}),
        ),
    ] {
        let (status, v) = post_status(&s, path, &body.to_string(), &[]).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 9);
        let c = &v["choices"][0];
        let text = c["message"]["content"]
            .as_str()
            .or(c["text"].as_str())
            .unwrap();
        assert_eq!(TokenCounter::project().count(text, false).unwrap(), 9);
        assert_eq!(c["finish_reason"], "length");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn models_health_and_metrics() {
    let s = server(Settings {
        model: vec!["a".into(), "b".into()],
        ..fast()
    })
    .await;
    let c = client();
    let m: Value = c
        .get(format!("{}/models", s.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["data"][1]["id"], "b");
    let h: Value = c
        .get(format!("http://{}/health", s.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    let mut body = chat(5);
    body["model"] = json!("a");
    let _ = stream(&s, "/chat/completions", &body, &[]).await;
    let text = c
        .get(format!("http://{}/metrics", s.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // vLLM's labels on every series: the served model (the first one) and the engine.
    let l = "{model_name=\"a\",engine=\"0\"}";
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:time_per_output_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
        "vllm:request_generation_tokens_count",
        "tokenperf_mock:emission_lateness_seconds_count",
    ]
    .iter()
    .zip(["0", "0", "5", "1", "4", "1", "1", "1", "1", "5"])
    {
        let line = format!("{}{l} {}", name.0, name.1);
        assert!(text.contains(&line), "missing '{line}' in\n{text}");
    }
    assert!(
        text.contains(
            "vllm:request_success_total{model_name=\"a\",engine=\"0\",finished_reason=\"length\"} 1"
        ),
        "{text}"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn every_error_status_is_openai_shaped() {
    let s = server(Settings {
        model: vec!["m".into()],
        api_key: Some("sekret".into()),
        body_limit: 2048,
        ..fast()
    })
    .await;
    let auth = [("authorization", "Bearer sekret")];
    /// Body, headers, expected status, a word the message must contain.
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("{not json".into(), auth.to_vec(), 400, "not valid JSON"),
        (
            json!({"model": "m", "messages": [], "max_tokens": "ten"}).to_string(),
            auth.to_vec(),
            400,
            "max_tokens",
        ),
        (
            json!({"model": 5, "messages": []}).to_string(),
            auth.to_vec(),
            400,
            "model",
        ),
        (
            json!({"model": "m", "messages": "hi"}).to_string(),
            auth.to_vec(),
            400,
            "messages",
        ),
        (
            json!({"model": "m", "messages": [], "n": 2}).to_string(),
            auth.to_vec(),
            400,
            "n = 1",
        ),
        (
            json!({"model": "m", "messages": [], "stream": "yes"}).to_string(),
            auth.to_vec(),
            400,
            "stream",
        ),
        (
            json!({"model": "m", "messages": [], "max_tokens": 2, "min_tokens": 5}).to_string(),
            auth.to_vec(),
            400,
            "min_tokens",
        ),
        (
            json!({"model": "other", "messages": []}).to_string(),
            auth.to_vec(),
            404,
            "other",
        ),
        (
            json!({"model": "m", "messages": []}).to_string(),
            vec![],
            401,
            "API key",
        ),
        (
            json!({"model": "m", "messages": []}).to_string(),
            vec![("authorization", "Bearer nope")],
            401,
            "API key",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(4000)}]})
                .to_string(),
            auth.to_vec(),
            413,
            "limit",
        ),
    ];
    for (body, headers, status, needle) in cases {
        let (got, v) = post_status(&s, "/chat/completions", &body, &headers).await;
        assert_eq!(got, status, "{body:.80}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{body:.80}: message '{msg}' lacks '{needle}'"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    let (_, v) = post_status(
        &s,
        "/chat/completions",
        &json!({"model": "m", "messages": [], "max_tokens": "x"}).to_string(),
        &auth,
    )
    .await;
    assert_eq!(v["error"]["param"], "max_tokens");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn context_length_and_queue_full() {
    let s = server(Settings {
        max_context: 20,
        max_num_seqs: 1,
        max_waiting: 0,
        ttft_ms: 300.0,
        ..fast()
    })
    .await;
    let (status, v) = post_status(&s, "/chat/completions", &chat(50).to_string(), &[]).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 20")
    );
    // One slot, no queue: a second request while the first runs gets 429.
    let first = {
        let base = s.base_url();
        tokio::spawn(async move { chat_text(&base, 3).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, v) = post_status(&s, "/chat/completions", &chat(3).to_string(), &[]).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(first.await.unwrap().contains("[DONE]"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_cap_plus_first_request_waits_for_a_slot() {
    let ttft = Duration::from_millis(100);
    let s = server(Settings {
        max_num_seqs: 2,
        ttft_ms: ttft.as_secs_f64() * 1e3,
        itl_ms: 20.0,
        ..Settings::default()
    })
    .await;
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let base = s.base_url();
        handles.push(tokio::spawn(async move {
            let r = client()
                .post(format!("{base}/chat/completions"))
                .json(&chat(5))
                .send()
                .await
                .unwrap();
            let _ = r.text().await.unwrap();
            t0.elapsed()
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut done: Vec<Duration> = Vec::new();
    for h in handles {
        done.push(h.await.unwrap());
    }
    // Each request takes 100 + 4×20 = 180 ms from admission, and all were sent after t0. Whichever
    // arrived last (under load not always the last one sent) is admitted only when a slot frees, at
    // least 180 ms after t0, so it ends at least 360 ms after t0; without the cap all three end near
    // 180 ms. A causal bound: a loaded machine only makes every request, and its reading, later.
    // (Comparing it with the first request's end read on the client side failed at load 10, when
    // that reading itself came late.)
    let last = done.iter().max().expect("three requests");
    assert!(
        *last >= Duration::from_millis(355),
        "no request waited for a slot: {done:?}"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn status_faults_by_header() {
    let s = server(fast()).await;
    for code in [429u16, 500, 503, 400] {
        let h = format!("status={code}");
        let (status, v) = post_status(
            &s,
            "/chat/completions",
            &chat(3).to_string(),
            &[("x-mock-fault", &h)],
        )
        .await;
        assert_eq!(status, code);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("mock fault")
        );
    }
    let (status, v) = post_status(
        &s,
        "/chat/completions",
        &chat(3).to_string(),
        &[("x-mock-fault", "explode=1")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown fault kind")
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn mid_stream_faults_by_header() {
    let s = server(fast()).await;
    // An error event after 3 tokens, and no [DONE].
    let r = stream(
        &s,
        "/chat/completions",
        &chat(10),
        &[("x-mock-fault", "error-after=3")],
    )
    .await;
    let ev = json_events(&r);
    assert_eq!(ev.last().unwrap()["error"]["code"], 500);
    assert_eq!(
        TokenCounter::project()
            .count(&content_of(&ev), false)
            .unwrap(),
        3
    );
    assert!(r.events.iter().all(|(_, d)| d != "[DONE]"));
    // A malformed chunk after 2 tokens.
    let r = stream(
        &s,
        "/chat/completions",
        &chat(10),
        &[("x-mock-fault", "malformed-after=2")],
    )
    .await;
    let last = &r.events.last().unwrap().1;
    assert!(serde_json::from_str::<Value>(last).is_err(), "{last}");
    // The connection cut after 4 tokens.
    let r = stream(
        &s,
        "/chat/completions",
        &chat(10),
        &[("x-mock-fault", "drop-after=4")],
    )
    .await;
    assert!(r.cut, "the body should end in an error");
    assert!(r.events.iter().all(|(_, d)| d != "[DONE]"));
    // A stall of 300 ms after 2 tokens, judged by the server's own schedule and send times (the
    // ground truth): when the client reads them depends on the machine's load, and a late read of
    // the second token shortens the gap the client sees. Then a slow first byte of 200 ms.
    let t = Instant::now();
    let r = stream(
        &s,
        "/chat/completions",
        &chat(4),
        &[
            ("x-mock-fault", "stall=0.3@2"),
            ("x-tokenperf-ground-truth", "1"),
        ],
    )
    .await;
    let truth: Vec<(u64, u64)> = json_events(&r)
        .iter()
        .filter(|e| !content_of(std::slice::from_ref(e)).is_empty())
        .map(|e| {
            let g = &e["tokenperf"];
            (
                g["due_mono_us"].as_u64().unwrap(),
                g["sent_mono_us"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(truth.len(), 4);
    let ((due1, _), (due2, sent2)) = (truth[1], truth[2]);
    assert!(due2 - due1 >= 300_000, "{} µs", due2 - due1);
    assert!(sent2 >= due2, "sent before its due time");
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    let resp = client()
        .post(format!("{}/chat/completions", s.base_url()))
        .header("x-mock-fault", "slow-first-byte=0.2")
        .json(&chat(2))
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(resp.text().await.unwrap().contains("[DONE]"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn faults_at_a_seeded_rate() {
    let s = server(Settings {
        fault_rate: 0.5,
        fault: vec!["status=503".parse().unwrap()],
        seed: 42,
        ..fast()
    })
    .await;
    let mut failed = 0;
    for _ in 0..40 {
        let (status, _) = post_status(
            &s,
            "/chat/completions",
            &json!({"model": "m", "messages": [], "max_tokens": 1}).to_string(),
            &[],
        )
        .await;
        if status == 503 {
            failed += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    assert!(
        (8..=32).contains(&failed),
        "{failed} of 40 failed at rate 0.5"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_per_chunk_and_output_length_distribution() {
    let s = server(Settings {
        tokens_per_chunk: Dist::Fixed(3),
        ..fast()
    })
    .await;
    let r = stream(&s, "/chat/completions", &chat(10), &[]).await;
    let ev = json_events(&r);
    let content: Vec<&Value> = ev
        .iter()
        .filter(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .collect();
    assert_eq!(content.len(), 4, "10 tokens in chunks of 3: 3+3+3+1");
    assert_eq!(
        TokenCounter::project()
            .count(&content_of(&ev), false)
            .unwrap(),
        10
    );
    s.stop().await.unwrap();

    let s = server(Settings {
        output_len: Some(Dist::Fixed(4)),
        ..fast()
    })
    .await;
    let ev = json_events(&stream(&s, "/chat/completions", &chat(10), &[]).await);
    assert_eq!(ev.last().unwrap()["usage"]["completion_tokens"], 4);
    assert_eq!(ev[ev.len() - 2]["choices"][0]["finish_reason"], "stop");
    let mut body = chat(10);
    body["ignore_eos"] = json!(true);
    let ev = json_events(&stream(&s, "/chat/completions", &body, &[]).await);
    assert_eq!(
        ev.last().unwrap()["usage"]["completion_tokens"],
        10,
        "ignore_eos forces max_tokens"
    );
    let mut body = chat(10);
    body["min_tokens"] = json!(6);
    let ev = json_events(&stream(&s, "/chat/completions", &body, &[]).await);
    assert_eq!(
        ev.last().unwrap()["usage"]["completion_tokens"],
        6,
        "min_tokens raises the length"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn ground_truth_in_chunks_and_in_the_log() {
    let dir = std::env::temp_dir().join(format!("mock-gt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("gt.jsonl");
    let s = server(Settings {
        ground_truth_log: Some(log.clone()),
        ttft_ms: 20.0,
        itl_ms: 5.0,
        ..Settings::default()
    })
    .await;
    let r = stream(
        &s,
        "/chat/completions",
        &chat(6),
        &[("x-tokenperf-ground-truth", "1")],
    )
    .await;
    let ev = json_events(&r);
    let truth: Vec<&Value> = ev.iter().filter_map(|e| e.get("tokenperf")).collect();
    assert_eq!(truth.len(), 6);
    for t in &truth {
        let (due, sent) = (
            t["due_mono_us"].as_u64().unwrap(),
            t["sent_mono_us"].as_u64().unwrap(),
        );
        assert!(sent >= due, "sent before due");
        assert_eq!(t["tokens"], 1);
        let arrival = t["arrival_mono_us"].as_u64().unwrap();
        assert!(
            due >= arrival + 20_000,
            "the first token is due one TTFT after arrival"
        );
        // CLOCK_MONOTONIC, the clock this test reads too.
        assert!(sent <= tokenperf_core::clock::monotonic_us());
    }
    let dues: Vec<u64> = truth
        .iter()
        .map(|t| t["due_mono_us"].as_u64().unwrap())
        .collect();
    for w in dues.windows(2) {
        assert_eq!(w[1] - w[0], 5_000, "due times are exactly one ITL apart");
    }
    s.stop().await.unwrap();
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["completion_tokens"], 6);
    assert_eq!(line["chunks"].as_array().unwrap().len(), 6);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Timing as a client sees it: no token early, tokens paced one gap apart (the mock's own send
/// stamps, so a loaded machine's scheduling of this test's reader does not bunch them), and the last
/// on its absolute deadline. Upper bounds only catch a hang: on a loaded machine anything may be late.
#[tokio::test]
async fn timing_is_within_tolerance() {
    let (ttft, itl) = (Duration::from_millis(50), Duration::from_millis(10));
    let s = server(Settings {
        ttft_ms: ttft.as_secs_f64() * 1e3,
        itl_ms: itl.as_secs_f64() * 1e3,
        ..Settings::default()
    })
    .await;
    let t0 = Instant::now();
    let r = stream(
        &s,
        "/chat/completions",
        &chat(20),
        &[("x-tokenperf-ground-truth", "1")],
    )
    .await;
    let content: Vec<Instant> = r
        .events
        .iter()
        .filter(|(_, d)| d.contains("\"content\":\" "))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(content.len(), 20);
    let first = content[0] - t0;
    assert!(
        first >= ttft && first < ttft + Duration::from_secs(10),
        "TTFT {first:?}"
    );
    // Absolute deadlines: the last token is due at 50 + 19×10 = 240 ms, whatever happened between.
    let last = content[19] - t0;
    assert!(
        last >= Duration::from_millis(240) && last < Duration::from_secs(10),
        "last token at {last:?}"
    );
    let ev = json_events(&r);
    let sent: Vec<u64> = ev
        .iter()
        .filter_map(|e| e.get("tokenperf"))
        .map(|t| {
            let (due, sent) = (
                t["due_mono_us"].as_u64().unwrap(),
                t["sent_mono_us"].as_u64().unwrap(),
            );
            assert!(sent >= due, "sent before due");
            sent
        })
        .collect();
    let mut gaps: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    // Paced, not dumped: most tokens leave a gap apart (the mock's own stamps).
    assert!(
        gaps[gaps.len() / 2] >= 5_000,
        "median gap {} µs",
        gaps[gaps.len() / 2]
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let s = server(Settings {
        max_connections: 1,
        ..fast()
    })
    .await;
    // An idle connection takes the only slot.
    let idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = s.base_url();
    let waiting = tokio::spawn(async move { chat_text(&base, 2).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served past the connection limit");
    drop(idle);
    let body = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(body.contains("[DONE]"));
    s.stop().await.unwrap();
}

/// `--busy-poll` serves streams as usual and does not keep the server from stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_serves_and_stops() {
    let s = server(Settings {
        busy_poll: true,
        ..fast()
    })
    .await;
    let r = stream(&s, "/chat/completions", &chat(5), &[]).await;
    assert_eq!(
        (r.status, r.events.last().unwrap().1.as_str()),
        (200, "[DONE]")
    );
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("the spinning task does not hold the server")
        .unwrap();
}
