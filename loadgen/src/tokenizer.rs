//! Resolves `--tokenizer` to a loaded tokenizer: the built-in project tokenizer, a local file or
//! folder, or a Hugging Face repo id found in the local Hugging Face cache.
//!
//! Cache layout (Python huggingface_hub's): `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; inside it `models--{org}--{name}/refs/main` holds a commit hash and the
//! file is `models--{org}--{name}/snapshots/{hash}/tokenizer.json`. Nothing is downloaded: when the
//! tokenizer is not in the cache, the error names the folder looked in and the flags that help.

use std::path::{Path, PathBuf};

use tokenperf_core::tokenizer::{PROJECT_TOKENIZER_NAME, TokenCounter};

/// LLMPerf's tokenizer, the default.
pub const DEFAULT_TOKENIZER: &str = "hf-internal-testing/llama-tokenizer";

/// Names that select the built-in project tokenizer.
pub const BUILTIN_NAMES: [&str; 2] = ["tokenperf", PROJECT_TOKENIZER_NAME];

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "tokenizer '{repo}' is not in the local Hugging Face cache (looked for {looked}); \
         put it there (e.g. `huggingface-cli download {repo} tokenizer.json` on a connected machine), \
         or pass --tokenizer PATH/TO/tokenizer.json, or --tokenizer tokenperf for the built-in tokenizer"
    )]
    NotCached { repo: String, looked: String },
    #[error(transparent)]
    Load(#[from] tokenperf_core::tokenizer::TokenizerError),
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

/// Loads the tokenizer `spec` names.
pub fn resolve(spec: &str) -> Result<TokenCounter, ResolveError> {
    if BUILTIN_NAMES.contains(&spec) {
        return Ok(TokenCounter::project());
    }
    let path = Path::new(spec);
    if path.exists() {
        return Ok(TokenCounter::from_path(path)?);
    }
    let cache = hub_cache();
    match find_in_cache(&cache, spec) {
        Some(f) => Ok(TokenCounter::from_path(&f)?),
        None => Err(ResolveError::NotCached {
            repo: spec.to_string(),
            looked: cache
                .join(format!("models--{}", spec.replace('/', "--")))
                .join("snapshots/*/tokenizer.json")
                .display()
                .to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::tokenizer::PROJECT_TOKENIZER_JSON;

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

    #[test]
    fn builtin_and_path_resolve() {
        assert_eq!(resolve("tokenperf").unwrap().name(), PROJECT_TOKENIZER_NAME);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), PROJECT_TOKENIZER_JSON).unwrap();
        assert!(resolve(dir.path().to_str().unwrap()).is_ok());
    }

    #[test]
    fn missing_repo_error_names_the_cache_path_and_the_flag() {
        let e = match resolve("no-such-org/no-such-tokenizer-xyz") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("resolved a tokenizer that does not exist"),
        };
        assert!(
            e.contains("models--no-such-org--no-such-tokenizer-xyz"),
            "{e}"
        );
        assert!(e.contains("--tokenizer"), "{e}");
    }
}
