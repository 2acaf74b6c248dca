//! Helpers shared by loadgen's integration tests: a plan from flags, SSE bodies, and a raw TCP
//! server on port 0 whose connections a test scripts byte by byte (for peers no HTTP framework
//! would let us imitate: lying keep-alive, half-written heads, endless lines).
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use loadgen::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What every test run shares after `--api-base`: a small, fixed workload and the built-in
/// tokenizer (no network).
pub const BASE_FLAGS: [&str; 14] = [
    "--api-key",
    "k",
    "--tokenizer",
    "tokenperf",
    "--mean-input-tokens",
    "60",
    "--stddev-input-tokens",
    "10",
    "--mean-output-tokens",
    "8",
    "--stddev-output-tokens",
    "0",
    "--model",
    "m",
];

/// A validated plan for `base` with [`BASE_FLAGS`], `--quiet`, then `extra`.
pub fn flags(base: &str, extra: &[&str]) -> loadgen::Plan {
    let mut v = vec!["--api-base", base, "--quiet"];
    v.extend_from_slice(&BASE_FLAGS);
    v.extend_from_slice(extra);
    Args::from_flags(&v).unwrap().into_plan().unwrap()
}

/// A mock-server with fixed timing: `ttft_ms` to the first token, `itl_ms` between tokens.
pub async fn mock(ttft_ms: u64, itl_ms: u64) -> mock_server::Running {
    mock_server::spawn(mock_server::Settings {
        ttft_ms: ttft_ms as f64,
        itl_ms: itl_ms as f64,
        ..mock_server::Settings::default()
    })
    .await
    .unwrap()
}

/// A mock-server that closes the connection after every stream while advertising keep-alive
/// (llama.cpp's habit), with 1 ms to the first token and 0.5 ms between tokens.
pub async fn mock_closing_after_stream() -> mock_server::Running {
    mock_server::spawn(mock_server::Settings {
        ttft_ms: 1.0,
        itl_ms: 0.5,
        close_after_stream: true,
        ..mock_server::Settings::default()
    })
    .await
    .unwrap()
}

pub fn sse(events: &[&str], sep: &str) -> String {
    events
        .iter()
        .map(|e| format!("data: {e}{sep}{sep}"))
        .collect()
}

pub const ROLE: &str = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#;
pub const TOK: &str =
    r#"{"choices":[{"index":0,"delta":{"content":" the"},"finish_reason":null}]}"#;
pub const FIN: &str = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;

/// One HTTP/1.1 request as a raw server reads it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    pub head: String,
    pub body: Vec<u8>,
}

/// Reads one request (head, then a Content-Length body); `None` when the peer closed first.
pub async fn read_request(s: &mut TcpStream) -> Option<RawRequest> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let mut first = head.split_whitespace();
    Some(RawRequest {
        method: first.next().unwrap_or("").to_string(),
        path: first.next().unwrap_or("").to_string(),
        head,
        body,
    })
}

/// A 200 event-stream head, chunked, with the keep-alive headers llama.cpp's server sends.
pub const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Transfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n";

/// `data` as one HTTP chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A whole streamed response: the head, each event in its own chunk, then the last chunk.
pub fn stream_response(events: &[&str]) -> Vec<u8> {
    let mut out = STREAM_HEAD.as_bytes().to_vec();
    for e in events {
        out.extend(chunk(format!("data: {e}\n\n").as_bytes()));
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A complete non-streamed response with `status` and a body.
pub fn plain_response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A raw server on 127.0.0.1, port 0: each connection runs `serve(stream, connection number)`.
/// Returns its `/v1` base URL and how many connections it accepted. The accept loop ends with the
/// test's runtime.
pub async fn raw_server<F, Fut>(serve: F) -> (String, Arc<AtomicU64>)
where
    F: Fn(TcpStream, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::Relaxed);
            let serve = serve.clone();
            tokio::spawn(async move { serve(s, n).await });
        }
    });
    (format!("http://{addr}/v1"), accepted)
}

/// Writes `bytes`, ignoring a peer that has gone.
pub async fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes).await;
}

