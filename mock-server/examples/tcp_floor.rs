//! The kernel's floor for streaming tokens over loopback TCP on this machine: what one `write` per
//! token per stream costs with no HTTP, JSON, runtime or pacer on top. BENCHMARKS.md compares the
//! mock-server's cost per token and loadgen's cost per event with these figures.
//!
//! Two processes, so each can be pinned to its own core:
//!
//! ```sh
//! taskset -c 0 target/release/examples/tcp_floor write --port 7000 --streams 1000 --gap-us 5000 --seconds 5 &
//! taskset -c 1 target/release/examples/tcp_floor read --port 7000 --streams 1000
//! ```
//!
//! The writer accepts `streams` connections, then writes one 230-byte message (the size of a chat
//! chunk in an HTTP chunk) to each stream every `gap-us`, on absolute deadlines spread evenly over
//! the gap. It spins between deadlines, so it reports the time spent inside `write` calls: the
//! kernel's cost per message. The reader is the smallest tokio client: one task per stream reading
//! into a buffer. It reports its CPU time per message received.
//!
//! `sse` is the same writer speaking just enough HTTP/1.1 and SSE for loadgen, so that loadgen can
//! be measured at the pace the bare reader is (the mock, on one core at 100,000 tokens a second,
//! falls behind and batches events, which makes a client's cost per event look lower):
//!
//! ```sh
//! taskset -c 0 target/release/examples/tcp_floor sse --port 7000 --streams 1000 --gap-us 10000 --tokens 100 &
//! taskset -c 1 target/release/loadgen --api-base http://127.0.0.1:7000/v1 --model m --tokenizer tokenperf ...
//! ```
//!
//! Each connection, in accept order, owns a slot of the same paced round: at its slot a connection
//! in a stream gets its next event, one `write` of a completions chunk as the mock frames it (the
//! last token's write also carries the finish chunk, `[DONE]` and the body's end), and a connection
//! between streams has its socket read for a request. A `POST .../completions` starts a stream of
//! `tokens` events at the next round; any other request gets an empty 404. It serves until every
//! connection it accepted has closed, or for `--seconds` (default 600), and reports its lateness
//! as the bare writer does.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokenperf_core::clock::process_usage;
use tokenperf_core::stats::quantile;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = arg(&args, "--port", 7000) as u16;
    let streams = arg(&args, "--streams", 1000) as usize;
    match args.get(1).map(String::as_str) {
        Some("write") => write(
            port,
            streams,
            Duration::from_micros(arg(&args, "--gap-us", 5000)),
            Duration::from_secs(arg(&args, "--seconds", 5)),
        ),
        Some("read") => read(port, streams, args.iter().any(|a| a == "--spin")),
        Some("sse") => sse::serve(
            port,
            streams,
            Duration::from_micros(arg(&args, "--gap-us", 10000)),
            Duration::from_secs(arg(&args, "--seconds", 600)),
            arg(&args, "--tokens", 100) as u32,
        ),
        _ => eprintln!(
            "usage: tcp_floor write|read|sse [--port P] [--streams N] [--gap-us G] [--seconds S] \
             [--tokens T]"
        ),
    }
}

