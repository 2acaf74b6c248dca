//! Resolves `--tokenizer` to a loaded tokenizer: the built-in project tokenizer, a local file or
//! folder, or a Hugging Face repo id found in the local Hugging Face cache.
//!
//! Cache layout (Python huggingface_hub's): `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; inside it `models--{org}--{name}/refs/main` holds a commit hash and the
//! file is `models--{org}--{name}/snapshots/{hash}/tokenizer.json`. A tokenizer missing from the cache
//! is downloaded into it from `$HF_ENDPOINT` (default the Hugging Face Hub, with `$HF_TOKEN` if set),
//! unless `HF_HUB_OFFLINE=1`; when that fails, the error names the folder looked in, the download
//! error and the flags that help.

use std::path::{Path, PathBuf};

use tokenperf_core::tokenizer::{PROJECT_TOKENIZER_NAME, TokenCounter};

/// LLMPerf's tokenizer, the default.
pub const DEFAULT_TOKENIZER: &str = "hf-internal-testing/llama-tokenizer";

/// Names that select the built-in project tokenizer.
pub const BUILTIN_NAMES: [&str; 2] = ["tokenperf", PROJECT_TOKENIZER_NAME];

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "tokenizer '{repo}' is not in the local Hugging Face cache (looked for {looked}) and {download}; \
         put it there (e.g. `huggingface-cli download {repo} tokenizer.json` on a connected machine), \
         or pass --tokenizer PATH/TO/tokenizer.json, or --tokenizer tokenperf for the built-in tokenizer"
    )]
    NotCached {
        repo: String,
        looked: String,
        /// Why the download did not happen or failed.
        download: String,
    },
    #[error(
        "no such file: '{0}' (a Hugging Face repo id looks like org/name; `tokenperf` is the built-in tokenizer)"
    )]
    NoSuchFile(String),
    #[error(transparent)]
    Load(#[from] tokenperf_core::tokenizer::TokenizerError),
}

/// Whether `spec` reads as a file path rather than a Hugging Face repo id (`org/name`): it is
/// absolute or relative with a dot, names a `.json` file, or has more than one `/`.
pub fn looks_like_path(spec: &str) -> bool {
    spec.starts_with(['/', '.', '~'])
        || spec.contains('\\')
        || spec.ends_with(".json")
        || spec.matches('/').count() > 1
}

/// The Hugging Face hub cache folder, from the environment.
pub fn hub_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("huggingface").join("hub")
}

/// Where `repo`'s tokenizer.json sits in `cache`, if it is there.
pub fn find_in_cache(cache: &Path, repo: &str) -> Option<PathBuf> {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = dir.join("snapshots");
    if let Ok(hash) = std::fs::read_to_string(dir.join("refs").join("main")) {
        let f = snapshots.join(hash.trim()).join("tokenizer.json");
        if f.is_file() {
            return Some(f);
        }
    }
    // No usable ref: take any snapshot that has the file (newest name first, for determinism).
    let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("tokenizer.json"))
        .filter(|f| f.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Where and whether to download from.
#[derive(Debug, Clone)]
pub struct Hub {
    pub cache: PathBuf,
    /// `None`: offline, never download.
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

impl Hub {
    /// From the environment: `HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            cache: hub_cache(),
            endpoint: (!offline).then(|| {
                std::env::var("HF_ENDPOINT")
                    .ok()
                    .filter(|e| !e.trim().is_empty())
                    .unwrap_or_else(|| "https://huggingface.co".to_string())
            }),
            token: std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
        }
    }
}

/// Downloads `repo`'s tokenizer.json into the cache layout and returns its path.
pub async fn download(hub: &Hub, endpoint: &str, repo: &str) -> Result<PathBuf, String> {
    let url = format!(
        "{}/{repo}/resolve/main/tokenizer.json",
        endpoint.trim_end_matches('/')
    );
    let http =
        crate::client::http_client(1).map_err(|e| format!("building an HTTP client: {e}"))?;
    let mut req = http.get(&url);
    if let Some(t) = &hub.token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("downloading {url} failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("downloading {url} failed: HTTP {}", resp.status()));
    }
    // The Hub names the commit it served; without it, the snapshot is named after the ref.
    let commit = resp
        .headers()
        .get("x-repo-commit")
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .unwrap_or("main")
        .to_string();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("downloading {url} failed: {e}"))?;
    let dir = hub
        .cache
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = dir.join("snapshots").join(&commit);
    std::fs::create_dir_all(&snap).map_err(|e| format!("creating {}: {e}", snap.display()))?;
    std::fs::create_dir_all(dir.join("refs"))
        .map_err(|e| format!("creating the cache refs: {e}"))?;
    let file = snap.join("tokenizer.json");
    std::fs::write(&file, &bytes).map_err(|e| format!("writing {}: {e}", file.display()))?;
    std::fs::write(dir.join("refs").join("main"), &commit)
        .map_err(|e| format!("writing the cache ref: {e}"))?;
    Ok(file)
}

