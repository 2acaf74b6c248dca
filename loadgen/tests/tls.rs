//! loadgen over `https://`: a TLS front in this process on port 0, with a certificate from a CA
//! made for the test (`--ca-cert`), before our mock or a raw server. Streams must be read whole,
//! connections reused or retried as over plain TCP, and a TLS failure must be a record naming it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use loadgen::Exit;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokenperf_core::record::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::{ROLE, STREAM_HEAD, TOK, chunk, connect_proxy, raw_server, read_request, send};

/// A CA made for one test, and a server certificate it signed for 127.0.0.1.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tokenperf test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_chain: vec![cert.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// How the front ends a connection when its upstream has closed.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// `close_notify`, then FIN: a clean TLS end.
    Clean,
    /// The TCP connection dropped with no `close_notify` (a truncated stream).
    Abrupt,
}

/// A TLS front on 127.0.0.1, port 0, passing each connection's bytes to `upstream`. Returns its
/// `https://…/v1` base and how many connections it accepted; it ends with the test's runtime.
async fn tls_front(upstream: SocketAddr, pki: &Pki, end: End) -> (String, Arc<AtomicU64>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    return;
                };
                relay(tls, up, end).await;
            });
        }
    });
    (format!("https://{addr}/v1"), accepted)
}

/// Copies both ways until the upstream closes, then ends the TLS side as `end` says.
async fn relay(mut tls: tokio_rustls::server::TlsStream<TcpStream>, up: TcpStream, end: End) {
    if end == End::Clean {
        let mut up = up;
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
        return;
    }
    let (mut up_rd, mut up_wr) = up.into_split();
    let (mut tls_rd, mut tls_wr) = tokio::io::split(tls);
    let to_server = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tls_rd, &mut up_wr).await;
        tls_rd
    });
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = up_rd.read(&mut buf).await {
        if tls_wr.write_all(&buf[..n]).await.is_err() || tls_wr.flush().await.is_err() {
            break;
        }
    }
    // Both halves dropped without `shutdown`: the socket closes with no close_notify sent.
    to_server.abort();
}

/// `--ca-cert` for `pki`'s CA, in a temporary folder that lives as long as the returned guard.
fn ca_file(pki: &Pki) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

async fn run(base: &str, ca: &str, n: &str, c: &str) -> common::Ran {
    common::run_requests(base, &["--ca-cert", ca], n, c, "10").await
}

/// Streams from our mock through TLS are read whole, every token timed, over the connections the
/// pool opened at the start.
#[tokio::test]
async fn streams_over_tls_are_read_whole_with_the_ca_given() {
    let pki = pki();
    let server = common::mock(3, 1).await;
    let (base, accepted) = tls_front(server.addr, &pki, End::Clean).await;
    let (_dir, ca) = ca_file(&pki);
    let out = run(&base, &ca, "30", "3").await;
    assert_eq!(out.exit, Exit::Ok);
    assert_eq!(out.records.len(), 30);
    for r in &out.records {
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        assert_eq!(r.output_tokens.value(), 8, "{r:?}");
        assert_eq!(r.output_token_count(), 8, "every token event read: {r:?}");
        let head = r.response_head_at_us.unwrap();
        let at: Vec<u64> = r.events.iter().map(|e| e.at_us()).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
        assert!(at[0] >= head && r.done_at_us.unwrap() >= *at.last().unwrap());
    }
    // The model list at the start went through TLS with the same roots.
    assert_eq!(
        out.info.server_models.as_deref(),
        Some(&["mock".to_string()][..])
    );
    // Three connections for the streams, one for the model list.
    assert!(
        accepted.load(Ordering::Relaxed) <= 4,
        "{} TLS connections for 3 streams and the model list",
        accepted.load(Ordering::Relaxed)
    );
}