fn write(port: u16, streams: usize, gap: Duration, run: Duration) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let mut socks: Vec<TcpStream> = (0..streams)
        .map(|_| {
            let (s, _) = listener.accept().expect("accept");
            s.set_nodelay(true).expect("nodelay");
            s
        })
        .collect();
    let msg = [b'x'; 230];
    let cpu0 = process_usage().cpu_s;
    let start = Instant::now();
    let step = gap / streams as u32;
    let (mut writes, mut in_write, mut late_sum) = (0u64, Duration::ZERO, Duration::ZERO);
    // Every write's lateness in µs, for the percentiles: the floor under which the mock's own
    // lateness at the same rate cannot go. Bounded by the run: 8 bytes a write.
    let mut late_us: Vec<f64> =
        Vec::with_capacity((run.as_nanos() / step.as_nanos().max(1)) as usize + 1);
    let mut due = start;
    'run: loop {
        for s in &mut socks {
            due += step;
            if due - start > run {
                break 'run;
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            let t0 = Instant::now();
            s.write_all(&msg).expect("write");
            let t1 = Instant::now();
            in_write += t1 - t0;
            late_sum += t0 - due;
            late_us.push((t0 - due).as_secs_f64() * 1e6);
            writes += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = process_usage().cpu_s - cpu0;
    late_us.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| quantile(&late_us, q).unwrap_or(0.0);
    println!(
        "writer: {writes} writes in {wall:.2} s ({:.0}/s offered), {:.2} µs inside write() each \
         → {:.0}k writes per core-second at most; lateness mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, \
         max {:.1} µs; CPU {cpu:.2} s (spinning included)",
        writes as f64 / wall,
        in_write.as_secs_f64() * 1e6 / writes as f64,
        writes as f64 / in_write.as_secs_f64() / 1e3,
        late_sum.as_secs_f64() * 1e6 / writes as f64,
        at(0.5),
        at(0.99),
        late_us.last().copied().unwrap_or(0.0),
    );
}

fn read(port: u16, streams: usize, spin: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let (mut reads, mut bytes) = (0u64, 0u64);
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return (reads, bytes),
                        Ok(n) => {
                            reads += 1;
                            bytes += n as u64;
                        }
                    }
                }
            }));
        }
        // --spin: a task that only yields keeps the thread out of a blocking epoll_wait, so the
        // writer never has to wake it (no cross-core wake-up per message).
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if spin {
            let done = done.clone();
            tokio::spawn(async move {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
            });
        }
        let cpu0 = process_usage().cpu_s;
        let (mut reads, mut bytes) = (0u64, 0u64);
        for t in tasks {
            let (r, b) = t.await.expect("reader task");
            reads += r;
            bytes += b;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let cpu = process_usage().cpu_s - cpu0;
        let msgs = bytes / 230;
        println!(
            "reader: {msgs} messages in {reads} reads, CPU {cpu:.2} s → {:.2} µs per message, {:.0}k messages per core-second",
            cpu * 1e6 / msgs as f64,
            msgs as f64 / cpu / 1e3
        );
    });
}

mod sse {
    //! The bare writer speaking HTTP/1.1 and SSE (see the file's comment).

    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    const WORDS: [&str; 8] = [
        " iron", " and", " wind", " the", " river", " of", " light", ",",
    ];
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        transfer-encoding: chunked\r\n\r\n";
    const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";

    struct Conn {
        s: TcpStream,
        /// A request's bytes until it is whole.
        got: Vec<u8>,
        /// Events left in the current stream; 0 between streams.
        left: u32,
        open: bool,
    }

    /// One completions chunk as the mock frames it: an HTTP chunk holding `data: {json}\n\n`.
    fn chunk(json: &str) -> Vec<u8> {
        let data = format!("data: {json}\n\n");
        format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
    }

    fn event(id: usize, text: &str, finish: &str) -> String {
        format!(
            r#"{{"id":"cmpl-floor{id:020}","object":"text_completion","created":1796276772,"model":"m","choices":[{{"index":0,"text":"{text}","logprobs":null,"finish_reason":{finish}}}]}}"#
        )
    }

