//! A fast read of the common streamed chunk: the fields a client takes from every event, found in
//! one pass over a strict subset of JSON, with everything outside that subset left to serde.
//!
//! Why our own: on one core, serde_json cost loadgen about 0.8 µs of its 8 µs budget per event
//! (issue 17), identifying and skipping some ten keys per chunk. [`PlainChunk::scan`] accepts only
//! what it reads exactly as [`StreamEvent`](crate::openai::StreamEvent) would: an object of plain
//! members (no backslash escapes or control characters in strings, no nested value other than the
//! first choice and its delta, no repeated known field, numbers in JSON's own grammar). For any
//! other text it returns `None`, so errors, usage, ground truth, escaped text, odd shapes and
//! invalid JSON all get serde's reading and serde's error. Tests check both agree on generated
//! events meant to sit on every edge of the subset.

/// The fields of a chunk in the plain subset: what `StreamEvent` has for it, less `usage`,
/// `error` and `tokenperf`, which the subset only admits as `null`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlainChunk<'a> {
    /// `None` when `choices` is absent or null; `Some(None)` for an empty list.
    pub choices: Option<Option<PlainChoice<'a>>>,
    pub model: Option<&'a str>,
}

/// The first choice's fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlainChoice<'a> {
    /// `delta.content` (chat streams).
    pub delta_content: Option<&'a str>,
    /// `text` (completions streams).
    pub text: Option<&'a str>,
    pub finish_reason: Option<&'a str>,
}

impl<'a> PlainChunk<'a> {
    /// The chunk's fields, or `None` when `event` is outside the plain subset.
    pub fn scan(event: &'a str) -> Option<Self> {
        let mut p = Scanner {
            s: event,
            b: event.as_bytes(),
            i: 0,
        };
        let chunk = p.chunk()?;
        p.ws();
        (p.i == p.b.len()).then_some(chunk)
    }

    /// As `StreamEvent::content`: chat's `delta.content`, else completions' `text`, if non-empty.
    pub fn content(&self) -> Option<&'a str> {
        let c = self.choices.as_ref()?.as_ref()?;
        let text = c.delta_content.or(c.text)?;
        (!text.is_empty()).then_some(text)
    }

    pub fn finish_reason(&self) -> Option<&'a str> {
        self.choices.as_ref()?.as_ref()?.finish_reason
    }
}

