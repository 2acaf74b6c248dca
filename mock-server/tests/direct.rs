//! The pacer writes token chunks straight to the socket, past hyper (in-process, port 0). Read here
//! with a strict chunked-encoding decoder: every chunk framed right, every event whole, the
//! connection usable for the next request, and the same stream when a client stops reading for a
//! while, speaks HTTP/1.0, or goes away mid-stream.

use std::time::Duration;

use mock_server::{Running, Settings, spawn};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    static P: std::sync::Once = std::sync::Once::new();
    P.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}

async fn server(s: Settings) -> Running {
    spawn(s).await.expect("server starts")
}

/// A server with fixed timing: `ttft_ms` to the first token, then one every `itl_ms`.
async fn timed(ttft_ms: f64, itl_ms: f64) -> Running {
    server(Settings {
        ttft_ms,
        itl_ms,
        ..Settings::default()
    })
    .await
}

fn request(path: &str, body: &Value, version: &str) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1{path} {version}\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chat(max_tokens: u64) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
           "stream": true, "stream_options": {"include_usage": true}})
}

/// Writes one request on `conn`.
async fn send(conn: &mut BufReader<TcpStream>, path: &str, body: &Value, version: &str) {
    conn.get_mut()
        .write_all(&request(path, body, version))
        .await
        .unwrap();
}

/// Token events among `evs` (content deltas or texts, not the role event).
fn tokens(evs: &[&str]) -> usize {
    evs.iter()
        .filter(|e| e.contains("\"content\":\"") && !e.contains("role"))
        .count()
}

/// Reads one response head; returns it lower-cased.
async fn head(r: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(LIMIT, r.read_line(&mut line))
            .await
            .expect("head in time")
            .unwrap();
        assert!(n > 0, "connection closed in the head: {head}");
        head.push_str(&line.to_ascii_lowercase());
        if line == "\r\n" {
            return head;
        }
    }
}

/// Reads a chunked body strictly: a hex size line, exactly that many bytes, CRLF, up to the zero
/// chunk and the blank line after it. Returns each chunk's data.
async fn chunks(r: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        tokio::time::timeout(LIMIT, r.read_line(&mut size))
            .await
            .expect("chunk in time")
            .unwrap();
        let n = usize::from_str_radix(size.trim_end_matches("\r\n"), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size:?} after {out:?}"));
        let mut data = vec![0u8; n + 2];
        r.read_exact(&mut data).await.unwrap();
        assert_eq!(
            &data[n..],
            b"\r\n",
            "chunk of {n} bytes not followed by CRLF"
        );
        data.truncate(n);
        if n == 0 {
            return out;
        }
        out.push(String::from_utf8(data).unwrap());
    }
}

/// The SSE events in `text`, each checked whole (`data: …` ending in a blank line).
fn events(text: &str) -> Vec<&str> {
    assert!(
        text.ends_with("\n\n"),
        "an event cut across chunks: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").expect("a data line"))
        .collect()
}

