//! Token starts of text for byte-level BPE tokenizers (GPT-2's family, the project's own), found a
//! word at a time, with each distinct word encoded once by the `tokenizers` crate and remembered.
//!
//! Why our own step: the crate's encode cost about 1 µs per token of a reply (a 100-word reply
//! took 103–143 µs; `core/examples/count_cost.rs`), two thirds of it in the pre-tokenizer: a
//! backtracking regex, and a normalized string with byte alignments built for every word. loadgen
//! counts every reply it reads, so on one core that was a tenth of its CPU per event (issue 17).
//! Here the same words are found with the regex crate's automaton (searched anchored at each word,
//! with one cache for the whole text), and a word seen before costs a hash lookup. Exactness rests on the crate itself: a word is only ever encoded by the crate, and
//! only tokenizers whose encoding of a text is its words' encodings laid end to end take this path
//! (see [`WordMemo::for_tokenizer`]); tests compare every token start with the crate's on texts
//! chosen to break the split.

use std::sync::{Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt};
use regex::Regex;
use regex_automata::{Anchored, Input, meta};
use tokenizers::{ModelWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer};

use crate::tokenizer::TokenizerError;

/// GPT-2's split (the crate's `ByteLevel` with `use_regex`) without its `\s+(?!\S)` alternative,
/// which the regex crate cannot express; [`Words`] gives whitespace runs that meaning.
const SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Most distinct words remembered: past it the memo starts over, so no text grows it without bound.
const MAX_WORDS: usize = 1 << 16;

/// Longest word remembered, in bytes; a longer one is encoded each time it comes.
const MAX_WORD_BYTES: usize = 64;

/// The words of a byte-level BPE tokenizer, with each remembered word's token starts.
pub struct WordMemo {
    split: meta::Regex,
    /// The added tokens' contents: the crate takes them out before splitting, so a text holding
    /// one goes to the crate whole.
    added: Option<Regex>,
    memo: Mutex<Memo>,
}

/// What one text's counting holds for its whole length, under one lock.
struct Memo {
    /// Word → where each of its tokens starts, in bytes from the word's start.
    words: HashMap<Box<str>, Box<[u32]>>,
    /// The split's search state (its lazy DFA), kept warm from text to text.
    cache: meta::Cache,
}

impl WordMemo {
    /// Some when `tokenizer` encodes a text as its GPT-2 words encoded one by one, laid end to end:
    /// no normalizer (it could join or move text across words), the byte-level pre-tokenizer with
    /// its regex and no prefix space (a prefix goes to the first word only), a model that gives a
    /// word the same tokens every time (no BPE dropout), no truncation or padding, and a
    /// post-processor that treats every token alike (byte-level offset trimming, except with a
    /// prefix space, which spares the first token).
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        if tokenizer.get_normalizer().is_some()
            || tokenizer.get_truncation().is_some()
            || tokenizer.get_padding().is_some()
        {
            return None;
        }
        let Some(PreTokenizerWrapper::ByteLevel(pre)) = tokenizer.get_pre_tokenizer() else {
            return None;
        };
        if pre.add_prefix_space || !pre.use_regex {
            return None;
        }
        let ModelWrapper::BPE(bpe) = tokenizer.get_model() else {
            return None;
        };
        if bpe.dropout.is_some() {
            return None;
        }
        match tokenizer.get_post_processor() {
            None => {}
            Some(PostProcessorWrapper::ByteLevel(p)) if !(p.trim_offsets && p.add_prefix_space) => {
            }
            Some(_) => return None,
        }
        let added: Vec<String> = tokenizer
            .get_added_tokens_decoder()
            .values()
            .map(|t| regex::escape(&t.content))
            .collect();
        let added = if added.is_empty() {
            None
        } else {
            Some(Regex::new(&added.join("|")).ok()?)
        };
        let split = meta::Regex::new(SPLIT).ok()?;
        let cache = split.create_cache();
        Some(Self {
            split,
            added,
            memo: Mutex::new(Memo {
                words: HashMap::new(),
                cache,
            }),
        })
    }

    /// Calls `each(word_start, token_starts)` for every word of `text` in order, token starts in
    /// bytes from the word's start, as the crate's `encode(text, false)` offsets have them. `None`
    /// when the text holds an added token: the caller asks the crate.
    pub fn for_each_word(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        mut each: impl FnMut(usize, &[u32]),
    ) -> Result<Option<()>, TokenizerError> {
        if self.added.as_ref().is_some_and(|a| a.is_match(text)) {
            return Ok(None);
        }
        // One lock per text: the words of a reply are looked up back to back, and a word not seen
        // before is encoded under the lock (rare once the common words are in).
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        let Memo { words, cache } = &mut *memo;
        let split = Words {
            split: &self.split,
            cache,
            text,
            at: 0,
        };
        for (at, word) in split {
            if let Some(starts) = words.get(word) {
                each(at, starts);
                continue;
            }
            let starts = word_starts(tokenizer, word)?;
            each(at, &starts);
            if word.len() <= MAX_WORD_BYTES {
                if words.len() >= MAX_WORDS {
                    words.clear();
                }
                words.insert(word.into(), starts);
            }
        }
        Ok(Some(()))
    }

    /// Words remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .words
            .len()
    }
}

