//! Prompt construction, two ways (`--prompt-sampling`):
//!
//! * `llmperf` (the default), [`LlmperfSampler`]: LLMPerf's own algorithm, call for call, on CPython's
//!   random generator ([`tokenperf_core::pyrandom`]) seeded the same way. Per request: `max_tokens` =
//!   `int(gauss(mean_out, std_out))` redrawn while ≤ 0; the prompt length likewise, also redrawn while
//!   shorter than the instruction prefix; the corpus lines (all of them, as `readlines`) shuffled; the
//!   prefix "Randomly stream lines from the following text with N output tokens. Don't generate eos
//!   tokens:\n\n" then whole lines, each charged its token count with BOS, cycling, the last line cut
//!   by characters. With LLMPerf's corpus (`--corpus sonnet.txt`) and its LLaMA tokenizer the requests
//!   are LLMPerf's, request for request; their prompts tokenize a few % shorter than the sampled
//!   length, as LLMPerf's do.
//! * `exact`, [`PromptBuilder::sample`]: the same shape, on our own generator, cut so that the prompt
//!   tokenizes to exactly the sampled count (special tokens such as BOS included).

use tokenperf_core::pyrandom::PyRandom;
use tokenperf_core::rng::Rng;
use tokenperf_core::tokenizer::{TokenCounter, TokenizerError};

/// How corpus prompts are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSampling {
    /// LLMPerf's algorithm and random sequence: the same flags and seed give LLMPerf's requests.
    Llmperf,
    /// Prompts that tokenize to exactly the sampled length (not LLMPerf's sequence).
    Exact,
}

/// LLMPerf's `sample_random_positive_int` on CPython's generator: `int(gauss(mean, stddev))`,
/// redrawn while ≤ 0.
fn py_positive(rng: &mut PyRandom, mean: f64, stddev: f64) -> u64 {
    for _ in 0..10_000 {
        let v = rng.gauss(mean, stddev).trunc();
        if v > 0.0 {
            return v as u64;
        }
    }
    1
}

/// LLMPerf's prompt sampler: its algorithm, call for call, on CPython's random generator.
pub struct LlmperfSampler<'a> {
    /// Every line of the corpus, each with its `\n` (as Python's `readlines`).
    lines: Vec<&'a str>,
    /// Each line's token count, BOS included (as LLMPerf's `len(tokenizer.encode(line))`); 0 until
    /// the line is first used. Counted on first use, not up front: a prompt visits tens of lines, and
    /// one pass over the whole corpus was most of the wait before the first request.
    line_tokens: Vec<u64>,
    /// The last instruction's `max_tokens` and token count: with no spread in the output length
    /// (LLMPerf's default) every request has the same instruction, counted once.
    head: Option<(u64, u64)>,
    tokenizer: &'a TokenCounter,
    rng: PyRandom,
}

impl<'a> LlmperfSampler<'a> {
    /// `random.seed(seed)`, then ready to sample requests in order.
    pub fn new(
        corpus: &'a str,
        tokenizer: &'a TokenCounter,
        seed: u64,
    ) -> Result<Self, TokenizerError> {
        let lines: Vec<&str> = corpus.split_inclusive('\n').collect();
        let line_tokens = vec![0; lines.len()];
        Ok(Self {
            lines,
            line_tokens,
            head: None,
            tokenizer,
            rng: PyRandom::new(u128::from(seed)),
        })
    }

