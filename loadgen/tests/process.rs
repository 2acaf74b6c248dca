//! The loadgen binary as a user runs it: signals (SIGTERM from `timeout` or `docker stop`, SIGINT
//! from Ctrl-C) still write every file and exit 130; a full disk stops the run, names the file and
//! still prints the summary (exit 2); out-of-range flags exit 2 naming the flag, before any work;
//! a proxy in the environment is not used for the server measured.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokenperf_core::llmperf::file_stem;

mod common;
use common::{BASE_FLAGS, connect_proxy, mock};

const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

fn loadgen(base: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["--api-base", base])
        .args(BASE_FLAGS)
        .arg("--results-dir")
        .arg(dir)
        .args(extra)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// loadgen for ten minutes at two streams, writing into `dir`: a run that only a signal or a
/// failure ends.
fn long_run(base: &str, dir: &Path) -> Child {
    loadgen(
        base,
        dir,
        &["--duration", "600", "--num-concurrent-requests", "2"],
    )
    .spawn()
    .unwrap()
}

/// Waits (without blocking the runtime the mock runs on) for the child to exit, at most `limit`.
async fn wait(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("loadgen did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `path` holds at least one line.
async fn until_lines(path: &Path, limit: Duration) {
    let t = Instant::now();
    while std::fs::read_to_string(path).map_or(0, |s| s.lines().count()) == 0 {
        assert!(t.elapsed() < limit, "no record in {} yet", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_keep_every_file_and_exit_130() {
    let server = mock(50, 20).await;
    let stem = file_stem("m", 60, 8);
    for signal in ["TERM", "INT", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let child = long_run(&server.base_url(), dir.path());
        let jsonl = dir.path().join(format!("{stem}_requests.jsonl"));
        until_lines(&jsonl, Duration::from_secs(60)).await;
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = wait(child, Duration::from_secs(60)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(stderr.contains(&format!("SIG{signal}")), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("requests succeeded"), "{stdout}");
        let individual: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{stem}_individual_responses.json"))).unwrap(),
        )
        .unwrap();
        let lines = std::fs::read_to_string(&jsonl).unwrap();
        for l in lines.lines() {
            serde_json::from_str::<serde_json::Value>(l).expect("whole JSONL lines");
        }
        assert_eq!(individual.as_array().unwrap().len(), lines.lines().count());
        assert!(dir.path().join(format!("{stem}_summary.json")).exists());
        assert!(dir.path().join(format!("{stem}_run.json")).exists());
    }
    server.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_run_names_the_file_and_still_prints_the_summary() {
    let server = mock(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let stem = file_stem("m", 60, 8);
    // Every write into /dev/full fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink(
        "/dev/full",
        dir.path().join(format!("{stem}_requests.jsonl")),
    )
    .unwrap();
    let child = long_run(&server.base_url(), dir.path());
    let out = wait(child, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{stem}_requests.jsonl")) && stderr.contains("No space left"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("requests succeeded"), "{stdout}");
    server.stop().await.unwrap();
}

#[test]
fn out_of_range_flags_exit_2_and_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--timeout", "1e20"),
        ("--idle-timeout", "1e300"),
        ("--request-timeout", "inf"),
        ("--duration", "-1"),
        ("--warmup-seconds", "NaN"),
        ("--ramp-up", "1e10"),
        ("--mean-output-tokens", "100000000000"),
        ("--mean-input-tokens", "0"),
        ("--num-concurrent-requests", "0"),
        ("--max-num-completed-requests", "100000000000000"),
        ("--max-sse-line-bytes", "1"),
        ("--max-error-rate", "1.5"),
        ("--shared-prefix", "1:100000000000"),
        ("--burstiness", "0"),
        ("--api-base", "localhost:8000"),
    ] {
        let out = loadgen("http://127.0.0.1:9/v1", dir.path(), &[flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let out = loadgen(
        "http://127.0.0.1:9/v1",
        dir.path(),
        &["--request-rate", "1e12"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--request-rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_results_dir_says_it_wrote_nothing() {
    let server = mock(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(["--api-base", &server.base_url()])
            .args(BASE_FLAGS)
            .args(["--max-num-completed-requests", "2"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("no --results-dir given, so no files were written"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    server.stop().await.unwrap();
}

/// A proxy in the environment (here one where nothing listens) is not used for the server: the
/// measured requests and the model list at the start go to it directly, as they are measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_is_not_used_for_the_server() {
    let server = mock(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = loadgen(
        &server.base_url(),
        dir.path(),
        &["--max-num-completed-requests", "2"],
    );
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, "http://127.0.0.1:9");
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join(format!("{}_run.json", file_stem("m", 60, 8))),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        run["server_models"],
        serde_json::json!(["mock"]),
        "{stderr}"
    );
    server.stop().await.unwrap();
}

/// `TOKENPERF_PROXY` is the one variable that puts a proxy in the measurement: the requests go
/// through its tunnels with the credentials from its URL, and the run file records the proxy's
/// address but not the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenperf_proxy_in_the_environment_is_used_and_recorded_without_credentials() {
    let server = mock(1, 1).await;
    // base64("alice:secret")
    let (proxy, counts) = connect_proxy(Some("Basic YWxpY2U6c2VjcmV0")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = loadgen(
        &server.base_url(),
        dir.path(),
        &["--max-num-completed-requests", "2"],
    );
    cmd.env(
        "TOKENPERF_PROXY",
        proxy.replace("http://", "http://alice:secret@"),
    );
    let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(counts.tunnels.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(counts.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    let text = std::fs::read_to_string(
        dir.path()
            .join(format!("{}_run.json", file_stem("m", 60, 8))),
    )
    .unwrap();
    let run: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(run["plan"]["proxy"], serde_json::json!(proxy), "{text}");
    assert!(
        !text.contains("secret") && !text.contains("alice"),
        "{text}"
    );
    server.stop().await.unwrap();
}
