//! Prompt construction: LLMPerf's prompt shape and length sampling, made token-exact.
//!
//! Like LLMPerf: `max_tokens` and the prompt length are Gaussian draws truncated to integers and redrawn
//! while ≤ 0 (the prompt length also while shorter than the instruction prefix); the prompt is the prefix
//! "Randomly stream lines from the following text with N output tokens. Don't generate eos tokens:\n\n"
//! followed by shuffled corpus lines, cycling when they run out. Unlike LLMPerf, the prompt is cut so
//! that it tokenizes to exactly the sampled count (special tokens such as BOS included, as LLMPerf counts
//! them); LLMPerf's prompts came out ~7 % short of the count it reported.

use tokenperf_core::rng::Rng;
use tokenperf_core::tokenizer::{TokenCounter, TokenizerError};

/// One planned request: its prompt and the output length asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpec {
    pub prompt: String,
    /// Chat messages to send as they are (datasets with `messages`); `None`: LLMPerf's shape.
    pub messages: Option<Vec<serde_json::Value>>,
    /// Tokens in `prompt` by our tokenizer, special tokens included (equals the sampled target).
    pub prompt_tokens: u64,
    pub max_tokens: u64,
}

/// `--cache-bust`: puts a marker unique to each request, and to the run through `salt`, at the very
/// start of its prompt (of its first message, for datasets of messages), so that no two prompts share
/// a prefix a server could serve from its cache. The marker costs a few tokens, and the recorded
/// prompt length counts them. A chat template's own preamble stays shared; no client can change it.
pub fn bust_cache(
    specs: &mut [PromptSpec],
    salt: u64,
    tokenizer: &tokenperf_core::tokenizer::TokenCounter,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(salt);
    for spec in specs {
        let marker = format!("[{:016x}] ", rng.next_u64());
        match spec.messages.as_mut().and_then(|m| m.first_mut()) {
            Some(first) => {
                if let Some(text) = first.get("content").and_then(|c| c.as_str()) {
                    first["content"] = serde_json::Value::String(format!("{marker}{text}"));
                }
            }
            None => spec.prompt.insert_str(0, &marker),
        }
        spec.prompt_tokens += tokenizer.count(&marker, false)? as u64;
    }
    Ok(())
}

/// LLMPerf's `sample_random_positive_int`: `int(gauss(mean, stddev))`, redrawn while ≤ 0.
pub fn sample_positive(rng: &mut Rng, mean: f64, stddev: f64) -> u64 {
    for _ in 0..10_000 {
        let v = (mean + stddev * rng.normal()).trunc();
        if v > 0.0 {
            return v as u64;
        }
    }
    // A distribution almost entirely ≤ 0 (e.g. mean -100, stddev 1): the flags are validated against
    // that, so this is unreachable in practice; 1 is the least surprising answer.
    1
}

/// LLMPerf's instruction prefix for `max_tokens` output tokens.
pub fn prefix(max_tokens: u64) -> String {
    format!(
        "Randomly stream lines from the following text with {max_tokens} output tokens. Don't generate eos tokens:\n\n"
    )
}

/// Builds prompts from a corpus with a tokenizer.
pub struct PromptBuilder<'a> {
    lines: Vec<&'a str>,
    line_tokens: Vec<usize>,
    tokenizer: &'a TokenCounter,
}