    /// Writes all of `bytes`, waiting out a full send buffer; false once the peer is gone.
    fn send(s: &mut TcpStream, bytes: &[u8]) -> bool {
        let mut at = 0;
        while at < bytes.len() {
            match s.write(&bytes[at..]) {
                Ok(0) => return false,
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads what has come of a request; at a whole one, answers its head (a stream starts) or a
    /// 404. A request is whole at its blank line plus `content-length` bytes.
    fn poll_request(c: &mut Conn, tokens: u32) {
        let mut buf = [0u8; 4096];
        loop {
            match c.s.read(&mut buf) {
                Ok(0) => {
                    c.open = false;
                    return;
                }
                // A request is a few hundred bytes; a peer sending more is dropped, not buffered.
                Ok(_) if c.got.len() > 1 << 20 => {
                    c.open = false;
                    return;
                }
                Ok(n) => c.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    c.open = false;
                    return;
                }
            }
        }
        let Some(end) = c.got.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        let head = String::from_utf8_lossy(&c.got[..end]).to_ascii_lowercase();
        let body = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if c.got.len() < end + 4 + body {
            return;
        }
        c.got.drain(..end + 4 + body);
        let stream =
            head.starts_with("post ") && head.lines().next().unwrap_or("").contains("completions");
        c.open = send(&mut c.s, if stream { HEAD } else { NOT_FOUND });
        c.left = if stream { tokens } else { 0 };
    }

    /// The stream's next event, one of `events`; its last is the matching one of `lasts`, which
    /// also ends the stream and the body. Both built once, so a slot only writes.
    fn next_event(c: &mut Conn, tokens: u32, events: &[Vec<u8>], lasts: &[Vec<u8>]) {
        let k = (tokens - c.left) as usize % events.len();
        c.left -= 1;
        let bytes = if c.left == 0 { &lasts[k] } else { &events[k] };
        c.open = send(&mut c.s, bytes);
    }

    pub fn serve(port: u16, streams: usize, gap: Duration, run: Duration, tokens: u32) {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let events: Vec<Vec<u8>> = WORDS.iter().map(|w| chunk(&event(1, w, "null"))).collect();
        let mut end = chunk(&event(1, "", "\"length\""));
        end.extend_from_slice(&chunk("[DONE]"));
        end.extend_from_slice(b"0\r\n\r\n");
        let lasts: Vec<Vec<u8>> = events.iter().map(|e| [&e[..], &end[..]].concat()).collect();
        let mut conns: Vec<Conn> = Vec::new();
        let (first, _) = listener.accept().expect("accept");
        listener.set_nonblocking(true).expect("nonblocking");
        let start = Instant::now();
        let step = gap / streams.max(1) as u32;
        let (mut writes, mut late_us) = (0u64, Vec::<f64>::new());
        let (mut in_write, mut in_poll, mut polls) = (Duration::ZERO, Duration::ZERO, 0u64);
        let mut pending = Some(first);
        let mut due = start;
        while start.elapsed() < run {
            while let Some(s) = pending
                .take()
                .or_else(|| listener.accept().ok().map(|(s, _)| s))
            {
                s.set_nodelay(true).expect("nodelay");
                s.set_nonblocking(true).expect("nonblocking");
                conns.push(Conn {
                    s,
                    got: Vec::new(),
                    left: 0,
                    open: true,
                });
            }
            if conns.iter().all(|c| !c.open) {
                break;
            }
            // One round: each connection's slot, on absolute deadlines spread over the gap.
            for i in 0..streams.max(conns.len()) {
                due += step;
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                let Some(c) = conns.get_mut(i).filter(|c| c.open) else {
                    continue;
                };
                if c.left == 0 {
                    let t = Instant::now();
                    poll_request(c, tokens);
                    in_poll += t.elapsed();
                    polls += 1;
                    continue;
                }
                let t0 = Instant::now();
                next_event(c, tokens, &events, &lasts);
                in_write += t0.elapsed();
                // Bounded by the run, as the bare writer's: 8 bytes an event.
                if late_us.len() < 50_000_000 {
                    late_us.push((t0 - due).as_secs_f64() * 1e6);
                }
                writes += 1;
            }
        }
        late_us.sort_unstable_by(f64::total_cmp);
        let at = |q: f64| super::quantile(&late_us, q).unwrap_or(0.0);
        println!(
            "sse writer: {writes} events to {} connections in {:.2} s, {:.2} µs inside write() each; \
             {polls} request polls, {:.2} µs each; lateness p50 {:.1} µs, p99 {:.1} µs",
            conns.len(),
            start.elapsed().as_secs_f64(),
            in_write.as_secs_f64() * 1e6 / writes.max(1) as f64,
            in_poll.as_secs_f64() * 1e6 / polls.max(1) as f64,
            at(0.5),
            at(0.99),
        );
    }
}
