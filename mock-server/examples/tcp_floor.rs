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
        _ => eprintln!(
            "usage: tcp_floor write|read [--port P] [--streams N] [--gap-us G] [--seconds S]"
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