    /// The next request: `max_tokens`, then its prompt. `prompt_tokens` is the built prompt's own
    /// count (BOS included); `target_tokens` the sampled length LLMPerf reports.
    pub fn next(
        &mut self,
        (mean_in, std_in): (f64, f64),
        (mean_out, std_out): (f64, f64),
    ) -> Result<PromptSpec, TokenizerError> {
        let max_tokens = py_positive(&mut self.rng, mean_out, std_out);
        let mut prompt = prefix(max_tokens);
        let head_tokens = match self.head {
            Some((m, n)) if m == max_tokens => n,
            _ => self.tokenizer.count(&prompt, true)? as u64,
        };
        self.head = Some((max_tokens, head_tokens));
        let head_len = prompt.len();
        let mut target = py_positive(&mut self.rng, mean_in, std_in);
        let mut tries = 0;
        // With no spread every redraw is the same (LLMPerf would loop forever): the prompt is then
        // the instruction alone, as when the redraws run out.
        while target < head_tokens && std_in > 0.0 && tries < 10_000 {
            target = py_positive(&mut self.rng, mean_in, std_in);
            tries += 1;
        }
        let mut remaining = target.saturating_sub(head_tokens);
        let mut order: Vec<usize> = (0..self.lines.len()).collect();
        self.rng.shuffle(&mut order);
        // Whole lines while they fit, cycling; the first that does not is cut by characters. Every
        // line costs at least one token, so this ends.
        'fill: loop {
            for &i in &order {
                let (line, cost) = (self.lines[i], self.line_cost(i)?);
                if cost > remaining {
                    prompt.extend(line.chars().take(remaining as usize));
                    break 'fill;
                }
                prompt.push_str(line);
                remaining -= cost;
            }
            if order.is_empty() {
                break;
            }
        }
        // A prompt that is the instruction alone (a target below its length) is already counted.
        let prompt_tokens = if prompt.len() == head_len {
            head_tokens
        } else {
            self.tokenizer.count(&prompt, true)? as u64
        };
        Ok(PromptSpec {
            prompt_tokens,
            prompt,
            messages: None,
            max_tokens,
            target_tokens: Some(target),
        })
    }
}

impl LlmperfSampler<'_> {
    /// Line `i`'s token count, counted on first use. Every line is charged at least one token
    /// (LLMPerf's BOS always made it so): a tokenizer with no BOS that counts a blank line as nothing
    /// would otherwise fill a prompt forever.
    fn line_cost(&mut self, i: usize) -> Result<u64, TokenizerError> {
        if self.line_tokens[i] == 0 {
            self.line_tokens[i] = self.tokenizer.count(self.lines[i], true)?.max(1) as u64;
        }
        Ok(self.line_tokens[i])
    }
}

/// One planned request: its prompt and the output length asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpec {
    pub prompt: String,
    /// Chat messages to send as they are (datasets with `messages`); `None`: LLMPerf's shape.
    pub messages: Option<Vec<serde_json::Value>>,
    /// Tokens in `prompt` by our tokenizer, special tokens included.
    pub prompt_tokens: u64,
    pub max_tokens: u64,
    /// The prompt length that was sampled, when it differs in kind from the built prompt's count
    /// (LLMPerf's sampling reports the target, not the prompt it built).
    pub target_tokens: Option<u64>,
}

/// `--cache-bust`, one prompt at a time in order: puts a marker unique to each request, and to the
/// run through `salt`, at the very start of its prompt (of its first message, for datasets of
/// messages), so that no two prompts share a prefix a server could serve from its cache. The marker costs a few tokens, and the recorded
/// prompt length counts them. A chat template's own preamble stays shared; no client can change it.
pub struct CacheBuster {
    rng: Rng,
}

impl CacheBuster {
    pub fn new(salt: u64) -> Self {
        Self {
            rng: Rng::new(salt),
        }
    }

