//! Token counting: the project's own tokenizer (a byte-level BPE trained on `datasets/corpus.txt`,
//! shipped in `datasets/tokenizer/tokenizer.json` and embedded here), and loading any Hugging Face
//! `tokenizer.json` from a file or folder. Nothing in this module touches the network.
//!
//! The project tokenizer exists so that tests and the offline quick start never need the Hugging Face
//! Hub. It is regenerated deterministically by [`train_project_tokenizer`]; a unit test checks that the
//! committed file is exactly what training produces, so the file cannot drift from its recipe.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;

use crate::wordmemo::WordMemo;

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
    /// Byte-level BPE tokenizers' words, counted once each (`None` for other tokenizers).
    words: Option<WordMemo>,
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
        let tokenizer = parse_tokenizer_json(PROJECT_TOKENIZER_JSON)
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
        let load_err = |message: String| TokenizerError::Load {
            path: file.clone(),
            message,
        };
        let json = std::fs::read_to_string(&file).map_err(|e| load_err(e.to_string()))?;
        let tokenizer = parse_tokenizer_json(&json).map_err(|e| load_err(e.to_string()))?;
        Ok(Self::new(tokenizer, file.display().to_string()))
    }

    fn new(tokenizer: Tokenizer, name: String) -> Self {
        let tokenizer = split_into_words(tokenizer);
        let specials = tokenizer
            .encode_fast("", true)
            .map_or(0, |e| e.get_ids().len());
        let words = WordMemo::for_tokenizer(&tokenizer);
        Self {
            tokenizer,
            name,
            specials,
            words,
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
        if let Some(words) = &self.words {
            let mut n = 0;
            if words
                .for_each_word(&self.tokenizer, text, |_, starts| n += starts.len())?
                .is_some()
            {
                return Ok(n + if special { self.specials } else { 0 });
            }
        }
        self.tokenizer
            .encode_fast(text, special)
            .map(|e| e.len())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The byte offset where each token of `text` starts (no special tokens), as the crate's
    /// `encode(text, false)` has it: after the post-processor's trimming, so a byte-level token
    /// that begins with a space starts after it.
    pub fn token_starts(&self, text: &str) -> Result<Vec<usize>, TokenizerError> {
        if let Some(words) = &self.words {
            let mut out = Vec::with_capacity(text.len() / 4 + 1);
            let each = |at: usize, starts: &[u32]| {
                out.extend(starts.iter().map(|&s| at + s as usize));
            };
            if words.for_each_word(&self.tokenizer, text, each)?.is_some() {
                return Ok(out);
            }
        }
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_offsets().iter().map(|(start, _)| *start).collect())
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

/// SentencePiece's word boundary, which LLaMA-style normalizers put for every space.
const WORD_START: char = '\u{2581}';

/// A SentencePiece-style BPE (LLaMA's: spaces normalized to `▁`, no pre-tokenizer) hands its model
/// the whole text as one word, and the crate's BPE merges it with a priority queue: a 1,000-token
/// reply cost milliseconds to count, and on one core token counting then held requests back
/// (BENCHMARKS.md). When no token of the vocabulary has `▁` after another character, no merge can
/// cross the start of a `▁` run, so the text can go to the model in words, each starting at such a
/// run, with exactly the same tokens and offsets, and the model's word cache then serves the
/// common words. Any tokenizer that does not meet that condition is returned as it is.
fn split_into_words(mut tokenizer: Tokenizer) -> Tokenizer {
    use tokenizers::ModelWrapper;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::tokenizer::normalizer::SplitDelimiterBehavior;
    if tokenizer.get_pre_tokenizer().is_some() {
        return tokenizer;
    }
    let ModelWrapper::BPE(bpe) = tokenizer.get_model() else {
        return tokenizer;
    };
    let plain = bpe.dropout.is_none()
        && bpe.continuing_subword_prefix.is_none()
        && bpe.end_of_word_suffix.is_none()
        && !bpe.ignore_merges;
    let inside = |t: &str| {
        t.chars()
            .zip(t.chars().skip(1))
            .any(|(a, b)| a != WORD_START && b == WORD_START)
    };
    let vocab = bpe.get_vocab();
    // With `▁` outside the vocabulary, an unknown character before it could fuse with it into one
    // unknown token across the boundary.
    let known_start = vocab.contains_key(WORD_START.encode_utf8(&mut [0; 4]) as &str);
    let safe = plain && (known_start || !bpe.fuse_unk) && !vocab.keys().any(|t| inside(t));
    if !safe {
        return tokenizer;
    }
    let Ok(split) = Split::new(
        SplitPattern::Regex(format!("{WORD_START}+")),
        SplitDelimiterBehavior::MergedWithNext,
        false,
    ) else {
        return tokenizer;
    };
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
    tokenizer
}

/// Parses a `tokenizer.json` into the tokenizer the `tokenizers` crate would make of it, faster for
/// BPE models (LLaMA's, GPT-2's, most on the Hub).
///
/// Why our own step: the crate reads the model through an untagged enum, which copies all of it
/// (LLaMA's: 32,000 tokens and 61,000 merges) into serde's buffer and again into a JSON value before
/// building the BPE. For LLaMA's file that was a quarter of the load's time and an eighth of its
/// peak memory (`core/examples/tokenizer_load.rs`), on loadgen's way to its first request. Here the model goes straight into the crate's own BPE
/// deserializer, and everything else through the crate as before. A file this path does not take as
/// it is (another model, anything it cannot read) goes to the crate whole, so other models and every
/// error read exactly as the crate's; tests check both paths give the same tokenizer.
pub fn parse_tokenizer_json(json: &str) -> tokenizers::Result<Tokenizer> {
    match bpe_model_first(json) {
        Some(tokenizer) => Ok(tokenizer),
        None => json.parse(),
    }
}

/// The crate's `added_tokens` entry (its own type is private): the id is required, as there.
#[derive(serde::Deserialize)]
struct AddedTokenWithId {
    #[allow(dead_code)]
    id: u32,
    #[serde(flatten)]
    token: tokenizers::AddedToken,
}

/// [`parse_tokenizer_json`]'s fast path: the BPE model parsed alone, the rest by the crate with an
/// empty model in its place, then the added tokens, which take their ids from the real model (as the
/// crate adds them after building). `None` for anything it does not take.
fn bpe_model_first(json: &str) -> Option<Tokenizer> {
    // Borrowed keys and raw values: the top level is read without copying the model.
    let parts: HashMap<&str, &RawValue> = serde_json::from_str(json).ok()?;
    let model: BPE = serde_json::from_str(parts.get("model")?.get()).ok()?;
    let mut rest = String::from("{");
    for (key, value) in parts
        .iter()
        .filter(|(k, _)| !matches!(**k, "model" | "added_tokens"))
    {
        rest.push_str(&serde_json::to_string(key).ok()?);
        rest.push(':');
        rest.push_str(value.get());
        rest.push(',');
    }
    rest.push_str(r#""model":{"type":"BPE","vocab":{},"merges":[]}}"#);
    let mut tokenizer: Tokenizer = rest.parse().ok()?;
    tokenizer.with_model(model);
    if let Some(added) = parts.get("added_tokens") {
        let added: Vec<AddedTokenWithId> = serde_json::from_str(added.get()).ok()?;
        tokenizer
            .add_tokens(added.into_iter().map(|a| a.token))
            .ok()?;
    }
    Some(tokenizer)
}

/// A builder for a BPE tokenizer with any of the crate's normalizers, pre-tokenizers and so on.
type BpeTokenizerBuilder = TokenizerBuilder<
    BPE,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Trains the project tokenizer: byte-level BPE (GPT-2 style pre-tokenizer, so any text encodes and
/// decodes losslessly), `vocab_size` tokens, on the lines of `corpus`. Deterministic for a given corpus.
pub fn train_project_tokenizer(
    corpus: &str,
    vocab_size: usize,
) -> Result<Tokenizer, TokenizerError> {
    let err = |e: tokenizers::Error| TokenizerError::Train(e.to_string());
    let mut tk = BpeTokenizerBuilder::default()
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

    /// The project tokenizer reshaped as LLaMA's is: merges as "a b" strings, an unknown token,
    /// added tokens in the vocabulary and beyond it (special or not), a normalizer and a template
    /// that adds a BOS token.
    fn llama_shaped() -> String {
        let mut t: serde_json::Value = serde_json::from_str(PROJECT_TOKENIZER_JSON).unwrap();
        let model = &mut t["model"];
        let n = model["vocab"].as_object().unwrap().len() as u32;
        let merges: Vec<String> = model["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()))
            .collect();
        model["merges"] = serde_json::json!(merges);
        model["unk_token"] = serde_json::json!("!");
        model["fuse_unk"] = serde_json::json!(true);
        let token = |id: u32, content: &str, special: bool| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": !special, "special": special})
        };
        t["added_tokens"] = serde_json::json!([
            token(0, "!", true),
            token(n, "<s>", true),
            token(n + 1, "<extra>", false)
        ]);
        t["normalizer"] =
            serde_json::json!({"type": "Replace", "pattern": {"String": "\t"}, "content": " "});
        t["post_processor"] = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [n], "tokens": ["<s>"]}}});
        serde_json::to_string_pretty(&t).unwrap()
    }

    fn assert_same_as_the_crates(json: &str) {
        let fast = bpe_model_first(json).expect("the fast path takes a BPE tokenizer.json");
        let theirs: Tokenizer = json.parse().unwrap();
        assert_eq!(
            fast.to_string(false).unwrap(),
            theirs.to_string(false).unwrap()
        );
        let text = "<s>The harbor\tlamps <extra> come on! before the tide, über café 🚂";
        for special in [false, true] {
            let ids = |t: &Tokenizer| t.encode(text, special).unwrap().get_ids().to_vec();
            assert_eq!(ids(&fast), ids(&theirs));
        }
    }

    #[test]
    fn the_fast_bpe_path_makes_the_crates_tokenizer() {
        assert_same_as_the_crates(PROJECT_TOKENIZER_JSON);
        let llama = llama_shaped();
        assert_same_as_the_crates(&llama);
        // The added tokens kept the model's ids: in the vocabulary, and after it.
        let t = parse_tokenizer_json(&llama).unwrap();
        let n = t.get_vocab_size(false) as u32;
        assert_eq!(t.token_to_id("!"), Some(0));
        assert_eq!(t.token_to_id("<s>"), Some(n));
        assert_eq!(t.token_to_id("<extra>"), Some(n + 1));
        assert_eq!(t.encode("x", true).unwrap().get_ids()[0], n);
    }

    #[test]
    fn other_models_and_bad_files_read_as_the_crate_reads_them() {
        let word_level = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null, "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2},
            "unk_token": "[UNK]"}}"#;
        assert!(bpe_model_first(word_level).is_none());
        let theirs: Tokenizer = word_level.parse().unwrap();
        assert_eq!(
            parse_tokenizer_json(word_level)
                .unwrap()
                .to_string(false)
                .unwrap(),
            theirs.to_string(false).unwrap()
        );
        let llama = llama_shaped();
        let half = (0..llama.len() / 2)
            .rev()
            .find(|&i| llama.is_char_boundary(i))
            .unwrap();
        let bad = [
            llama.replacen("\"version\": \"1.0\"", "\"version\": \"2.0\"", 1),
            llama[..half].to_string(),
            llama.replacen("\"id\": 0,", "", 1),
            llama.replacen("\"merges\"", "\"merged\"", 1),
            String::new(),
        ];
        for json in &bad {
            let ours = parse_tokenizer_json(json).map(|_| ()).unwrap_err();
            let theirs = json.parse::<Tokenizer>().map(|_| ()).unwrap_err();
            assert_eq!(ours.to_string(), theirs.to_string());
        }
    }

    /// A SentencePiece-style BPE as LLaMA's is shaped: spaces normalized to `▁` (and one put
    /// first), no pre-tokenizer, byte fallback; its vocabulary trained on the corpus in words, so
    /// that `▁` only starts a token. With `cross`, one token with `▁` inside is added.
    fn sentencepiece_shaped(cross: bool) -> String {
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        let mut tk = BpeTokenizerBuilder::default()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
                WORD_START,
                PrependScheme::Always,
                true,
            ))))
            .build()
            .unwrap();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(700)
            .show_progress(false)
            .build();
        tk.train(&mut trainer, PROJECT_CORPUS.lines()).unwrap();
        let t: Tokenizer = tk.into();
        let mut t: serde_json::Value = serde_json::from_str(&t.to_string(false).unwrap()).unwrap();
        t["pre_tokenizer"] = serde_json::Value::Null;
        t["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
        let model = &mut t["model"];
        model["byte_fallback"] = serde_json::json!(true);
        model["fuse_unk"] = serde_json::json!(true);
        let vocab = model["vocab"].as_object_mut().unwrap();
        let mut next = vocab.len() as u64;
        for b in 0..=255u8 {
            vocab.insert(format!("<0x{b:02X}>"), serde_json::json!(next));
            next += 1;
        }
        if cross {
            vocab.insert(format!("e{WORD_START}"), serde_json::json!(next));
        }
        serde_json::to_string(&t).unwrap()
    }

    /// Words split at `▁` runs give the crate's own tokens and offsets on text with runs of
    /// spaces, tabs and newlines, characters outside the vocabulary, special-looking strings and
    /// `▁` itself; a vocabulary with `▁` inside a token is left whole.
    #[test]
    fn sentencepiece_text_goes_to_the_model_in_words_with_the_same_tokens() {
        let json = sentencepiece_shaped(false);
        let theirs: Tokenizer = json.parse().unwrap();
        let ours = TokenCounter::new(parse_tokenizer_json(&json).unwrap(), "sp".into());
        assert!(theirs.get_pre_tokenizer().is_none());
        assert!(
            ours.inner().get_pre_tokenizer().is_some(),
            "split into words"
        );
        let mut texts: Vec<String> = PROJECT_CORPUS.lines().take(200).map(String::from).collect();
        texts.push(PROJECT_CORPUS.chars().take(5000).collect());
        for t in [
            "",
            " ",
            "   ",
            "  two  spaces  ",
            "\n\nnew\nlines \n",
            "tabs\tand  \t mixed",
            "über café 🚂 日本語",
            "<s>special</s> in <unk> text",
            "\u{2581}already\u{2581}marked \u{2581}\u{2581} x",
            "trailing   ",
            "a  b   c    d",
        ] {
            texts.push(t.to_string());
        }
        for text in &texts {
            for special in [false, true] {
                let a = theirs.encode(text.as_str(), special).unwrap();
                let b = ours.inner().encode(text.as_str(), special).unwrap();
                assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
                assert_eq!(a.get_offsets(), b.get_offsets(), "{text:?}");
            }
        }
        let crossing = sentencepiece_shaped(true);
        let left = TokenCounter::new(parse_tokenizer_json(&crossing).unwrap(), "x".into());
        assert!(
            left.inner().get_pre_tokenizer().is_none(),
            "a token crosses: left whole"
        );
        // Tokenizers with a pre-tokenizer of their own are left as they are.
        let project = TokenCounter::project();
        let committed: Tokenizer = PROJECT_TOKENIZER_JSON.parse().unwrap();
        assert_eq!(
            project.inner().to_string(false).unwrap(),
            committed.to_string(false).unwrap()
        );
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