/// A hosted API behind a corporate proxy: TLS end to end through `CONNECT` tunnels, the model
/// list too, with the given CA.
#[tokio::test]
async fn streams_over_tls_go_through_a_proxy_tunnel() {
    let pki = pki();
    let server = common::mock(2, 1).await;
    let (base, _) = tls_front(server.addr, &pki, End::Clean).await;
    let (proxy, counts) = connect_proxy(None).await;
    let (_dir, ca) = ca_file(&pki);
    let extra = ["--ca-cert", &ca, "--proxy", &proxy];
    let out = common::run_requests(&base, &extra, "10", "2", "10").await;
    assert_eq!(out.exit, Exit::Ok, "{:?}", out.records);
    assert!(out.records.iter().all(|r| r.output_token_count() == 8));
    assert_eq!(
        out.info.server_models.as_deref(),
        Some(&["mock".to_string()][..])
    );
    // Two for the streams and one for the model list, all tunnels (nothing forwarded in the clear).
    let tunnels = counts.tunnels.load(Ordering::Relaxed);
    assert!((3..=4).contains(&tunnels), "{tunnels} tunnels");
    assert_eq!(counts.forwarded.load(Ordering::Relaxed), 0);
}

/// llama.cpp's habit behind TLS: the server closes after every stream while advertising keep-alive.
/// Over TLS the pool cannot see the close before reusing a connection, so each such request is
/// retried once on a new one, and none is lost.
#[tokio::test]
async fn a_tls_server_that_closes_after_each_stream_costs_no_request() {
    let pki = pki();
    let server = common::mock_closing_after_stream().await;
    let (base, _) = tls_front(server.addr, &pki, End::Clean).await;
    let (_dir, ca) = ca_file(&pki);
    let out = run(&base, &ca, "20", "2").await;
    assert_eq!(out.summary.number_errors, 0, "{:?}", out.records);
    assert_eq!(out.records.len(), 20);
    assert!(out.records.iter().all(|r| r.output_tokens.value() == 8));
}

/// A certificate from a CA other than the one given is refused at the handshake: a connect error
/// that names the certificate, and a run that exits as failed. (Only the given CA and the
/// platform's roots are trusted, so this holds on any machine.)
#[tokio::test]
async fn a_certificate_from_another_ca_is_a_connect_error() {
    let (served, trusted) = (pki(), pki());
    let server = common::mock(1, 1).await;
    let (base, _) = tls_front(server.addr, &served, End::Clean).await;
    let (_dir, ca) = ca_file(&trusted);
    let out = run(&base, &ca, "2", "1").await;
    assert_eq!(out.exit, Exit::NoSuccess);
    for r in &out.records {
        assert!(
            matches!(&r.outcome, Outcome::Connect { message }
                if message.contains("TLS handshake") && message.contains("certificate")),
            "{:?}",
            r.outcome
        );
    }
}

/// A TLS stream cut mid-body without `close_notify`: the tokens read are kept and the record says
/// how the stream ended, at once rather than at the idle timeout.
#[tokio::test]
async fn a_tls_stream_cut_without_close_notify_is_a_stream_error() {
    let pki = pki();
    let (plain, _) = raw_server(|mut s, _| async move {
        if read_request(&mut s).await.is_none() {
            return;
        }
        send(&mut s, STREAM_HEAD.as_bytes()).await;
        for e in [ROLE, TOK, TOK] {
            send(&mut s, &chunk(format!("data: {e}\n\n").as_bytes())).await;
        }
        // No finish event, no last chunk: the server goes away mid-stream.
    })
    .await;
    let upstream: SocketAddr = plain
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .parse()
        .unwrap();
    let (base, _) = tls_front(upstream, &pki, End::Abrupt).await;
    let (_dir, ca) = ca_file(&pki);
    let started = std::time::Instant::now();
    let out = run(&base, &ca, "1", "1").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let r = &out.records[0];
    assert!(
        matches!(&r.outcome, Outcome::Stream { message } if message.contains("close_notify")),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.output_token_count(), 2, "{r:?}");
    assert_eq!(out.exit, Exit::NoSuccess);
}