async fn metric(s: &Running, series: &str) -> u64 {
    let text = client()
        .get(format!("http://{}/metrics", s.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

const DIRECT: &str =
    "tokenperf_mock:chunks_written_total{model_name=\"mock\",engine=\"0\",path=\"direct\"}";
const HTTP: &str =
    "tokenperf_mock:chunks_written_total{model_name=\"mock\",engine=\"0\",path=\"http\"}";

#[tokio::test]
async fn token_chunks_go_straight_to_the_socket_framed_whole_and_the_connection_is_reused() {
    let s = server(Settings {
        ttft_ms: 20.0,
        itl_ms: 2.0,
        ground_truth: true,
        ..Settings::default()
    })
    .await;
    let mut conn = BufReader::new(TcpStream::connect(s.addr).await.unwrap());
    send(&mut conn, "/chat/completions", &chat(20), "HTTP/1.1").await;
    let h = head(&mut conn).await;
    assert!(
        h.starts_with("http/1.1 200") && h.contains("transfer-encoding: chunked"),
        "{h}"
    );
    let body = chunks(&mut conn).await;
    let mut tokens = 0;
    for (i, chunk) in body.iter().enumerate() {
        let evs = events(chunk);
        let last = i == body.len() - 1;
        // A token's chunk holds its event (after the role event, for the first), the last one the
        // end of the stream too.
        assert!(evs.len() == 1 || i == 0 || last, "chunk {i}: {chunk:?}");
        for e in evs
            .iter()
            .filter(|e| e.contains("\"content\":\"") && !e.contains("role"))
        {
            let v: Value = serde_json::from_str(e).unwrap();
            let t = &v["tokenperf"];
            assert!(
                t["sent_mono_us"].as_u64() >= t["due_mono_us"].as_u64(),
                "{e}"
            );
            tokens += 1;
        }
        if last {
            assert!(evs.ends_with(&["[DONE]"]), "{chunk}");
            assert!(
                evs.iter().any(|e| e.contains("\"completion_tokens\":20")),
                "{chunk}"
            );
        }
    }
    assert_eq!(tokens, 20);
    let (direct, http) = (metric(&s, DIRECT).await, metric(&s, HTTP).await);
    assert_eq!(direct + http, 20, "each token chunk written once");
    // The last one always goes through hyper; the rest do unless the machine stalls for a gap.
    assert!(direct >= 10, "{direct} of 20 chunks written by the pacer");

    // The same connection serves the next request, its head right after the terminator.
    let completion = json!({"model": "m", "prompt": "hi", "max_tokens": 5, "stream": true});
    send(&mut conn, "/completions", &completion, "HTTP/1.1").await;
    assert!(head(&mut conn).await.starts_with("http/1.1 200"));
    let text: String = chunks(&mut conn).await.concat();
    let evs = events(&text);
    assert_eq!(evs.len(), 7, "5 tokens, the finish and [DONE]: {text}");
    assert_eq!(metric(&s, DIRECT).await + metric(&s, HTTP).await, 25);
    s.stop().await.unwrap();
}

/// The content events of one streamed response read strictly off `conn`, after its head.
async fn streamed_tokens(conn: &mut BufReader<TcpStream>) -> usize {
    let h = head(conn).await;
    assert!(h.starts_with("http/1.1 200"), "{h}");
    let text: String = chunks(conn).await.concat();
    let evs = events(&text);
    assert_eq!(evs.last(), Some(&"[DONE]"), "{text}");
    tokens(&evs)
}

// Two workers, as the server runs: the pacer can fire on one while hyper writes on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_an_interim_100_continue_keep_the_framing() {
    let s = timed(0.0, 1.0).await;
    // Two requests in one write: the second waits in hyper's buffer while the first streams.
    let mut conn = BufReader::new(TcpStream::connect(s.addr).await.unwrap());
    let mut both = request("/chat/completions", &chat(12), "HTTP/1.1");
    both.extend(request("/chat/completions", &chat(7), "HTTP/1.1"));
    conn.get_mut().write_all(&both).await.unwrap();
    assert_eq!(streamed_tokens(&mut conn).await, 12);
    assert_eq!(streamed_tokens(&mut conn).await, 7);

    // hyper writes "100 Continue" when the handler first asks for the body; the pacer's first
    // chunk, due at once (TTFT 0), must still follow the response's own head.
    let body = chat(9).to_string();
    conn.get_mut()
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert!(head(&mut conn).await.starts_with("http/1.1 100"));
    conn.get_mut().write_all(body.as_bytes()).await.unwrap();
    assert_eq!(streamed_tokens(&mut conn).await, 9);
    assert!(metric(&s, DIRECT).await >= 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn http_1_0_streams_go_through_hyper_and_end_with_the_connection() {
    let s = timed(2.0, 1.0).await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(&request("/chat/completions", &chat(8), "HTTP/1.0"))
        .await
        .unwrap();
    let mut all = String::new();
    tokio::time::timeout(LIMIT, conn.read_to_string(&mut all))
        .await
        .expect("closed in time")
        .unwrap();
    let (h, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(!h.to_ascii_lowercase().contains("chunked"), "{h}");
    let evs = events(body);
    assert_eq!(evs.last(), Some(&"[DONE]"), "{body}");
    assert_eq!(metric(&s, DIRECT).await, 0);
    assert_eq!(metric(&s, HTTP).await, 8);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_every_token_once_it_reads_again() {
    // No gap between tokens: everything is due at once, so the pacer writes as fast as the socket
    // takes it, and a client with a small receive window that does not read fills it at once.
    let s = timed(1.0, 0.0).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = BufReader::new(socket.connect(s.addr).await.unwrap());
    let n = 4_000;
    send(&mut conn, "/chat/completions", &chat(n), "HTTP/1.1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(streamed_tokens(&mut conn).await, n as usize);
    let (direct, http) = (metric(&s, DIRECT).await, metric(&s, HTTP).await);
    assert!(direct >= 1, "the pacer wrote none of it");
    assert_eq!(direct + http, n, "each chunk counted once, however it went");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_gone_mid_stream_ends_its_request_and_the_server_serves_on() {
    let s = timed(1.0, 5.0).await;
    let mut conn = BufReader::new(TcpStream::connect(s.addr).await.unwrap());
    send(&mut conn, "/chat/completions", &chat(10_000), "HTTP/1.1").await;
    head(&mut conn).await;
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    drop(conn);
    let running = "vllm:num_requests_running{model_name=\"mock\",engine=\"0\"}";
    let gone = async {
        while metric(&s, running).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(LIMIT, gone)
        .await
        .expect("the request ended after its client left");
    let ok =
        "vllm:request_success_total{model_name=\"mock\",engine=\"0\",finished_reason=\"length\"}";
    assert_eq!(metric(&s, ok).await, 0);
    let again = client()
        .post(format!("{}/chat/completions", s.base_url()))
        .json(&chat(3))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.ends_with("data: [DONE]\n\n"), "{again}");
    s.stop().await.unwrap();
}

/// The server's sockets whose client has closed but which the server still holds (CLOSE_WAIT),
/// from the kernel's table: only this server's port, whatever other tests run beside it.
fn held_after_close(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "08"
        })
        .count()
}

#[tokio::test]
async fn clients_that_leave_during_a_long_wait_do_not_keep_their_sockets_open() {
    let s = timed(1.0, 1.0).await;
    let mut body = chat(100);
    body["stream_options"] = json!({"include_usage": false});
    for _ in 0..40 {
        let mut conn = BufReader::new(TcpStream::connect(s.addr).await.unwrap());
        let mut req = request("/chat/completions", &body, "HTTP/1.1");
        // A 60 s pause after the second token: the stream then waits a minute for its third.
        let at = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        req.splice(
            at + 2..at + 2,
            b"x-mock-fault: stall=60@2\r\n".iter().copied(),
        );
        conn.get_mut().write_all(&req).await.unwrap();
        head(&mut conn).await;
        // Both tokens before the pause, each in its chunk: size line, data, blank line, twice.
        for _ in 0..2 {
            let mut size = String::new();
            conn.read_line(&mut size).await.unwrap();
            let n = usize::from_str_radix(size.trim_end(), 16).unwrap();
            let mut data = vec![0u8; n + 2];
            conn.read_exact(&mut data).await.unwrap();
        }
    }
    // Every client has gone; within seconds (not the stall's minute) the server closes their
    // sockets.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = held_after_close(s.addr.port());
        if held == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{held} sockets still held by the server after their clients closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await.unwrap();
}