/// A known field seen a second time: serde's derive refuses the event, so the scan leaves it.
fn first(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// JSON's whitespace, as serde_json has it.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn literal(&mut self, word: &str) -> bool {
        let hit = self.b[self.i..].starts_with(word.as_bytes());
        self.i += if hit { word.len() } else { 0 };
        hit
    }

    /// A string without escapes or control characters (which stay for serde).
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        let len = memchr::memchr(b'"', &self.b[start..])?;
        let body = &self.b[start..start + len];
        if body.iter().any(|&c| c == b'\\' || c < 0x20) {
            return None;
        }
        self.i = start + len + 1;
        // Both ends are ASCII quotes in a str, so these are char boundaries.
        Some(&self.s[start..start + len])
    }

    fn string_or_null(&mut self) -> Option<Option<&'a str>> {
        if self.literal("null") {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.digits_at_least_one()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.digits_at_least_one()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn digits_at_least_one(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// A string, number, `true`, `false` or `null`: an unknown field's value (nested ones stay for
    /// serde).
    fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number(),
            _ => (self.literal("true") || self.literal("false") || self.literal("null"))
                .then_some(()),
        }
    }

    /// The members of an object, each handed to `member` with its key once the colon is read.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        self.ws();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.ws();
            if !self.eat(b':') {
                return None;
            }
            self.ws();
            member(self, key)?;
            self.ws();
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
            self.ws();
        }
    }

    fn chunk(&mut self) -> Option<PlainChunk<'a>> {
        let mut chunk = PlainChunk::default();
        let mut seen = [false; 5];
        self.ws();
        self.object(|p, key| match key {
            "choices" => {
                first(&mut seen[0])?;
                chunk.choices = p.choices()?;
                Some(())
            }
            "model" => {
                first(&mut seen[1])?;
                chunk.model = p.string_or_null()?;
                Some(())
            }
            // Only their absence reads the same; any value goes to serde.
            "usage" | "error" | "tokenperf" => {
                let k = match key {
                    "usage" => 2,
                    "error" => 3,
                    _ => 4,
                };
                first(&mut seen[k])?;
                p.literal("null").then_some(())
            }
            _ => p.scalar(),
        })?;
        Some(chunk)
    }

    /// `null`, `[]`, or a list of exactly one choice (a second is left to serde).
    fn choices(&mut self) -> Option<Option<Option<PlainChoice<'a>>>> {
        if self.literal("null") {
            return Some(None);
        }
        if !self.eat(b'[') {
            return None;
        }
        self.ws();
        if self.eat(b']') {
            return Some(Some(None));
        }
        let choice = self.choice()?;
        self.ws();
        self.eat(b']').then_some(Some(Some(choice)))
    }

    fn choice(&mut self) -> Option<PlainChoice<'a>> {
        let mut choice = PlainChoice::default();
        let mut seen = [false; 3];
        self.object(|p, key| match key {
            "delta" => {
                first(&mut seen[0])?;
                if !p.literal("null") {
                    choice.delta_content = p.delta()?;
                }
                Some(())
            }
            "text" => {
                first(&mut seen[1])?;
                choice.text = p.string_or_null()?;
                Some(())
            }
            "finish_reason" => {
                first(&mut seen[2])?;
                choice.finish_reason = p.string_or_null()?;
                Some(())
            }
            _ => p.scalar(),
        })?;
        Some(choice)
    }

    /// A delta's `content` (its `reasoning_content` is read and dropped, as `StreamEvent` keeps it
    /// but no caller reads it).
    fn delta(&mut self) -> Option<Option<&'a str>> {
        let mut content = None;
        let mut seen = [false; 2];
        self.object(|p, key| match key {
            "content" => {
                first(&mut seen[0])?;
                content = p.string_or_null()?;
                Some(())
            }
            "reasoning_content" => {
                first(&mut seen[1])?;
                p.string_or_null().map(drop)
            }
            _ => p.scalar(),
        })?;
        Some(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::StreamEvent;
    use crate::rng::Rng;

    /// What a client takes from an event: whether it had a list of choices, its content, finish
    /// reason and model, and whether it held usage, an error or ground truth.
    type Reading = (bool, Option<String>, Option<String>, Option<String>, bool);

    fn serde_reading(event: &str) -> Option<Reading> {
        let ev: StreamEvent = serde_json::from_str(event).ok()?;
        let more = ev.usage.is_some() || ev.error.is_some() || ev.tokenperf.is_some();
        Some((
            ev.choices.is_some(),
            ev.content().map(String::from),
            ev.finish_reason().map(String::from),
            ev.model.as_deref().map(String::from),
            more,
        ))
    }

    fn scan_reading(c: &PlainChunk<'_>) -> Reading {
        let own = |s: Option<&str>| s.map(String::from);
        (
            c.choices.is_some(),
            own(c.content()),
            own(c.finish_reason()),
            own(c.model),
            false,
        )
    }

    fn assert_agree(event: &str) {
        if let Some(fast) = PlainChunk::scan(event) {
            let slow = serde_reading(event);
            assert_eq!(Some(scan_reading(&fast)), slow, "{event:?}");
        }
    }

    #[test]
    fn reads_what_servers_send_as_serde_does() {
        let events = [
            r#"{"id":"cmpl-1","object":"text_completion","created":1764000000,"model":"m","choices":[{"index":0,"text":" the","logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
            r#"{"choices":[{"text":"","finish_reason":"length"}],"model":"m"}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_reason":null}],"system_fingerprint":"fp","usage":null}"#,
            r#" { "choices" : [ { "delta" : { "content" : "a" , "reasoning_content" : null } } ] } "#,
            r#"{"model":"tiny","choices":[]}"#,
            r#"{"choices":null,"model":null}"#,
            r#"{}"#,
        ];
        for e in events {
            assert!(
                PlainChunk::scan(e).is_some(),
                "the common shape is read: {e}"
            );
            assert_agree(e);
        }
        let fast = PlainChunk::scan(events[1]).unwrap();
        assert_eq!(
            (fast.content(), fast.model, fast.finish_reason()),
            (Some(" the"), Some("m"), None)
        );
        let done = PlainChunk::scan(events[3]).unwrap();
        assert_eq!(
            (done.content(), done.finish_reason()),
            (None, Some("length"))
        );
        for left in [
            r#"{"choices":[{"text":"a\nb"}]}"#,
            r#"{"choices":[{"text":"a"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
            r#"{"error":{"message":"boom"}}"#,
            r#"{"choices":[{"text":"a"}],"tokenperf":{"arrival_mono_us":1,"due_mono_us":2,"sent_mono_us":3,"tokens":1}}"#,
            r#"{"choices":[{"text":"a"},{"text":"b"}]}"#,
            r#"{"choices":[{"text":"a","logprobs":{"tokens":["a"]}}]}"#,
            r#"{"choices":[{"text":"a"}],"choices":[{"text":"b"}]}"#,
            r#"{"choices":[{"text":"a"}]} x"#,
        ] {
            assert_eq!(PlainChunk::scan(left), None, "left to serde: {left}");
            assert_agree(left);
        }
    }

    /// Events put together from pieces on both sides of every rule of the subset.
    fn generated(rng: &mut Rng) -> String {
        let values = [
            "null",
            "true",
            "false",
            "nul",
            "0",
            "-0",
            "01",
            "1.",
            "1.5",
            "-",
            "1e5",
            "1E+3",
            "2e-",
            "12",
            r#""s""#,
            r#""""#,
            r#""a\"b""#,
            r#""a\nb""#,
            "\"tab\tx\"",
            r#""ü 🚂""#,
            "{}",
            "[]",
            r#"{"a":1}"#,
            "[1,2]",
            r#""unterminated"#,
        ];
        let texts = [
            r#"" the""#,
            r#""""#,
            "null",
            "5",
            r#""\u0041""#,
            r#""x\"""#,
            "[]",
        ];
        let keys = [
            "id",
            "object",
            "created",
            "model",
            "choices",
            "usage",
            "error",
            "tokenperf",
            "system_fingerprint",
            "index",
            "text",
            "delta",
            "finish_reason",
        ];
        let ws = ["", " ", "\n", "\t", "\r\n", "  "];
        let w = |rng: &mut Rng| ws[rng.below(ws.len())];
        let member = |rng: &mut Rng, keys: &[&str], value: &dyn Fn(&mut Rng, &str) -> String| {
            let k = keys[rng.below(keys.len())];
            format!("{}\"{k}\"{}:{}{}", w(rng), w(rng), w(rng), value(rng, k))
        };
        let object = |rng: &mut Rng, keys: &[&str], value: &dyn Fn(&mut Rng, &str) -> String| {
            let n = rng.below(5);
            let members: Vec<String> = (0..n).map(|_| member(rng, keys, value)).collect();
            format!("{{{}{}}}", members.join(","), w(rng))
        };
        let delta = |rng: &mut Rng, _k: &str| -> String {
            if rng.below(6) == 0 {
                return values[rng.below(values.len())].to_string();
            }
            object(rng, &["content", "reasoning_content", "role"], &|rng, _| {
                texts[rng.below(texts.len())].to_string()
            })
        };
        let choice = |rng: &mut Rng| {
            object(
                rng,
                &["index", "text", "delta", "finish_reason", "logprobs"],
                &|rng, k| match k {
                    "delta" => delta(rng, k),
                    "text" | "finish_reason" => texts[rng.below(texts.len())].to_string(),
                    _ => values[rng.below(values.len())].to_string(),
                },
            )
        };
        let top_value = |rng: &mut Rng, k: &str| -> String {
            match (k, rng.below(8)) {
                ("choices", 0) => "null".into(),
                ("choices", 1) => "[]".into(),
                ("choices", 2) => format!("[{},{}]", choice(rng), choice(rng)),
                ("choices", _) => format!("[{}{}{}]", w(rng), choice(rng), w(rng)),
                ("model", _) => texts[rng.below(texts.len())].to_string(),
                _ => values[rng.below(values.len())].to_string(),
            }
        };
        let mut event = format!("{}{}", w(rng), object(rng, &keys, &top_value));
        match rng.below(12) {
            0 => event.push_str(" x"),
            1 => {
                let mut cut = rng.below(event.len() + 1);
                while !event.is_char_boundary(cut) {
                    cut -= 1;
                }
                event.truncate(cut);
            }
            2 => event.push('\n'),
            _ => {}
        }
        event
    }

    #[test]
    fn agrees_with_serde_on_generated_events() {
        let mut rng = Rng::new(29);
        let (mut read, mut left) = (0, 0);
        for _ in 0..40_000 {
            let e = generated(&mut rng);
            assert_agree(&e);
            if PlainChunk::scan(&e).is_some() {
                read += 1;
            } else {
                left += 1;
            }
        }
        // Both sides of the subset were exercised.
        assert!(read > 2_000 && left > 2_000, "{read} read, {left} left");
    }
}