/// A word's token starts, from the crate's encoding of the word alone.
fn word_starts(tokenizer: &Tokenizer, word: &str) -> Result<Box<[u32]>, TokenizerError> {
    let enc = tokenizer
        .encode(word, false)
        .map_err(|e| TokenizerError::Encode(e.to_string()))?;
    Ok(enc.get_offsets().iter().map(|(s, _)| *s as u32).collect())
}

/// GPT-2's words of a text, with their byte offsets: the matches of [`SPLIT`], which tile the text
/// (so the crate's `Isolated` split has no text between matches to keep), with `\s+(?!\S)`
/// restored. That
/// alternative, tried before a bare `\s+`, takes a whitespace run that reaches the end of the text
/// whole, but leaves the last character of a run followed by more text to the next word (where a
/// single space joins the word after it); the regex crate's greedy `\s+` takes the whole run, so a
/// run of two or more characters that does not end the text gives back its last one.
struct Words<'r, 't> {
    split: &'r meta::Regex,
    cache: &'r mut meta::Cache,
    text: &'t str,
    at: usize,
}

impl<'t> Iterator for Words<'_, 't> {
    type Item = (usize, &'t str);

    fn next(&mut self) -> Option<Self::Item> {
        let (text, at) = (self.text, self.at);
        if at >= text.len() {
            return None;
        }
        // Every character starts a match of some alternative (the last three between them take
        // any character), so the leftmost match from here starts here: an anchored search finds
        // it without the reverse scan an unanchored one needs to place a match's start.
        let anchored = Input::new(text).range(at..).anchored(Anchored::Yes);
        let Some(m) = self.split.search_with(self.cache, &anchored) else {
            self.at = text.len();
            return Some((at, &text[at..]));
        };
        let mut end = m.end();
        let matched = &text[m.range()];
        if end < text.len()
            && let Some(last) = matched.chars().next_back()
            && last.is_whitespace()
            && matched.len() > last.len_utf8()
        {
            end -= last.len_utf8();
        }
        self.at = end;
        Some((at, &text[at..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tokenizer::{PROJECT_CORPUS, TokenCounter};

    /// Texts that probe every alternative of the split and the whitespace rule.
    pub(crate) fn awkward_texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "",
            " ",
            "  ",
            "a",
            " the river",
            "  two  spaces  ",
            "trailing   ",
            "\n\nnew\nlines \n",
            "tabs\tand  \t mixed\t",
            "\r\nwindows\r\n\r\nlines",
            "it's, they're, we've, I'm, you'll, he'd, 'S, ''s, x.'s, 'tis",
            "numbers 12345 and 3.14 and ٣٤٥ and ⅻ",
            " !!! ?? ... --- ***",
            "über café naïve e\u{301} 🚂🚂 日本語 テスト",
            "nbsp\u{a0}here \u{a0} and\u{3000}ideographic \u{2028}sep",
            "zero\u{200b}width\u{200d}joiner",
            "ctrl\u{0}\u{1}\u{7f} bytes",
            "a \u{3000}b",
            "end with tab\t",
            "<|endoftext|> in the text",
        ]
        .map(String::from)
        .to_vec();
        texts.extend(PROJECT_CORPUS.lines().take(40).map(String::from));
        texts.push(PROJECT_CORPUS.chars().take(5_000).collect());
        // Random texts over pieces that meet at every kind of boundary.
        let pieces = [
            " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "a", "the", "River", " x", "'s",
            "'", "'ll", "7", "42", ".", ",", "!?", "é", "e\u{301}", "日本", "🚂", "\u{0}", "-",
        ];
        let mut rng = Rng::new(17);
        for _ in 0..1_500 {
            let n = rng.below(14);
            texts.push((0..n).map(|_| pieces[rng.below(pieces.len())]).collect());
        }
        texts
    }

    fn crate_starts(t: &Tokenizer, text: &str) -> Vec<usize> {
        let enc = t.encode(text, false).unwrap();
        enc.get_offsets().iter().map(|(s, _)| *s).collect()
    }

    fn memo_starts(m: &WordMemo, t: &Tokenizer, text: &str) -> Option<Vec<usize>> {
        let mut out = Vec::new();
        m.for_each_word(t, text, |at, s| {
            out.extend(s.iter().map(|&s| at + s as usize));
        })
        .unwrap()
        .map(|()| out)
    }

    #[test]
    fn words_cover_the_text_and_split_as_the_crates_regex_does() {
        let fancy = fancy_split();
        let split = meta::Regex::new(SPLIT).unwrap();
        let mut cache = split.create_cache();
        for text in awkward_texts() {
            let ours: Vec<&str> = Words {
                split: &split,
                cache: &mut cache,
                text: &text,
                at: 0,
            }
            .map(|(_, w)| w)
            .collect();
            assert_eq!(ours.concat(), text);
            assert_eq!(ours, fancy(&text), "{text:?}");
        }
    }

    /// The crate's own split of a text, through its pre-tokenizer.
    fn fancy_split() -> impl Fn(&str) -> Vec<String> {
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let pre = ByteLevel::new(false, false, true);
        move |text| {
            let mut p = PreTokenizedString::from(text);
            pre.pre_tokenize(&mut p).unwrap();
            p.get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(_, (a, b), _)| text[a..b].to_string())
                .collect()
        }
    }

    #[test]
    fn token_starts_are_the_crates_cold_and_warm() {
        let t = TokenCounter::project();
        let memo = WordMemo::for_tokenizer(t.inner()).expect("the project tokenizer qualifies");
        for round in 0..2 {
            for text in awkward_texts() {
                let want = crate_starts(t.inner(), &text);
                assert_eq!(
                    memo_starts(&memo, t.inner(), &text),
                    Some(want),
                    "{text:?} ({round})"
                );
            }
        }
        assert!(memo.remembered() > 100);
    }

    #[test]
    fn other_byte_level_post_processors_give_the_crates_starts_too() {
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let base = TokenCounter::project().inner().clone();
        let mut untrimmed = base.clone();
        untrimmed.with_post_processor(Some(ByteLevel::new(true, false, true)));
        let mut none = base;
        none.with_post_processor(None::<ByteLevel>);
        for t in [untrimmed, none] {
            let memo = WordMemo::for_tokenizer(&t).expect("qualifies");
            for text in awkward_texts().iter().take(300) {
                assert_eq!(memo_starts(&memo, &t, text), Some(crate_starts(&t, text)));
            }
        }
    }

    #[test]
    fn counts_are_the_crates_with_and_without_special_tokens() {
        let t = TokenCounter::project();
        for text in awkward_texts() {
            for special in [false, true] {
                let want = t.inner().encode(text.as_str(), special).unwrap().len();
                assert_eq!(t.count(&text, special).unwrap(), want, "{text:?}");
            }
            assert_eq!(
                t.token_starts(&text).unwrap(),
                crate_starts(t.inner(), &text)
            );
        }
    }

    #[test]
    fn a_text_with_an_added_token_goes_to_the_crate() {
        let mut t = TokenCounter::project().inner().clone();
        t.add_special_tokens([tokenizers::AddedToken::from("<|endoftext|>", true)])
            .unwrap();
        let memo = WordMemo::for_tokenizer(&t).expect("still qualifies");
        assert_eq!(memo_starts(&memo, &t, "a <|endoftext|> b"), None);
        assert_eq!(
            memo_starts(&memo, &t, "a <|endof text|> b"),
            Some(crate_starts(&t, "a <|endof text|> b"))
        );
    }

    #[test]
    fn tokenizers_whose_words_interact_do_not_qualify() {
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let base = TokenCounter::project().inner().clone();
        let mut prefix = base.clone();
        prefix.with_pre_tokenizer(Some(ByteLevel::new(true, true, true)));
        assert!(WordMemo::for_tokenizer(&prefix).is_none());
        let mut no_regex = base.clone();
        no_regex.with_pre_tokenizer(Some(ByteLevel::new(false, true, false)));
        assert!(WordMemo::for_tokenizer(&no_regex).is_none());
        let mut normalized = base.clone();
        normalized
            .with_normalizer(Some(tokenizers::normalizers::Lowercase))
            .unwrap();
        assert!(WordMemo::for_tokenizer(&normalized).is_none());
        let mut trims_first = base;
        trims_first.with_post_processor(Some(ByteLevel::new(true, true, true)));
        assert!(WordMemo::for_tokenizer(&trims_first).is_none());
    }

    #[test]
    fn the_memo_stays_bounded() {
        let t = TokenCounter::project();
        let memo = WordMemo::for_tokenizer(t.inner()).unwrap();
        let long = "x".repeat(MAX_WORD_BYTES + 1);
        memo_starts(&memo, t.inner(), &long).unwrap();
        assert_eq!(memo.remembered(), 0, "a long word is not kept");
        // Distinct words of letters: " a", " b", … " ba", …
        let word = |mut i: usize| {
            let mut w = String::from(" ");
            loop {
                w.push(char::from(b'a' + (i % 26) as u8));
                i /= 26;
                if i == 0 {
                    return w;
                }
            }
        };
        let text: String = (0..MAX_WORDS + 10).map(word).collect();
        memo_starts(&memo, t.inner(), &text).unwrap();
        assert!(memo.remembered() <= MAX_WORDS);
    }
}
