//! The README as executable documentation: every command in its fenced `sh` blocks runs, in order, in
//! one scratch folder (the clone's `datasets/` linked in), against an in-process mock-server on a free
//! port, with no network (`HF_HUB_OFFLINE=1`) and an empty Hugging Face cache, as on a fresh machine.
//!
//! A command must exit 0, or, where it needs the default tokenizer, exit 2 with the documented error;
//! it is then run again once that tokenizer is in the cache (the project's own, under LLMPerf's repo
//! id), as after the one-time download, and must exit 0. Counts and durations are shrunk so the whole
//! README runs in seconds: `--max-num-completed-requests` to at most 12, time flags to 1/20.
//!
//! Why not trycmd: it checks each command against a transcript written into the document, and these
//! commands print latencies that differ on every run, need a server to talk to, and write folders.
//! What the test needs is only "runs as written, or fails as documented", which this checks.
//!
//! Commands that are not examples to run here are listed in [`NOT_RUN`] with the reason.

use std::path::Path;
use std::process::Command;

/// Leading words of commands this test does not run, and why.
const NOT_RUN: [(&str, &str); 7] = [
    (
        "./quickstart.sh",
        "builds with cargo; CI runs the same pipeline in tests/tests/e2e.rs",
    ),
    ("cargo test", "it is this test suite"),
    ("cargo install", "installs into ~/.cargo/bin"),
    (
        "docker",
        "needs a container runtime and a registry; the Dockerfile's build is `cargo build --release --locked -p loadgen`",
    ),
    (
        "sed ",
        "pipes the manifest into kubectl; tests/tests/k8s.rs checks the manifest against Kubernetes' types",
    ),
    ("kubectl", "needs a cluster"),
    (
        "analyze results/k8s",
        "reads what kubectl copied; the same merge runs on results/split above and in tests/tests/shards.rs",
    ),
];

/// The documented failure of a command that needs the default tokenizer on a fresh machine.
const DOCUMENTED_TOKENIZER_ERROR: &str =
    "tokenizer 'hf-internal-testing/llama-tokenizer' is not in the local Hugging Face cache";

/// The fenced `sh` blocks of `markdown`, each as its commands (continuation lines joined,
/// comments and blank lines dropped).
fn sh_commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            in_sh = !in_sh && info.trim() == "sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // A `#` that starts a word starts a comment (no example quotes one).
        let code = match line.find(" #") {
            Some(i) => &line[..i],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        let code = code.trim();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        if !pending.trim().is_empty() {
            out.push(pending.trim().to_string());
        }
        pending.clear();
    }
    out
}

/// Shrinks counts and durations so an example runs in seconds.
fn shrink(args: &mut [String]) {
    for i in 1..args.len() {
        let flag = args[i - 1].clone();
        let Ok(v) = args[i].parse::<f64>() else {
            continue;
        };
        args[i] = match flag.as_str() {
            "--max-num-completed-requests" => (v as u64).min(12).to_string(),
            "--duration" | "--warmup-seconds" | "--cooldown-seconds" => (v / 20.0).to_string(),
            _ => continue,
        };
    }
}

/// Puts the project's tokenizer in `cache` as LLMPerf's default tokenizer would be after a download.
fn seed_default_tokenizer(cache: &Path) {
    let snap = cache.join("models--hf-internal-testing--llama-tokenizer");
    std::fs::create_dir_all(snap.join("snapshots/local")).unwrap();
    std::fs::create_dir_all(snap.join("refs")).unwrap();
    std::fs::write(snap.join("refs/main"), "local").unwrap();
    std::fs::write(
        snap.join("snapshots/local/tokenizer.json"),
        tokenperf_core::tokenizer::PROJECT_TOKENIZER_JSON,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = sh_commands(&readme);
    assert!(commands.len() >= 10, "{commands:#?}");
    let server = mock_server::spawn(mock_server::Settings {
        ttft_ms: 2.0,
        itl_ms: 0.2,
        ..Default::default()
    })
    .await
    .unwrap();
    let bins = tokenperf_tests::bin_dir();
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("datasets"), cwd.join("datasets")).unwrap();
    let cache = scratch.path().join("hf-cache");
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("HF_HUB_OFFLINE".into(), "1".into()),
        ("HF_HUB_CACHE".into(), cache.display().to_string()),
    ];
    let mut ran = 0;
    for line in &commands {
        if let Some((_, why)) = NOT_RUN.iter().find(|(c, _)| line.starts_with(c)) {
            eprintln!("not run here ({why}): {line}");
            continue;
        }
        let mut args = shlex::split(line).unwrap_or_else(|| panic!("cannot split: {line}"));
        if args[0] == "export" {
            for kv in &args[1..] {
                let (k, v) = kv.split_once('=').unwrap();
                // The README's mock is on port 5543; this one is wherever the OS put it.
                let v = if k == "OPENAI_API_BASE" {
                    server.base_url()
                } else {
                    v.to_string()
                };
                env.push((k.to_string(), v));
            }
            continue;
        }
        shrink(&mut args);
        let run = |args: &[String], env: &[(String, String)]| {
            let out = tokio::task::block_in_place(|| {
                Command::new(bins.join(&args[0]))
                    .args(&args[1..])
                    .current_dir(&cwd)
                    .env("OPENAI_API_BASE", server.base_url())
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap()
            });
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.code(), stderr)
        };
        let (code, stderr) = run(&args, &env);
        eprintln!("ran ({code:?}): {line}");
        match code {
            Some(0) => {}
            Some(2) if stderr.contains(DOCUMENTED_TOKENIZER_ERROR) => {
                // A fresh machine fails as documented; after the tokenizer is in place it works.
                seed_default_tokenizer(&cache);
                let (code, stderr) = run(&args, &env);
                assert_eq!(code, Some(0), "after the download: {line}\n{stderr}");
            }
            other => panic!("README command failed ({other:?}): {line}\n{stderr}"),
        }
        ran += 1;
    }
    assert!(ran >= 9, "ran only {ran} README commands");
    server.stop().await.unwrap();
}

#[test]
fn the_readme_parser_joins_lines_and_drops_comments() {
    let md = "text\n```sh\n# a comment\nloadgen --a 1 \\\n  --b 2   # trailing\n\nanalyze x\n```\n```rust\nnot_sh()\n```\n";
    assert_eq!(sh_commands(md), vec!["loadgen --a 1 --b 2", "analyze x"]);
    let mut a: Vec<String> = [
        "loadgen",
        "--duration",
        "60",
        "--max-num-completed-requests",
        "200",
    ]
    .map(String::from)
    .to_vec();
    shrink(&mut a);
    assert_eq!(a[2], "3");
    assert_eq!(a[4], "12");
}
