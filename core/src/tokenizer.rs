//! Token counting: the project's own tokenizer (a byte-level BPE trained on `datasets/corpus.txt`,
//! shipped in `datasets/tokenizer/tokenizer.json` and embedded here), and loading any Hugging Face
//! `tokenizer.json` from a file or folder. Nothing in this module touches the network.
//!
//! The project tokenizer exists so that tests and the offline quick start never need the Hugging Face
//! Hub. It is regenerated deterministically by [`train_project_tokenizer`]; a unit test checks that the
//! committed file is exactly what training produces, so the file cannot drift from its recipe.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder,
};

/// The project's prompt corpus: original text written for tokenperf.
pub const PROJECT_CORPUS: &str = include_str!("../../datasets/corpus.txt");

/// The project tokenizer's `tokenizer.json`, as committed.
pub const PROJECT_TOKENIZER_JSON: &str = include_str!("../../datasets/tokenizer/tokenizer.json");

/// Name under which the embedded tokenizer is reported.
pub const PROJECT_TOKENIZER_NAME: &str = "tokenperf-corpus-bpe";

/// Vocabulary size the project tokenizer is trained to.
pub const PROJECT_VOCAB_SIZE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer file '{path}' could not be loaded: {message}")]
    Load { path: PathBuf, message: String },
    #[error("no tokenizer.json in folder '{0}'")]
    NoFileInFolder(PathBuf),
    #[error("tokenizer training failed: {0}")]
    Train(String),
    #[error("tokenizer failed on input: {0}")]
    Encode(String),
}

/// A loaded tokenizer and the name it is reported under.
pub struct TokenCounter {
    tokenizer: Tokenizer,
    name: String,
    /// Tokens the tokenizer adds around any text when asked for special tokens (BOS for LLaMA).
    specials: usize,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCounter")
            .field("name", &self.name)
            .finish()
    }
}

impl TokenCounter {
    /// The project's own tokenizer, from the embedded file.
    pub fn project() -> Self {
        let tokenizer = PROJECT_TOKENIZER_JSON
            .parse::<Tokenizer>()
            .expect("the embedded project tokenizer is valid (checked by a unit test)");
        Self::new(tokenizer, PROJECT_TOKENIZER_NAME.to_string())
    }

    /// A `tokenizer.json`, or a folder that holds one.
    pub fn from_path(path: &Path) -> Result<Self, TokenizerError> {
        let file = if path.is_dir() {
            let f = path.join("tokenizer.json");
            if !f.is_file() {
                return Err(TokenizerError::NoFileInFolder(path.to_path_buf()));
            }
            f
        } else {
            path.to_path_buf()
        };
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| TokenizerError::Load {
            path: file.clone(),
            message: e.to_string(),
        })?;
        Ok(Self::new(tokenizer, file.display().to_string()))
    }

    fn new(tokenizer: Tokenizer, name: String) -> Self {
        let specials = tokenizer
            .encode_fast("", true)
            .map_or(0, |e| e.get_ids().len());
        Self {
            tokenizer,
            name,
            specials,
        }
    }

    /// Tokens added around any text when special tokens are asked for (BOS for LLaMA, 0 for the
    /// project's own): `count(text, true) == count(text, false) + special_tokens()`.
    pub fn special_tokens(&self) -> usize {
        self.specials
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`; `special` adds the tokenizer's special tokens (e.g. LLaMA's BOS).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.tokenizer
            .encode_fast(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Number of tokens in `text`; `special` counts the special tokens the tokenizer adds.
    pub fn count(&self, text: &str, special: bool) -> Result<usize, TokenizerError> {
        self.tokenizer
            .encode_fast(text, special)
            .map(|e| e.len())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Token ids of `text` with the byte offset where each token ends (no special tokens).
    pub fn encode_with_ends(&self, text: &str) -> Result<Vec<(u32, usize)>, TokenizerError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(id, (_, end))| (*id, *end))
            .collect())
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Splits `text` into the token counts of consecutive pieces: `pieces[i]` is a byte length, and
    /// the result says how many tokens of the whole text end inside each piece. One encoding of the
    /// whole text, so merges across piece boundaries are counted once (per-piece re-tokenization, the
    /// bug several tools had, would not).
    pub fn attribute(&self, text: &str, pieces: &[usize]) -> Result<Vec<u32>, TokenizerError> {
        let ends = self.encode_with_ends(text)?;
        let mut out = vec![0u32; pieces.len()];
        let mut boundary = 0usize;
        let mut piece = 0usize;
        for (_, end) in ends {
            while piece < pieces.len() && end > boundary + pieces[piece] {
                boundary += pieces[piece];
                piece += 1;
            }
            if piece < pieces.len() {
                out[piece] += 1;
            } else if let Some(last) = out.last_mut() {
                *last += 1;
            }
        }
        Ok(out)
    }
}

/// Trains the project tokenizer: byte-level BPE (GPT-2 style pre-tokenizer, so any text encodes and
/// decodes losslessly), `vocab_size` tokens, on the lines of `corpus`. Deterministic for a given corpus.
pub fn train_project_tokenizer(
    corpus: &str,
    vocab_size: usize,
) -> Result<Tokenizer, TokenizerError> {
    let err = |e: tokenizers::Error| TokenizerError::Train(e.to_string());
    let mut tk = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::default()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))))
    .with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))))
    .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
    .build()
    .map_err(err)?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tk.train(&mut trainer, corpus.lines()).map_err(err)?;
    Ok(tk.into())
}

/// The project tokenizer as pretty JSON, exactly as committed in `datasets/tokenizer/tokenizer.json`.
pub fn project_tokenizer_json() -> Result<String, TokenizerError> {
    let tk = train_project_tokenizer(PROJECT_CORPUS, PROJECT_VOCAB_SIZE)?;
    let mut s = tk
        .to_string(true)
        .map_err(|e| TokenizerError::Train(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_tokenizer_is_what_training_produces() {
        let fresh = project_tokenizer_json().unwrap();
        assert!(
            fresh == PROJECT_TOKENIZER_JSON,
            "datasets/tokenizer/tokenizer.json is stale: regenerate it with \
             `cargo run -p tokenperf-core --example write_tokenizer`"
        );
    }

    #[test]
    fn project_tokenizer_round_trips_and_counts() {
        let t = TokenCounter::project();
        let text = "The harbor lamps come on before the tide, über café 🚂\r\n  x";
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert_eq!(t.count(text, false).unwrap(), ids.len());
        // Trained on the corpus, so a corpus line is far shorter in tokens than in bytes.
        let line = PROJECT_CORPUS.lines().next().unwrap();
        assert!(t.count(line, false).unwrap() * 3 < line.len());
        assert_eq!(t.name(), PROJECT_TOKENIZER_NAME);
    }

    #[test]
    fn attribute_counts_each_token_once_across_pieces() {
        let t = TokenCounter::project();
        let pieces = [" the harb", "or lamps", " come"];
        let text: String = pieces.concat();
        let counts = t
            .attribute(&text, &pieces.iter().map(|p| p.len()).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(
            counts.iter().sum::<u32>() as usize,
            t.count(&text, false).unwrap()
        );
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn loading_a_missing_file_names_it() {
        let e = TokenCounter::from_path(Path::new("/nonexistent/tok.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tok.json"), "{e}");
        let dir = std::env::temp_dir();
        let e = TokenCounter::from_path(&dir).unwrap_err();
        assert!(e.to_string().contains("no tokenizer.json"), "{e}");
    }
}
