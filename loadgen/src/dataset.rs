//! Prompt datasets beyond the corpus: a JSONL file of prompts (`{"prompt": …}` or chat
//! `{"messages": […]}`, with an optional output length), or ShareGPT-format JSON (the first human turn
//! is the prompt, the length of the reply that follows is the output length). Bad lines are reported
//! by line number. Items are drawn with or without replacement, seeded.
//!
//! Shared prefixes (`--shared-prefix N:P`): N distinct prefixes of exactly P tokens, built from the
//! corpus, are put ahead of the prompts in turn, for prefix-cache studies.

use std::path::Path;

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;
use tokenperf_core::lines::MAX_LINE_BYTES;
use tokenperf_core::rng::Rng;
use tokenperf_core::tokenizer::TokenCounter;

use crate::jsonl::for_each_line;
use crate::prompt::{PromptBuilder, PromptSpec, sample_positive};

/// Dataset file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// One JSON object per line: `{"prompt": "…"}` or `{"messages": [...]}`, optional
    /// `"max_tokens"` / `"output_tokens"`.
    Jsonl,
    /// A JSON array of `{"conversations": [{"from": "human", "value": …}, {"from": "gpt", …}]}`.
    Sharegpt,
}

impl DatasetFormat {
    /// From the file name: `.jsonl` is JSONL, anything else ShareGPT JSON.
    pub fn guess(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e == "jsonl") {
            DatasetFormat::Jsonl
        } else {
            DatasetFormat::Sharegpt
        }
    }
}

/// How items are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Each item once, in a seeded shuffled order, reshuffled when they run out.
    WithoutReplacement,
    /// Independent seeded draws.
    WithReplacement,
}

/// One dataset entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The prompt text (chat contents joined with newlines for `messages`).
    pub prompt: String,
    /// Chat messages to send as they are, when the entry had them.
    pub messages: Option<Vec<Value>>,
    /// Output length the entry asks for.
    pub output_tokens: Option<u64>,
    /// A recorded reply (ShareGPT) whose token count is the output length: counted only when the
    /// item is drawn, so a large dataset does not wait for every reply to be tokenized.
    pub reply: Option<String>,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}

/// Reads a JSONL dataset a line at a time; an unusable line, or one longer than [`MAX_LINE_BYTES`],
/// is an error naming its number.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    for_each_line(path, "the --dataset file", MAX_LINE_BYTES, |line, at| {
        items.push(jsonl_item(line, at)?);
        Ok(())
    })?;
    if items.is_empty() {
        bail!("'{}' has no prompts", path.display());
    }
    Ok(items)
}

/// One dataset line: a `prompt`, or chat `messages`, with an optional output length.
fn jsonl_item(line: &str, at: &dyn Fn() -> String) -> anyhow::Result<Item> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
    let output_tokens = match v.get("max_tokens").or(v.get("output_tokens")) {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the output length must be a positive integer, got {n}",
                at()
            )
        })?),
    };
    Ok(if let Some(p) = v.get("prompt") {
        Item {
            prompt: text_of(p)
                .ok_or_else(|| anyhow::anyhow!("{}: 'prompt' must be a string", at()))?,
            messages: None,
            output_tokens,
            reply: None,
        }
    } else if let Some(Value::Array(m)) = v.get("messages") {
        let mut texts = Vec::new();
        for msg in m {
            let content = msg
                .get("content")
                .and_then(text_of)
                .ok_or_else(|| anyhow::anyhow!("{}: every message needs a text 'content'", at()))?;
            texts.push(content);
        }
        Item {
            prompt: texts.join("\n"),
            messages: Some(m.clone()),
            output_tokens,
            reply: None,
        }
    } else {
        bail!("{}: needs a 'prompt' string or a 'messages' list", at());
    })
}

/// One ShareGPT conversation: its turns, each a speaker and a text (kept as JSON values, so an odd
/// entry is reported by number rather than failing the parse).
#[derive(serde::Deserialize)]
struct Conversation {
    conversations: Option<Vec<Turn>>,
}

#[derive(serde::Deserialize)]
struct Turn {
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    value: Option<Value>,
}

/// Hands each element of a JSON array to a function as it is parsed, so the array is never held.
struct EachElement<'f, T> {
    each: &'f mut dyn FnMut(usize, T) -> anyhow::Result<()>,
    /// The function's own error: the parser only carries a message, this keeps the chain.
    failed: &'f mut Option<anyhow::Error>,
}

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for EachElement<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of conversations")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(t) = seq.next_element::<T>()? {
            if let Err(e) = (self.each)(i, t) {
                *self.failed = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
            i += 1;
        }
        Ok(())
    }
}

