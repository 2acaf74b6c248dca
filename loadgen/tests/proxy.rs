//! loadgen through an HTTP proxy (`--proxy`): a proxy in this process on port 0 before our mock.
//! Every measured connection must be a tunnel through it, credentials in the URL must reach it,
//! and a proxy that refuses must give records that name it, never a hang or a direct connection.

use std::sync::atomic::Ordering;

use loadgen::Exit;
use tokenperf_core::record::Outcome;

mod common;
use common::connect_proxy;

async fn run(base: &str, proxy: &str, n: &str, c: &str) -> common::Ran {
    common::run_requests(base, &["--proxy", proxy], n, c, "10").await
}

/// Streams through the proxy are read whole over tunnels the pool opened and reused, and the
/// model list goes through the same proxy.
#[tokio::test]
async fn streams_are_read_through_tunnels_of_the_proxy() {
    let server = common::mock(2, 1).await;
    let (proxy, counts) = connect_proxy(None).await;
    let out = run(&format!("http://{}/v1", server.addr), &proxy, "20", "3").await;
    assert_eq!(out.exit, Exit::Ok);
    assert_eq!(out.records.len(), 20);
    for r in &out.records {
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        assert_eq!(r.output_token_count(), 8, "every token event read: {r:?}");
    }
    let tunnels = counts.tunnels.load(Ordering::Relaxed);
    assert!(
        (3..=4).contains(&tunnels),
        "{tunnels} tunnels for 3 streams of 20 requests"
    );
    assert_eq!(
        counts.forwarded.load(Ordering::Relaxed),
        1,
        "the model list"
    );
    assert_eq!(
        out.info.server_models.as_deref(),
        Some(&["mock".to_string()][..])
    );
}

/// Credentials in the proxy's URL are percent-decoded and sent as Basic, on every tunnel.
#[tokio::test]
async fn credentials_in_the_url_reach_the_proxy() {
    let server = common::mock(1, 1).await;
    // base64("alice:p@ss w")
    let (proxy, counts) = connect_proxy(Some("Basic YWxpY2U6cEBzcyB3")).await;
    let proxy = proxy.replace("http://", "http://alice:p%40ss%20w@");
    let out = run(&format!("http://{}/v1", server.addr), &proxy, "4", "2").await;
    assert_eq!(out.exit, Exit::Ok, "{:?}", out.records);
    assert_eq!(counts.refused.load(Ordering::Relaxed), 0);
    assert!(counts.tunnels.load(Ordering::Relaxed) >= 2);
}

/// A proxy that wants credentials it was not given: every request is a connect failure naming
/// the proxy and its answer, the run exits as failed, and no request went around the proxy.
#[tokio::test]
async fn a_proxy_that_refuses_gives_connect_records_that_name_it() {
    let server = common::mock(1, 1).await;
    let (proxy, counts) = connect_proxy(Some("Basic eDp5")).await;
    let out = run(&format!("http://{}/v1", server.addr), &proxy, "3", "1").await;
    assert_eq!(out.exit, Exit::NoSuccess);
    assert_eq!(out.records.len(), 3);
    for r in &out.records {
        assert!(
            matches!(&r.outcome, Outcome::Connect { message }
                if message.contains("proxy") && message.contains("407 Proxy Authentication Required")),
            "{:?}",
            r.outcome
        );
    }
    assert!(counts.refused.load(Ordering::Relaxed) >= 3);
    assert_eq!(counts.tunnels.load(Ordering::Relaxed), 0);
}

/// A proxy that is not there: connect records naming it, not the server.
#[tokio::test]
async fn a_proxy_that_is_not_there_is_named() {
    let server = common::mock(1, 1).await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let out = run(&format!("http://{}/v1", server.addr), &proxy, "2", "1").await;
    assert_eq!(out.exit, Exit::NoSuccess);
    for r in &out.records {
        assert!(
            matches!(&r.outcome, Outcome::Connect { message }
                if message.contains(&format!("connecting to the proxy {}", &proxy["http://".len()..]))),
            "{:?}",
            r.outcome
        );
    }
}

/// Proxies that misbehave at the tunnel's start: silent, an endless answer, bytes after their
/// answer, or not HTTP at all. Each is a connect record saying which, within the connect timeout,
/// and no request reaches the server.
#[tokio::test]
async fn misbehaving_proxies_are_connect_records_that_say_how() {
    let server = common::mock(1, 1).await;
    let cases: [(&'static [u8], &str); 4] = [
        (b"", "no connection within"),
        (b"HTTP/1.1 200 OK\r\nx-long: ", "over 16384 bytes"),
        (
            b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            "bytes after its answer",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not HTTP"),
    ];
    for (answer, says) in cases {
        let (base, _) = common::raw_server(move |mut s, _| async move {
            let _ = common::read_request(&mut s).await;
            common::send(&mut s, answer).await;
            if answer.ends_with(b": ") {
                for _ in 0..64 {
                    common::send(&mut s, &[b'a'; 1024]).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        })
        .await;
        let proxy = base.trim_end_matches("/v1").to_string();
        let server_base = format!("http://{}/v1", server.addr);
        let out = common::run_requests(&server_base, &["--proxy", &proxy], "2", "1", "1").await;
        assert_eq!(out.exit, Exit::NoSuccess);
        for r in &out.records {
            assert!(
                matches!(&r.outcome, Outcome::Connect { message } if message.contains(says)),
                "{says}: {:?}",
                r.outcome
            );
        }
    }
}