/// A run's output with every record it produced, kept by a [`loadgen::collect::KeepAll`] sink (the
/// run itself keeps none): `records` are the ones the results use, `all_records` every one.
pub struct Ran {
    pub out: loadgen::RunOutput,
    pub records: Vec<tokenperf_core::record::RequestRecord>,
    pub all_records: Vec<tokenperf_core::record::RequestRecord>,
}

impl std::ops::Deref for Ran {
    type Target = loadgen::RunOutput;
    fn deref(&self) -> &Self::Target {
        &self.out
    }
}

/// Runs `n` requests, `c` at a time, against `base` with `extra` flags and an idle timeout of
/// `idle_s` seconds (also the connect timeout), keeping the records.
pub async fn run_requests(base: &str, extra: &[&str], n: &str, c: &str, idle_s: &str) -> Ran {
    let mut v = extra.to_vec();
    v.extend([
        "--max-num-completed-requests",
        n,
        "--num-concurrent-requests",
        c,
        "--idle-timeout",
        idle_s,
    ]);
    run_keeping(flags(base, &v), loadgen::Control::new())
        .await
        .unwrap()
}

/// Runs `plan` and keeps its records.
pub async fn run_keeping(plan: loadgen::Plan, control: loadgen::Control) -> anyhow::Result<Ran> {
    let keep = loadgen::collect::KeepAll::default();
    let out = loadgen::run_plan_with(plan, control, vec![Box::new(keep.clone())]).await?;
    let all_records = keep.records();
    assert_eq!(
        all_records.len() as u64,
        out.records_received,
        "every record reaches every sink"
    );
    let records = all_records
        .iter()
        .filter(|r| r.excluded.is_none())
        .cloned()
        .collect();
    Ok(Ran {
        out,
        records,
        all_records,
    })
}

/// What a [`connect_proxy`] did: tunnels it opened (`CONNECT`), requests it forwarded in absolute
/// form (`GET http://…`), and requests it refused for want of credentials.
#[derive(Default)]
pub struct ProxyCounts {
    pub tunnels: AtomicU64,
    pub forwarded: AtomicU64,
    pub refused: AtomicU64,
}

/// An HTTP proxy on 127.0.0.1, port 0, as corporate ones behave: `CONNECT host:port` opens a
/// tunnel, a request in absolute form is forwarded, and with `auth` set a request without that
/// `Proxy-Authorization` gets a 407. Returns its `http://` URL (no credentials) and its counts.
pub async fn connect_proxy(auth: Option<&'static str>) -> (String, Arc<ProxyCounts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(ProxyCounts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(proxy_connection(s, auth, c.clone()));
        }
    });
    (format!("http://{addr}"), counts)
}

async fn proxy_connection(mut s: TcpStream, auth: Option<&str>, counts: Arc<ProxyCounts>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let given = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string());
    if auth.is_some_and(|a| given.as_deref() != Some(a)) {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        send(&mut s, b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n").await;
        return;
    }
    let (target, first_bytes) = match first.as_slice() {
        ["CONNECT", target, _] => {
            counts.tunnels.fetch_add(1, Ordering::Relaxed);
            send(&mut s, b"HTTP/1.1 200 Connection established\r\n\r\n").await;
            (target.to_string(), got[end..].to_vec())
        }
        [method, url, version] if url.starts_with("http://") => {
            counts.forwarded.fetch_add(1, Ordering::Relaxed);
            let rest = &url["http://".len()..];
            let (target, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let path = if path.is_empty() { "/" } else { path };
            let mut bytes = format!("{method} {path} {version}\r\n").into_bytes();
            let after_first = head.find("\r\n").map_or(head.len(), |i| i + 2);
            bytes.extend_from_slice(&got[after_first..]);
            (target.to_string(), bytes)
        }
        _ => {
            send(
                &mut s,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            )
            .await;
            return;
        }
    };
    let Ok(mut up) = TcpStream::connect(&target).await else {
        send(
            &mut s,
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        return;
    };
    if up.write_all(&first_bytes).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
    }
}