/// Loads the tokenizer `spec` names, with the Hugging Face settings from the environment.
pub async fn resolve(spec: &str) -> Result<TokenCounter, ResolveError> {
    resolve_with(spec, &Hub::from_env()).await
}

/// Loads the tokenizer `spec` names: built-in, a path, a cached repo, or a downloaded one.
pub async fn resolve_with(spec: &str, hub: &Hub) -> Result<TokenCounter, ResolveError> {
    if BUILTIN_NAMES.contains(&spec) {
        return Ok(TokenCounter::project());
    }
    let path = Path::new(spec);
    if path.exists() {
        return Ok(TokenCounter::from_path(path)?);
    }
    if looks_like_path(spec) {
        return Err(ResolveError::NoSuchFile(spec.to_string()));
    }
    if let Some(f) = find_in_cache(&hub.cache, spec) {
        return Ok(TokenCounter::from_path(&f)?);
    }
    let download = match &hub.endpoint {
        None => "HF_HUB_OFFLINE is set, so it was not downloaded".to_string(),
        Some(endpoint) => match download(hub, endpoint, spec).await {
            Ok(f) => return Ok(TokenCounter::from_path(&f)?),
            Err(e) => e,
        },
    };
    Err(ResolveError::NotCached {
        repo: spec.to_string(),
        looked: hub
            .cache
            .join(format!("models--{}", spec.replace('/', "--")))
            .join("snapshots/*/tokenizer.json")
            .display()
            .to_string(),
        download,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::tokenizer::PROJECT_TOKENIZER_JSON;

    #[tokio::test]
    async fn a_path_that_does_not_exist_is_no_such_file_not_a_repo_id() {
        let offline = Hub {
            cache: std::env::temp_dir().join("no-such-hf-cache"),
            endpoint: None,
            token: None,
        };
        for typo in [
            "./tokenizr.json",
            "/tmp/nope/tokenizer.json",
            "models/llama/tokenizer",
            "tok.json",
        ] {
            let e = resolve_with(typo, &offline).await.unwrap_err().to_string();
            assert!(e.starts_with("no such file"), "{typo}: {e}");
        }
        for repo in ["hf-internal-testing/llama-tokenizer", "gpt2"] {
            assert!(!looks_like_path(repo), "{repo}");
        }
    }

    #[test]
    fn finds_a_tokenizer_in_a_fake_cache_layout() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("models--org--tok");
        let snap = repo_dir.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "abc123\n").unwrap();
        std::fs::write(snap.join("tokenizer.json"), PROJECT_TOKENIZER_JSON).unwrap();
        let f = find_in_cache(dir.path(), "org/tok").unwrap();
        assert_eq!(f, snap.join("tokenizer.json"));
        assert!(find_in_cache(dir.path(), "org/other").is_none());
        // Without refs/main, any snapshot holding the file is used.
        std::fs::remove_file(repo_dir.join("refs/main")).unwrap();
        assert_eq!(find_in_cache(dir.path(), "org/tok").unwrap(), f);
    }

    fn offline(cache: &Path) -> Hub {
        Hub {
            cache: cache.to_path_buf(),
            endpoint: None,
            token: None,
        }
    }

    #[tokio::test]
    async fn builtin_and_path_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let hub = offline(dir.path());
        let builtin = resolve_with("tokenperf", &hub).await.unwrap();
        assert_eq!(builtin.name(), PROJECT_TOKENIZER_NAME);
        std::fs::write(dir.path().join("tokenizer.json"), PROJECT_TOKENIZER_JSON).unwrap();
        assert!(
            resolve_with(dir.path().to_str().unwrap(), &hub)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn missing_repo_offline_names_the_cache_path_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let e = match resolve_with("no-such-org/no-such-tokenizer", &offline(dir.path())).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("resolved a tokenizer that does not exist"),
        };
        assert!(e.contains("models--no-such-org--no-such-tokenizer"), "{e}");
        assert!(
            e.contains("HF_HUB_OFFLINE") && e.contains("--tokenizer"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn downloads_into_the_cache_layout_from_the_endpoint() {
        use wiremock::matchers::{header, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/org/tok/resolve/main/tokenizer.json"))
            .and(header("authorization", "Bearer t0ken"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("x-repo-commit", "abc123")
                    .set_body_string(PROJECT_TOKENIZER_JSON),
            )
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub {
            cache: dir.path().to_path_buf(),
            endpoint: Some(server.uri()),
            token: Some("t0ken".into()),
        };
        let t = resolve_with("org/tok", &hub).await.unwrap();
        let project = TokenCounter::project();
        assert_eq!(
            t.count("the harbor", false).unwrap(),
            project.count("the harbor", false).unwrap()
        );
        // Now it is cached: found without the endpoint.
        assert!(
            find_in_cache(dir.path(), "org/tok")
                .unwrap()
                .ends_with("snapshots/abc123/tokenizer.json")
        );
        assert!(resolve_with("org/tok", &offline(dir.path())).await.is_ok());
        // A repo the endpoint does not have: the error says so and still names the flag.
        let e = resolve_with("org/missing", &hub)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("404") && e.contains("--tokenizer"), "{e}");
    }
}