    /// Puts the next marker ahead of `spec`'s prompt (or its first message).
    pub fn apply(
        &mut self,
        spec: &mut PromptSpec,
        tokenizer: &tokenperf_core::tokenizer::TokenCounter,
    ) -> anyhow::Result<()> {
        let marker = format!("[{:016x}] ", self.rng.next_u64());
        match spec.messages.as_mut().and_then(|m| m.first_mut()) {
            Some(first) => {
                if let Some(text) = first.get("content").and_then(|c| c.as_str()) {
                    first["content"] = serde_json::Value::String(format!("{marker}{text}"));
                }
            }
            None => spec.prompt.insert_str(0, &marker),
        }
        spec.prompt_tokens += tokenizer.count(&marker, false)? as u64;
        Ok(())
    }
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
    corpus: &'a str,
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
            corpus,
            lines,
            line_tokens,
            tokenizer,
        })
    }

    /// The corpus text the builder was made from.
    pub fn corpus(&self) -> &'a str {
        self.corpus
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
        while target < head_tokens && std_in > 0.0 && tries < 1000 {
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
            target_tokens: None,
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
        let specials = self.tokenizer.special_tokens();
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
    /// A tokenizer with no BOS that strips whitespace counts a blank line as no token at all; a
    /// corpus of blank lines must still make prompts (it once filled one forever).
    #[test]
    fn blank_lines_that_count_as_nothing_cannot_fill_a_prompt_forever() {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": {"type": "Strip", "strip_left": true, "strip_right": true},
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}
        });
        let mut f = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::io::Write::write_all(&mut f, json.to_string().as_bytes()).unwrap();
        let t = TokenCounter::from_path(f.path()).unwrap();
        assert_eq!(
            t.count("\n", true).unwrap(),
            0,
            "a blank line is no token here"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = LlmperfSampler::new("\n\n\n", &t, 3).unwrap();
            let p = s.next((200.0, 10.0), (10.0, 1.0)).unwrap();
            let _ = tx.send(p.prompt.len());
        });
        let len = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the sampler returns");
        assert!(len < 4000, "{len} bytes");
    }

    /// LLMPerf's own first five requests with seed 11111 and its default flags (shared/reference
    /// llmperf.md §2, reproduced by CPython): (`max_tokens`, sampled prompt length). They depend on
    /// the corpus's line count (LLMPerf's sonnet.txt has 84), not on its text or the tokenizer.
    #[test]
    fn llmperf_sampling_gives_llmperfs_own_requests() {
        let corpus: String = (0..84)
            .map(|i| format!("line {i}: the harbor keeps its lanterns lit for the tide\n"))
            .collect();
        let t = TokenCounter::project();
        let mut s = LlmperfSampler::new(&corpus, &t, 11111).unwrap();
        let got: Vec<(u64, u64)> = (0..5)
            .map(|_| {
                let p = s.next((550.0, 150.0), (150.0, 80.0)).unwrap();
                assert!(p.prompt.starts_with(&prefix(p.max_tokens)));
                // Every line is charged its BOS too, so the prompt never runs past the target.
                assert!(p.prompt_tokens <= p.target_tokens.unwrap(), "{p:?}");
                (p.max_tokens, p.target_tokens.unwrap())
            })
            .collect();
        assert_eq!(
            got,
            vec![(167, 538), (92, 581), (231, 601), (173, 531), (64, 483)]
        );
        // The same seed gives the same requests.
        let mut again = LlmperfSampler::new(&corpus, &t, 11111).unwrap();
        let first = again.next((550.0, 150.0), (150.0, 80.0)).unwrap();
        let mut s2 = LlmperfSampler::new(&corpus, &t, 11111).unwrap();
        assert_eq!(first, s2.next((550.0, 150.0), (150.0, 80.0)).unwrap());
    }

    /// The instruction's count is kept between requests, and a prompt that is the instruction alone
    /// is not counted again: every reported count is still the prompt's own, whether the output
    /// length varies or not and whether lines follow the instruction or not.
    #[test]
    fn reported_prompt_counts_are_the_prompts_own() {
        let t = TokenCounter::project();
        for (input, output) in [
            ((550.0, 0.0), (150.0, 0.0)),
            ((32.0, 0.0), (100.0, 0.0)),
            ((550.0, 150.0), (150.0, 80.0)),
            ((40.0, 30.0), (100.0, 2.0)),
        ] {
            let mut s = LlmperfSampler::new(PROJECT_CORPUS, &t, 7).unwrap();
            for _ in 0..20 {
                let p = s.next(input, output).unwrap();
                let own = t.count(&p.prompt, true).unwrap() as u64;
                assert_eq!(p.prompt_tokens, own, "{input:?} {output:?}: {:?}", p.prompt);
            }
        }
    }

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
