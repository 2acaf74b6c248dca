//! The output vocabulary: real words that are each exactly one token of the server's tokenizer.
//!
//! Guarantee: a response made of these words re-tokenizes, with the same tokenizer and without
//! special tokens, to exactly one token per word, so the count in `usage` equals the count a client
//! gets from the streamed text. Two families of tokenizers are served:
//! * those whose pre-tokenizer splits at spaces and keeps the space in the next token (byte-level BPE:
//!   the project tokenizer, GPT-2, LLaMA-3): every word goes out with its leading space;
//! * SentencePiece-style ones that turn spaces into `▁` and prepend one to the text (LLaMA-2,
//!   Mistral): a leading space would become a token of its own, so a response's first word goes out
//!   without it.
//!
//! Every word is checked at start-up, alone and after another word; a tokenizer that merges across
//! spaces, or yields too few such words, is refused at start-up with a message.

use std::collections::HashSet;
use tokenperf_core::rng::Rng;

use tokenperf_core::tokenizer::{PROJECT_CORPUS, TokenCounter};

/// Words that are single tokens, each stored with its leading space.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    words: Vec<String>,
    /// SentencePiece-style: a response's first word goes out without its leading space.
    first_without_space: bool,
}

/// Fewest words the mock needs for varied output.
const MIN_WORDS: usize = 16;

impl Vocabulary {
    /// Collects the words of the project corpus that encode to exactly one token, alone and after
    /// another word, trying the byte-level convention first and the SentencePiece one second.
    /// Tokenizers that share few words with the corpus fall back to any alphabetic token of three or
    /// more letters.
    pub fn from_tokenizer(t: &TokenCounter) -> Result<Self, String> {
        let corpus: HashSet<String> = PROJECT_CORPUS
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 2)
            .map(str::to_ascii_lowercase)
            .collect();
        let mut best = 0;
        for first_without_space in [false, true] {
            let real = Self::checked(t, first_without_space, |w| {
                corpus.contains(&w.to_ascii_lowercase())
            });
            let words = if real.len() >= MIN_WORDS {
                real
            } else {
                Self::checked(t, first_without_space, |w| w.len() >= 3)
            };
            if words.len() >= MIN_WORDS {
                return Ok(Self {
                    words,
                    first_without_space,
                });
            }
            best = best.max(words.len());
        }
        Err(format!(
            "tokenizer '{}' has only {best} words that stay one token each in running text; the mock \
             needs a tokenizer that splits at spaces (byte-level BPE, or SentencePiece-style)",
            t.name()
        ))
    }

    /// Single-token words under one convention, kept only if they stay one token after another word
    /// (which catches tokenizers that merge across spaces).
    fn checked(
        t: &TokenCounter,
        first_without_space: bool,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let first = |w: &str| -> String {
            if first_without_space {
                w[1..].to_string()
            } else {
                w.to_string()
            }
        };
        let mut words = Self::single_token_words(t, |w| keep(w), |w| first(w));
        let probe = words.first().cloned().unwrap_or_default();
        words.retain(|w| t.count(&format!("{}{w}", first(&probe)), false).ok() == Some(2));
        words
    }

    /// Vocabulary entries that are a space plus letters accepted by `keep`, and one token when
    /// encoded as `form` writes them.
    fn single_token_words(
        t: &TokenCounter,
        keep: impl Fn(&str) -> bool,
        form: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut words: Vec<String> = t
            .inner()
            .get_vocab(false)
            .into_keys()
            .filter_map(|tok| {
                // Byte-level BPE writes a leading space as 'Ġ'; SentencePiece as '▁'.
                let w = tok.strip_prefix('Ġ').or_else(|| tok.strip_prefix('▁'))?;
                (w.len() >= 2 && w.chars().all(|c| c.is_ascii_alphabetic()))
                    .then(|| format!(" {w}"))
            })
            .filter(|w| keep(&w[1..]) && t.count(&form(w), false).ok() == Some(1))
            .collect();
        words.sort();
        words.dedup();
        words
    }

    /// Word number `index` of a response, picked at random: with its leading space, except the first
    /// word for a SentencePiece-style tokenizer.
    pub fn pick(&self, rng: &mut Rng, index: u64) -> &str {
        let w = &self.words[rng.below(self.words.len())];
        if index == 0 && self.first_without_space {
            &w[1..]
        } else {
            w
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_words_retokenize_to_one_token_each() {
        let t = TokenCounter::project();
        let v = Vocabulary::from_tokenizer(&t).unwrap();
        assert!(v.len() >= 16);
        // Real words: every one appears in the corpus.
        for w in &v.words {
            assert!(
                PROJECT_CORPUS
                    .to_lowercase()
                    .contains(&w.trim().to_lowercase()),
                "{w}"
            );
        }
        let mut rng = Rng::new(1);
        let text: String = (0..500).map(|i| v.pick(&mut rng, i).to_string()).collect();
        assert_eq!(t.count(&text, false).unwrap(), 500);
        assert!(
            !v.first_without_space,
            "byte-level BPE keeps every leading space"
        );
    }

    /// A SentencePiece-style tokenizer made here, shaped like LLaMA-2's: the normalizer prepends `▁`
    /// and turns spaces into `▁`, so a leading space is a token of its own; BOS is added as a
    /// special token.
    fn sentencepiece_style(words: &[&str]) -> tempfile::NamedTempFile {
        let mut vocab = serde_json::Map::new();
        for (i, t) in ["<unk>", "<s>", "\u{2581}"].iter().enumerate() {
            vocab.insert((*t).into(), i.into());
        }
        for w in words {
            let n = vocab.len();
            vocab.insert(format!("\u{2581}{w}"), n.into());
        }
        let special = |id: u32, t: &str| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<unk>"), special(1, "<s>")],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": {"type": "Split", "pattern": {"String": "\u{2581}"},
                "behavior": "MergedWithNext", "invert": false},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let mut f = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::io::Write::write_all(&mut f, json.to_string().as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_sentencepiece_style_tokenizer_gets_exact_counts_too() {
        let words = [
            "harbor", "tide", "lantern", "river", "stone", "window", "morning", "garden", "bridge",
            "market", "letter", "winter", "orchard", "meadow", "kettle", "candle", "ladder",
            "pocket", "basket", "thunder",
        ];
        let file = sentencepiece_style(&words);
        let t = TokenCounter::from_path(file.path()).unwrap();
        // Its leading-space convention: " harbor" is two tokens, "harbor" one.
        assert_eq!(t.count(" harbor", false).unwrap(), 2);
        assert_eq!(t.count("harbor", false).unwrap(), 1);
        let v = Vocabulary::from_tokenizer(&t).unwrap();
        assert!(v.first_without_space);
        assert_eq!(v.len(), words.len());
        let mut rng = Rng::new(7);
        for n in [1u64, 2, 50, 400] {
            let text: String = (0..n).map(|i| v.pick(&mut rng, i).to_string()).collect();
            assert!(!text.starts_with(' '));
            assert_eq!(t.count(&text, false).unwrap() as u64, n, "{text}");
            // With the BOS a client like LLMPerf adds, one more.
            assert_eq!(t.count(&text, true).unwrap() as u64, n + 1);
        }
    }
}
