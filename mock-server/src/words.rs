//! The output vocabulary: real words that are each exactly one token of the server's tokenizer.
//!
//! Guarantee: for a tokenizer whose pre-tokenizer splits text at spaces (byte-level BPE such as the
//! project tokenizer, GPT-2 and LLaMA-3 families), a stream made of these words, each with its leading
//! space, re-tokenizes to exactly one token per word. Every word is checked at start-up by encoding it
//! alone and in a pair, so the count reported in `usage` equals the count a client gets by tokenizing the
//! streamed text with the same tokenizer. A tokenizer that yields no such words is refused at start-up.

use std::collections::HashSet;
use tokenperf_core::rng::Rng;

use tokenperf_core::tokenizer::{PROJECT_CORPUS, TokenCounter};

/// Words that are single tokens, each stored with its leading space.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    words: Vec<String>,
}

impl Vocabulary {
    /// Collects the words of the project corpus that encode to exactly one token, alone and after
    /// another word. Tokenizers that share few words with the corpus fall back to any alphabetic token
    /// of three or more letters.
    pub fn from_tokenizer(t: &TokenCounter) -> Result<Self, String> {
        let corpus: HashSet<String> = PROJECT_CORPUS
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 2)
            .map(str::to_ascii_lowercase)
            .collect();
        let real: Vec<String> =
            Self::single_token_words(t, |w| corpus.contains(&w.to_ascii_lowercase()));
        let mut words = if real.len() >= 16 {
            real
        } else {
            Self::single_token_words(t, |w| w.len() >= 3)
        };
        // The pair check catches tokenizers that merge across spaces (no space-splitting pre-tokenizer).
        let probe = words.first().cloned().unwrap_or_default();
        words.retain(|w| t.count(&format!("{probe}{w}"), false).ok() == Some(2));
        if words.len() < 16 {
            return Err(format!(
                "tokenizer '{}' has only {} single-token words; the mock needs a tokenizer whose \
                 pre-tokenizer splits at spaces (byte-level BPE)",
                t.name(),
                words.len()
            ));
        }
        Ok(Self { words })
    }

    /// Vocabulary entries that are a space plus letters accepted by `keep`, and one token when encoded.
    fn single_token_words(t: &TokenCounter, keep: impl Fn(&str) -> bool) -> Vec<String> {
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
            .filter(|w| keep(&w[1..]) && t.count(w, false).ok() == Some(1))
            .collect();
        words.sort();
        words
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// A pseudo-random word (leading space included).
    pub fn pick(&self, rng: &mut Rng) -> &str {
        &self.words[rng.below(self.words.len())]
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
        let text: String = (0..500).map(|_| v.pick(&mut rng).to_string()).collect();
        assert_eq!(t.count(&text, false).unwrap(), 500);
    }
}