/// Reads a ShareGPT dataset (a JSON array of conversations), one conversation at a time: a
/// dataset of hundreds of MB is never held whole, as text or as JSON values. Conversations without
/// a human turn are skipped; the first human turn is the prompt, and the reply after it (when there
/// is one) gives the output length, counted when the item is drawn.
pub fn read_sharegpt(path: &Path) -> anyhow::Result<Vec<Item>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading the --dataset file '{}'", path.display()))?;
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let mut items = Vec::new();
    let mut failed = None;
    let mut each = |i: usize, c: Conversation| -> anyhow::Result<()> {
        if let Some(item) = sharegpt_item(i, c, path)? {
            items.push(item);
        }
        Ok(())
    };
    let parsed = serde::Deserializer::deserialize_seq(
        &mut de,
        EachElement {
            each: &mut each,
            failed: &mut failed,
        },
    )
    .and_then(|()| de.end());
    if let Some(e) = failed {
        return Err(e);
    }
    parsed.with_context(|| {
        format!(
            "'{}' is not ShareGPT JSON (a JSON array of conversations)",
            path.display()
        )
    })?;
    if items.is_empty() {
        bail!("'{}' has no conversation with a human turn", path.display());
    }
    Ok(items)
}

/// Entry `i`'s item: its first human turn and the reply after it; `None` without a human turn.
fn sharegpt_item(i: usize, c: Conversation, path: &Path) -> anyhow::Result<Option<Item>> {
    let Some(mut turns) = c.conversations else {
        bail!(
            "'{}': entry {i} has no 'conversations' list",
            path.display()
        );
    };
    let from = |t: &Turn| {
        t.from
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let Some(h) = turns
        .iter()
        .position(|t| matches!(from(t).as_str(), "human" | "user"))
    else {
        return Ok(None);
    };
    let text = |t: &mut Turn| match t.value.take() {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let Some(prompt) = text(&mut turns[h]) else {
        bail!(
            "'{}': entry {i}'s human turn has no text 'value'",
            path.display()
        );
    };
    Ok(Some(Item {
        prompt,
        messages: None,
        output_tokens: None,
        reply: turns.get_mut(h + 1).and_then(text),
    }))
}

/// `n` distinct prefixes of exactly `tokens` tokens each (special tokens not counted), from the corpus.
pub fn shared_prefixes(
    builder: &PromptBuilder<'_>,
    tokenizer: &TokenCounter,
    rng: &mut Rng,
    n: u64,
    tokens: u64,
) -> anyhow::Result<Vec<String>> {
    let specials = tokenizer.special_tokens() as u64;
    (0..n)
        .map(|i| {
            let text = builder.exact_body(rng, format!("[context {i}]\n"), tokens + specials)?;
            Ok(text)
        })
        .collect()
}

/// Builds `count` request specs from `items`, drawn as `sampling` says; items without an output length
/// get one sampled from (mean, stddev), and prompts get the shared prefixes in turn.
#[allow(clippy::too_many_arguments)]
pub fn specs(
    items: &[Item],
    count: u64,
    sampling: Sampling,
    prefixes: &[String],
    tokenizer: &TokenCounter,
    rng: &mut Rng,
    (mean_out, std_out): (f64, f64),
) -> anyhow::Result<Vec<PromptSpec>> {
    let mut order: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(count as usize);
    for k in 0..count as usize {
        let idx = match sampling {
            Sampling::WithReplacement => rng.below(items.len()),
            Sampling::WithoutReplacement => {
                if order.is_empty() {
                    order = (0..items.len()).collect();
                    for i in (1..order.len()).rev() {
                        let j = rng.below(i + 1);
                        order.swap(i, j);
                    }
                    order.reverse();
                }
                order.pop().expect("refilled above")
            }
        };
        let item = &items[idx];
        let prefix = prefixes
            .get(k % prefixes.len().max(1))
            .map(String::as_str)
            .unwrap_or("");
        let prompt = format!("{prefix}{}", item.prompt);
        let messages = item.messages.clone().map(|mut m| {
            if !prefix.is_empty() {
                m.insert(0, serde_json::json!({"role": "system", "content": prefix}));
            }
            m
        });
        out.push(PromptSpec {
            prompt_tokens: tokenizer.count(&prompt, true)? as u64,
            prompt,
            messages,
            max_tokens: match (item.output_tokens, &item.reply) {
                (Some(n), _) => n,
                (None, Some(r)) => tokenizer.count(r, false)?.max(1) as u64,
                (None, None) => sample_positive(rng, mean_out, std_out),
            },
            target_tokens: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::tokenizer::PROJECT_CORPUS;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn jsonl_prompts_and_messages_with_bad_lines_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.jsonl",
            "{\"prompt\": \"hello there\", \"max_tokens\": 7}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
        );
        let items = read_jsonl(&p).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].prompt.as_str(), items[0].output_tokens),
            ("hello there", Some(7))
        );
        assert!(items[1].messages.is_some());
        for (text, needle) in [
            ("{\"prompt\": \"a\"}\n{oops\n", "line 2: not JSON"),
            ("{\"text\": \"a\"}\n", "line 1: needs a 'prompt'"),
            (
                "{\"prompt\": \"a\", \"max_tokens\": -1}\n",
                "line 1: the output length",
            ),
            (
                "{\"messages\": [{\"role\": \"user\"}]}\n",
                "line 1: every message",
            ),
            ("\n", "has no prompts"),
        ] {
            let p = write(dir.path(), "bad.jsonl", text);
            let e = format!("{:#}", read_jsonl(&p).unwrap_err());
            assert!(e.contains(needle) && e.contains("bad.jsonl"), "{e}");
        }
    }

    #[test]
    fn sharegpt_first_human_turn_and_reply_length() {
        let dir = tempfile::tempdir().unwrap();
        let t = TokenCounter::project();
        let p = write(
            dir.path(),
            "s.json",
            r#"[{"conversations": [{"from": "system", "value": "x"}, {"from": "human", "value": "the harbor"}, {"from": "gpt", "value": "the river keeps a record"}]},
                {"id": 7, "conversations": [{"from": "gpt", "value": "no human here"}, {"from": 3}]},
                {"conversations": [{"from": "human", "value": "only a question"}]}]"#,
        );
        let items = read_sharegpt(&p).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].prompt, "the harbor");
        assert_eq!(items[0].reply.as_deref(), Some("the river keeps a record"));
        assert_eq!(items[1].reply, None);
        // The reply's length is the output length, counted when the item is drawn.
        let mut rng = Rng::new(1);
        let specs = specs(
            &items[..1],
            2,
            Sampling::WithReplacement,
            &[],
            &t,
            &mut rng,
            (9.0, 0.0),
        );
        let reply = t.count("the river keeps a record", false).unwrap() as u64;
        assert!(specs.unwrap().iter().all(|s| s.max_tokens == reply));

        for (name, text, needle) in [
            ("b.json", r#"{"conversations": []}"#, "JSON array"),
            (
                "c.json",
                r#"[{"id": 1}]"#,
                "entry 0 has no 'conversations' list",
            ),
            (
                "d.json",
                r#"[{"conversations": []}, {"conversations": [{"from": "human", "value": 5}]}]"#,
                "entry 1's human turn has no text 'value'",
            ),
            (
                "e.json",
                r#"[{"conversations": [{"from": "human", "value": "a"}]}] ]"#,
                "trailing",
            ),
            (
                "f.json",
                r#"[{"conversations": [{"from": "human", "value": "a"}]}"#,
                "EOF",
            ),
            (
                "g.json",
                r#"[{"conversations": [{"from": "gpt", "value": "a"}]}]"#,
                "no conversation with a human turn",
            ),
        ] {
            let bad = write(dir.path(), name, text);
            let err = format!("{:#}", read_sharegpt(&bad).unwrap_err());
            assert!(err.contains(needle) && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn sampling_and_shared_prefixes() {
        let t = TokenCounter::project();
        let items: Vec<Item> = (0..5)
            .map(|i| Item {
                prompt: format!("question {i}"),
                messages: None,
                output_tokens: Some(3),
                reply: None,
            })
            .collect();
        let mut rng = Rng::new(1);
        let s = specs(
            &items,
            10,
            Sampling::WithoutReplacement,
            &[],
            &t,
            &mut rng,
            (10.0, 0.0),
        )
        .unwrap();
        // Without replacement: each item exactly twice in 10 draws.
        for i in 0..5 {
            assert_eq!(
                s.iter()
                    .filter(|x| x.prompt == format!("question {i}"))
                    .count(),
                2
            );
        }
        let b = PromptBuilder::new(PROJECT_CORPUS, &t).unwrap();
        let prefixes = shared_prefixes(&b, &t, &mut rng, 3, 40).unwrap();
        assert_eq!(prefixes.len(), 3);
        for p in &prefixes {
            assert_eq!(t.count(p, false).unwrap(), 40);
        }
        assert_ne!(prefixes[0], prefixes[1]);
        let s = specs(
            &items,
            6,
            Sampling::WithReplacement,
            &prefixes,
            &t,
            &mut rng,
            (10.0, 0.0),
        )
        .unwrap();
        assert!(s[0].prompt.starts_with(&prefixes[0]) && s[4].prompt.starts_with(&prefixes[1]));
        assert!(
            s.iter()
                .all(|x| x.prompt_tokens == t.count(&x.prompt, true).unwrap() as u64)
        );
    }
}
