//! loadgen against peers that misbehave, each a raw server in this process on port 0: a server that
//! advertises keep-alive and closes after every stream (llama.cpp's), heads cut short, nothing
//! listening, empty and stalled error bodies, redirects, events that are not chunks, endless lines
//! and endless streams, short outputs, a warm prefix cache, another model answering. Every request
//! must end as a record with a reason, in bounded time and memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadgen::{Control, Exit};
use tokenperf_core::record::Outcome;
use tokio::io::AsyncWriteExt;

mod common;
use common::{
    FIN, ROLE, STREAM_HEAD, TOK, chunk, flags, plain_response, raw_server, read_request, send,
    stream_response,
};

async fn run(base: &str, extra: &[&str]) -> common::Ran {
    common::run_keeping(flags(base, extra), Control::new())
        .await
        .unwrap()
}

fn n_c(n: &'static str, c: &'static str) -> [&'static str; 4] {
    [
        "--max-num-completed-requests",
        n,
        "--num-concurrent-requests",
        c,
    ]
}

/// llama.cpp's server: `Keep-Alive: timeout=5, max=100`, then it closes the connection a moment
/// after every streamed response, unread requests and all.
#[tokio::test]
async fn a_server_that_closes_after_each_stream_costs_no_request() {
    let (base, accepted) = raw_server(|mut s, _| async move {
        if read_request(&mut s).await.is_some() {
            send(&mut s, &stream_response(&[ROLE, TOK, TOK, FIN, "[DONE]"])).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    for c in ["1", "4"] {
        let out = run(&base, &n_c("500", c)).await;
        let errors: Vec<_> = out
            .records
            .iter()
            .filter(|r| !r.outcome.is_ok())
            .map(|r| r.outcome.message().to_string())
            .take(3)
            .collect();
        assert!(errors.is_empty(), "c={c}: {errors:?}");
        assert_eq!(out.records.len(), 500);
        let conn = out.summary.connections;
        // Each connection serves one request, so apart from the first use of a warmed connection
        // every request went out on a new one or was retried onto one.
        let c: u64 = c.parse().unwrap();
        assert!(conn.new + conn.retried >= 500 - c, "c={c}: {conn:?}");
        assert_eq!(conn.new + conn.reused, 500);
    }
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1000);
}

/// A server that keeps the connection open but closes it on reading a second request: every reuse
/// fails before any response byte, deterministically, and every one is retried once.
#[tokio::test]
async fn a_reused_connection_that_fails_before_any_byte_is_retried_once() {
    let (base, _) = raw_server(|mut s, _| async move {
        if read_request(&mut s).await.is_some() {
            send(&mut s, &stream_response(&[ROLE, TOK, FIN, "[DONE]"])).await;
            let _ = read_request(&mut s).await;
        }
    })
    .await;
    let out = run(&base, &n_c("40", "2")).await;
    assert!(out.records.iter().all(|r| r.outcome.is_ok()));
    let retried: Vec<_> = out
        .records
        .iter()
        .filter_map(|r| r.connection.as_ref()?.retried_after.clone())
        .collect();
    assert!(retried.len() >= 38, "{} retried", retried.len());
    assert!(retried[0].contains("reused connection"), "{}", retried[0]);
    assert_eq!(out.summary.connections.retried, retried.len() as u64);
}

/// Once a response byte has arrived, the server may have acted on the request: no retry.
#[tokio::test]
async fn a_failure_after_a_response_byte_is_never_retried() {
    let (base, _) = raw_server(|mut s, _| async move {
        if read_request(&mut s).await.is_some() {
            send(&mut s, &stream_response(&[ROLE, TOK, FIN, "[DONE]"])).await;
            if read_request(&mut s).await.is_some() {
                send(&mut s, b"HTTP/1.1 200 OK\r\nContent-Ty").await;
            }
        }
    })
    .await;
    let out = run(&base, &n_c("2", "1")).await;
    // Records arrive in completion order; the second request sent is id 1.
    let second = out.records.iter().find(|r| r.id == 1).unwrap();
    assert!(
        matches!(&second.outcome, Outcome::Connect { message } if message.contains("during the response head")),
        "{:?}",
        second.outcome
    );
    assert_eq!(
        second.connection.as_ref().unwrap().retried_after,
        None,
        "never retried"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_failed_run_with_exit_3() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(&format!("http://127.0.0.1:{port}/v1"), &n_c("3", "1")).await;
    assert_eq!(out.exit, Exit::NoSuccess);
    assert!(out.records.iter().all(|r| r.outcome.kind() == "connect"));
    assert!(out.records[0].outcome.message().contains("refused"));
    let text = out.summary.error_breakdown_text();
    assert!(
        text.contains("3 requests did not succeed") && text.contains("connect"),
        "{text}"
    );
    assert!(
        out.warnings.iter().all(|w| !w.contains("Little")),
        "{:?}",
        out.warnings
    );
}

#[tokio::test]
async fn error_statuses_always_carry_a_message() {
    let posts = Arc::new(AtomicU64::new(0));
    let (base, _) = raw_server(move |mut s, _| {
        let posts = posts.clone();
        async move {
            while let Some(req) = read_request(&mut s).await {
                if req.method != "POST" {
                    send(&mut s, &plain_response("404 Not Found", "", "")).await;
                    continue;
                }
                let resp = match posts.fetch_add(1, Ordering::Relaxed) % 3 {
                    0 => plain_response("404 Not Found", "", ""),
                    1 => plain_response(
                        "401 Unauthorized",
                        "Content-Type: application/json\r\n",
                        r#"{"error":{"message":"bad key","type":"auth"}}"#,
                    ),
                    _ => plain_response(
                        "302 Found",
                        "Location: http://127.0.0.1:9/v1/chat/completions\r\n",
                        "",
                    ),
                };
                send(&mut s, &resp).await;
            }
        }
    })
    .await;
    let out = run(&base, &n_c("6", "1")).await;
    let statuses: std::collections::BTreeSet<u16> = out
        .records
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::HttpStatus { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        vec![302, 401, 404]
    );
    assert_eq!(out.exit, Exit::NoSuccess);
    for r in &out.records {
        let Outcome::HttpStatus { status, message } = &r.outcome else {
            panic!("{:?}", r.outcome);
        };
        match status {
            404 => assert!(
                message.contains("empty body") && message.contains("/v1"),
                "{message}"
            ),
            401 => assert!(
                message.contains("bad key") && message.contains("--api-key"),
                "{message}"
            ),
            302 => assert!(
                message.contains("not followed")
                    && message.contains("http://127.0.0.1:9/v1/chat/completions"),
                "{message}"
            ),
            other => panic!("status {other}"),
        }
    }
}

#[tokio::test]
async fn a_stalled_error_body_ends_at_the_idle_timeout_with_a_message() {
    let (base, _) = raw_server(|mut s, _| async move {
        if read_request(&mut s).await.is_some() {
            send(
                &mut s,
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n{\"err",
            )
            .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    let t = Instant::now();
    let out = run(
        &base,
        &[&n_c("1", "1")[..], &["--idle-timeout", "0.5"]].concat(),
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let Outcome::HttpStatus { status, message } = &out.records[0].outcome else {
        panic!("{:?}", out.records[0].outcome);
    };
    assert_eq!(*status, 500);
    assert!(
        message.contains("{\"err") && message.contains("stalled"),
        "{message}"
    );
}

#[tokio::test]
async fn events_that_are_not_chunks_make_a_malformed_response() {
    let (base, _) = raw_server(|mut s, _| async move {
        if read_request(&mut s).await.is_some() {
            send(
                &mut s,
                &stream_response(&[r#"{"status":"queued"}"#, r#"{"foo":1}"#, "[DONE]"]),
            )
            .await;
        }
    })
    .await;
    let out = run(&base, &n_c("1", "1")).await;
    let o = &out.records[0].outcome;
    assert!(
        matches!(o, Outcome::Malformed { message } if message.contains("none was a completion chunk") && message.contains("queued")),
        "{o:?}"
    );
}

/// A peer that never ends a line, and one that never ends a stream: both stop at their caps with a
/// reason, instead of growing without bound.
#[tokio::test]
async fn endless_lines_and_endless_streams_stop_at_their_caps() {
    let posts = Arc::new(AtomicU64::new(0));
    let (base, _) = raw_server(move |mut s, _| {
        let posts = posts.clone();
        async move {
            match read_request(&mut s).await {
                Some(r) if r.method == "POST" => {}
                _ => return,
            }
            send(&mut s, STREAM_HEAD.as_bytes()).await;
            let piece = if posts.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                send(&mut s, &chunk(b"data: ")).await;
                chunk(&[b'x'; 16 * 1024])
            } else {
                chunk(format!("data: {TOK}\n\n").as_bytes())
            };
            // Bounded: at most 64 MiB, and it stops as soon as the client goes.
            for _ in 0..(64 << 20) / piece.len() {
                if s.write_all(&piece).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let out = run(
        &base,
        &[
            &n_c("2", "1")[..],
            &[
                "--max-sse-line-bytes",
                "100000",
                "--max-response-bytes",
                "200000",
            ],
        ]
        .concat(),
    )
    .await;
    let messages: Vec<&str> = out.records.iter().map(|r| r.outcome.message()).collect();
    for cap in ["--max-sse-line-bytes", "--max-response-bytes"] {
        assert!(
            messages.iter().any(|m| m.contains(cap)),
            "{cap}: {messages:?}"
        );
    }
    assert!(out.records.iter().all(|r| r.outcome.kind() == "malformed"));
}

/// Short outputs, a warm prefix cache and another model answering are reported, and --ignore-eos
/// and --cache-bust reach the server.
#[tokio::test]
async fn what_the_server_did_differently_is_reported() {
    let bodies = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let seen = bodies.clone();
    let (base, _) = raw_server(move |mut s, _| {
        let seen = seen.clone();
        async move {
            while let Some(req) = read_request(&mut s).await {
                if req.method == "GET" {
                    let list = r#"{"object":"list","data":[{"id":"tiny-llama","object":"model"}]}"#;
                    send(&mut s, &plain_response("200 OK", "", list)).await;
                    continue;
                }
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&req.body).unwrap());
                let usage = r#"{"model":"tiny-llama","choices":[],"usage":{"prompt_tokens":70,"completion_tokens":2,"total_tokens":72,"prompt_tokens_details":{"cached_tokens":64}}}"#;
                let first = r#"{"model":"tiny-llama","choices":[{"index":0,"delta":{"content":" the"}}]}"#;
                send(
                    &mut s,
                    &stream_response(&[first, TOK, FIN, usage, "[DONE]"]),
                )
                .await;
            }
        }
    })
    .await;
    let out = run(
        &base,
        &[&n_c("4", "2")[..], &["--ignore-eos", "--cache-bust"]].concat(),
    )
    .await;
    assert!(out.records.iter().all(|r| r.outcome.is_ok()));
    let s = &out.summary;
    assert_eq!((s.short_outputs.requests, s.short_outputs.of), (4, 4));
    assert_eq!(s.short_outputs.tokens_missing, 4 * 6);
    assert_eq!(s.cached_input.cached_tokens, 4 * 64);
    assert_eq!(s.response_models["tiny-llama"], 4);
    assert_eq!(out.records[0].cached_input_tokens, Some(64));
    assert_eq!(out.records[0].model.as_deref(), Some("tiny-llama"));
    assert_eq!(out.info.server_models, Some(vec!["tiny-llama".to_string()]));
    let w = out.warnings.join("\n");
    for needle in [
        "fewer tokens than max_tokens",
        "prefix cache",
        "another model",
        "lists 'tiny-llama' at /models",
    ] {
        assert!(w.contains(needle), "no '{needle}' in:\n{w}");
    }
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 4);
    let mut markers = std::collections::BTreeSet::new();
    for b in bodies.iter() {
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["min_tokens"], b["max_tokens"]);
        let prompt = b["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.starts_with('['), "{prompt}");
        markers.insert(prompt[..18].to_string());
    }
    assert_eq!(markers.len(), 4, "every prompt starts with its own marker");
}

/// An open loop stopped early: arrivals that were not yet due are `not_due`, not drops.
#[tokio::test]
async fn stopping_an_open_loop_does_not_count_future_arrivals_as_drops() {
    let (base, _) = raw_server(|mut s, _| async move {
        while read_request(&mut s).await.is_some() {
            send(&mut s, &stream_response(&[ROLE, TOK, FIN, "[DONE]"])).await;
        }
    })
    .await;
    let plan = flags(
        &base,
        &[
            "--request-rate",
            "20",
            "--arrival",
            "constant",
            "--max-num-completed-requests",
            "200",
        ],
    );
    let control = Control::new();
    let c = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.stop();
    });
    let out = common::run_keeping(plan, control).await.unwrap();
    assert_eq!(out.exit, Exit::Interrupted);
    assert_eq!(out.records.len(), 200, "every planned arrival has a record");
    assert!(out.summary.not_due >= 150, "{}", out.summary.not_due);
    assert!(out.summary.dropped <= 2, "{}", out.summary.dropped);
    assert!(
        out.summary
            .error_breakdown
            .iter()
            .all(|g| g.kind != "not_due")
    );
}

/// `--sweep auto` against nothing: its end runs' exit code reaches the caller, and
/// `sweep_summary.json` holds every point that ran.
#[tokio::test]
async fn a_failed_auto_sweep_exits_non_zero_and_keeps_its_summary() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let plan = flags(
        &format!("http://127.0.0.1:{port}/v1"),
        &[
            "--sweep",
            "auto",
            "--max-num-completed-requests",
            "2",
            "--results-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let (result, exit) = loadgen::sweep::run_sweep(plan, Control::new())
        .await
        .unwrap();
    assert_eq!(exit, Exit::NoSuccess);
    assert_eq!(result.rows.len(), 2, "both ends ran");
    assert!(result.stopped.as_deref().unwrap().contains("no rates"));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sweep_summary.json")).unwrap())
            .unwrap();
    assert_eq!(doc["result"]["rows"].as_array().unwrap().len(), 2);
}

/// `https://` against a port that speaks plain HTTP: the TLS handshake fails, and the record says so.
#[tokio::test]
async fn a_tls_handshake_that_fails_is_a_connect_error_naming_tls() {
    // It answers at once in plain text: the client's hello gets bytes that are no TLS record.
    let (base, _) = raw_server(|mut s, _| async move {
        send(&mut s, &plain_response("400 Bad Request", "", "plain http")).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let out = run(
        &base.replacen("http://", "https://", 1),
        &[&n_c("1", "1")[..], &["--idle-timeout", "5"]].concat(),
    )
    .await;
    let o = &out.records[0].outcome;
    assert!(
        matches!(o, Outcome::Connect { message } if message.contains("TLS handshake")),
        "{o:?}"
    );
    assert_eq!(out.exit, Exit::NoSuccess);
}

/// The same llama.cpp behaviour from our own mock (`--close-after-stream`): no request lost.
#[tokio::test]
async fn the_mock_in_close_after_stream_mode_costs_no_request() {
    let server = common::mock_closing_after_stream().await;
    for c in ["1", "4"] {
        let out = run(&server.base_url(), &n_c("300", c)).await;
        assert_eq!(
            out.summary.number_errors, 0,
            "c={c}: {:?}",
            out.summary.error_breakdown
        );
        assert_eq!(out.summary.num_completed_requests, 300);
    }
    server.stop().await.unwrap();
}

/// A re-run of the same seed meets a warm prefix cache (the mock models one); `--cache-bust` does not.
#[tokio::test]
async fn a_warm_prefix_cache_is_reported_and_cache_bust_avoids_it() {
    let server = mock_server::spawn(mock_server::Settings {
        ttft_ms: 1.0,
        itl_ms: 0.5,
        prefix_cache_blocks: 100_000,
        ..mock_server::Settings::default()
    })
    .await
    .unwrap();
    let base = server.base_url();
    // Even the first run hits: LLMPerf's prompts all open with the same instruction sentence.
    let first = run(&base, &n_c("5", "1")).await.summary.cached_input;
    assert!(
        first.requests_with_hits <= 4,
        "the very first prompt is cold: {first:?}"
    );
    // The re-run finds the first run's prompts: every request hits, and more tokens hit.
    let again = run(&base, &n_c("5", "1")).await;
    let c = again.summary.cached_input;
    assert_eq!((c.requests_reporting, c.requests_with_hits), (5, 5));
    assert!(
        c.cached_tokens > first.cached_tokens,
        "{c:?} after {first:?}"
    );
    assert!(again.warnings.iter().any(|w| w.contains("prefix cache")));
    let busted = run(&base, &[&n_c("5", "1")[..], &["--cache-bust"]].concat()).await;
    assert_eq!(
        busted.summary.cached_input.cached_tokens, 0,
        "{:?}",
        busted.summary.cached_input
    );
    server.stop().await.unwrap();
}

/// Framings real servers use besides hyper's: an HTTP/1.0 stream that ends when the connection does
/// (no length, no chunks, no `[DONE]`), an interim `100 Continue` before the answer, and chunks that carry
/// extensions and cut events anywhere. Every request succeeds; a close-delimited body is never
/// reused.
#[tokio::test]
async fn other_framings_are_read_to_their_end() {
    let wire = common::sse(&[ROLE, TOK, TOK, FIN, "[DONE]"], "\n");
    let every_request_whole = |out: &common::Ran| {
        let bad = out
            .records
            .iter()
            .find(|r| !r.outcome.is_ok() || r.events.len() != 4);
        assert!(
            bad.is_none(),
            "{:?}",
            bad.map(|r| (&r.outcome, r.events.len()))
        );
    };
    // No [DONE]: the stream's end is the connection's close, which must read as a clean end.
    let body = common::sse(&[ROLE, TOK, TOK, FIN], "\n");
    let (close_base, close_accepted) = raw_server(move |mut s, _| {
        let body = body.clone();
        async move {
            if read_request(&mut s).await.is_some() {
                let head = "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
                send(&mut s, head.as_bytes()).await;
                send(&mut s, body.as_bytes()).await;
            }
        }
    })
    .await;
    every_request_whole(&run(&close_base, &n_c("20", "2")).await);
    assert!(close_accepted.load(std::sync::atomic::Ordering::Relaxed) >= 20);

    let (odd_base, _) = raw_server(move |mut s, _| {
        let wire = wire.clone();
        async move {
            while read_request(&mut s).await.is_some() {
                send(&mut s, b"HTTP/1.1 100 Continue\r\n\r\n").await;
                send(&mut s, STREAM_HEAD.as_bytes()).await;
                // Cut every 7 bytes, each piece a chunk with an extension.
                for piece in wire.as_bytes().chunks(7) {
                    let mut c = format!("{:x};ext=1\r\n", piece.len()).into_bytes();
                    c.extend_from_slice(piece);
                    c.extend_from_slice(b"\r\n");
                    send(&mut s, &c).await;
                }
                send(&mut s, b"0\r\n\r\n").await;
            }
        }
    })
    .await;
    let out = run(&odd_base, &n_c("20", "2")).await;
    every_request_whole(&out);
    assert_eq!(
        out.summary.connections.new, 0,
        "chunked answers keep their connections"
    );
}