impl<'a> PromptBuilder<'a> {
    /// `corpus` is split into lines that keep their `\n` (as Python's `readlines`); empty lines are
    /// dropped.
    pub fn new(corpus: &'a str, tokenizer: &'a TokenCounter) -> Result<Self, TokenizerError> {
        let lines: Vec<&str> = corpus
            .split_inclusive('\n')
            .filter(|l| !l.trim().is_empty())
            .collect();
        let line_tokens = lines
            .iter()
            .map(|l| tokenizer.count(l, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            lines,
            line_tokens,
            tokenizer,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Samples one request: `max_tokens` from (mean_out, std_out), then a prompt of exactly the sampled
    /// number of tokens from (mean_in, std_in).
    pub fn sample(
        &self,
        rng: &mut Rng,
        (mean_in, std_in): (f64, f64),
        (mean_out, std_out): (f64, f64),
    ) -> Result<PromptSpec, TokenizerError> {
        let max_tokens = sample_positive(rng, mean_out, std_out);
        let head = prefix(max_tokens);
        let head_tokens = self.tokenizer.count(&head, true)? as u64;
        let mut target = sample_positive(rng, mean_in, std_in);
        let mut tries = 0;
        while target < head_tokens && tries < 1000 {
            target = sample_positive(rng, mean_in, std_in);
            tries += 1;
        }
        let target = target.max(head_tokens);
        let prompt = self.exact_body(rng, head, target)?;
        Ok(PromptSpec {
            prompt,
            messages: None,
            prompt_tokens: target,
            max_tokens,
        })
    }

    /// `head` followed by shuffled lines, cut to exactly `target` tokens (special tokens included).
    pub fn exact_body(
        &self,
        rng: &mut Rng,
        head: String,
        target: u64,
    ) -> Result<String, TokenizerError> {
        let target = target as usize;
        let mut order: Vec<usize> = (0..self.lines.len()).collect();
        shuffle(rng, &mut order);
        let mut text = head;
        let mut estimate = self.tokenizer.count(&text, true)?;
        let mut next = 0usize;
        loop {
            // Append whole lines until the (additive) estimate passes the target with some margin;
            // line counts are nearly additive, and the exact check below corrects the rest.
            while estimate < target + 4 && !self.lines.is_empty() {
                let i = order[next % order.len()];
                text.push_str(self.lines[i]);
                estimate += self.line_tokens[i];
                next += 1;
                if next.is_multiple_of(order.len()) {
                    shuffle(rng, &mut order);
                }
            }
            if let Some(cut) = self.cut(&text, target)? {
                return Ok(cut);
            }
            if self.lines.is_empty() {
                return Ok(text);
            }
            estimate = target; // The estimate was too high: force more lines.
        }
    }

    /// The longest prefix of `text` with exactly `target` tokens, if `text` has at least that many.
    fn cut(&self, text: &str, target: usize) -> Result<Option<String>, TokenizerError> {
        let specials = self.tokenizer.count("", true)?;
        let body_target = target.saturating_sub(specials);
        let ends: Vec<usize> = self
            .tokenizer
            .encode_with_ends(text)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        if ends.len() < body_target {
            return Ok(None);
        }
        if body_target == 0 {
            return Ok(Some(String::new()));
        }
        // Cut after token `body_target − 1`; re-check, since a word cut in half can re-tokenize
        // differently. Nearby token ends are tried before giving up on this text.
        let base = body_target - 1;
        for delta in [0isize, -1, 1, -2, 2, -3, 3] {
            let k = base as isize + delta;
            if k < 0 || k as usize >= ends.len() {
                continue;
            }
            let mut end = ends[k as usize];
            while end < text.len() && !text.is_char_boundary(end) {
                end += 1;
            }
            let candidate = &text[..end];
            if self.tokenizer.count(candidate, true)? == target {
                return Ok(Some(candidate.to_string()));
            }
        }
        // Last resort: shorten character by character from the first candidate.
        let mut end = ends[base].min(text.len());
        while end > 0 {
            end -= 1;
            if text.is_char_boundary(end) && self.tokenizer.count(&text[..end], true)? == target {
                return Ok(Some(text[..end].to_string()));
            }
            if ends[base] - end > 64 {
                break;
            }
        }
        Ok(None)
    }
}

/// Fisher–Yates shuffle.
fn shuffle(rng: &mut Rng, v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::tokenizer::PROJECT_CORPUS;

    #[test]
    fn prompts_tokenize_to_exactly_the_sampled_count() {
        let t = TokenCounter::project();
        let b = PromptBuilder::new(PROJECT_CORPUS, &t).unwrap();
        let mut rng = Rng::new(11111);
        for _ in 0..60 {
            let p = b.sample(&mut rng, (550.0, 150.0), (150.0, 80.0)).unwrap();
            assert_eq!(t.count(&p.prompt, true).unwrap() as u64, p.prompt_tokens);
            assert!(
                p.prompt
                    .starts_with("Randomly stream lines from the following text with ")
            );
            assert!(
                p.prompt
                    .contains(&format!(" with {} output tokens.", p.max_tokens))
            );
            assert!(p.max_tokens > 0);
        }
        // Long prompts cycle through the corpus.
        let p = b.sample(&mut rng, (5000.0, 0.0), (10.0, 0.0)).unwrap();
        assert_eq!(p.prompt_tokens, 5000);
        assert_eq!(t.count(&p.prompt, true).unwrap(), 5000);
    }

    #[test]
    fn tiny_targets_are_raised_to_the_prefix() {
        let t = TokenCounter::project();
        let b = PromptBuilder::new(PROJECT_CORPUS, &t).unwrap();
        let mut rng = Rng::new(1);
        let p = b.sample(&mut rng, (3.0, 0.0), (5.0, 0.0)).unwrap();
        assert_eq!(p.prompt, prefix(5));
        assert_eq!(t.count(&p.prompt, true).unwrap() as u64, p.prompt_tokens);
    }

    #[test]
    fn sampling_is_positive_and_seeded() {
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        for _ in 0..1000 {
            let x = sample_positive(&mut a, 10.0, 50.0);
            assert!(x > 0);
            assert_eq!(x, sample_positive(&mut b, 10.0, 50.0));
        }
    }
}
