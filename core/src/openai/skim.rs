//! A one-pass reading of the stream events servers send nearly always, beside serde_json's full
//! reading, which stays the definition.
//!
//! Our own code instead of serde_json's for loadgen's hot path because an event's JSON was about a
//! sixth of loadgen's user time per event (`perf`, BENCHMARKS.md issue 17): serde's derive visits
//! every key and value through generic visitors, and a faster general parser (sonic-rs through
//! serde) measured slower still on these small objects. The skim reads only the plain subset: an
//! escaped surrogate (half of a pair) or a control character in a string, an escape in a key, a
//! non-null `usage` or `error` (once a stream, if at all), a wrong type, a repeated field or deep
//! nesting makes it give up (`None`), and the caller reads the event with serde_json instead. So
//! whenever it answers, serde_json would have answered the same; a randomized test holds it to
//! that on generated and mutated events.

use std::borrow::Cow;

use super::{EventChoice, EventDelta, GroundTruthChunk, StreamEvent};

/// Nesting a skipped value may have before the skim gives up (serde_json allows 128).
const MAX_DEPTH: u32 = 32;

/// The event in `text`, or `None` where it is outside the plain subset (see the module's comment).
pub(super) fn skim(text: &str) -> Option<StreamEvent<'_>> {
    let mut p = Skim {
        src: text,
        s: text.as_bytes(),
        i: 0,
    };
    let mut ev = StreamEvent::default();
    let mut seen = Seen::default();
    p.object(|p, key| match key {
        "choices" => seen.read(0, p, &mut ev.choices, Skim::choices),
        "model" => seen.read(1, p, &mut ev.model, Skim::str_or_null),
        "usage" => seen.first(2).and_then(|()| p.null()),
        "error" => seen.first(3).and_then(|()| p.null()),
        "tokenperf" => seen.read(4, p, &mut ev.tokenperf, |p| p.or_null(Skim::ground_truth)),
        _ => p.skip_value(0),
    })?;
    p.ws();
    (p.i == p.s.len()).then_some(ev)
}

/// Which of a struct's fields have been read: serde's derive rejects a field given twice, so the
/// skim gives up on one.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn first(&mut self, field: u8) -> Option<()> {
        let bit = 1 << field;
        let fresh = self.0 & bit == 0;
        self.0 |= bit;
        fresh.then_some(())
    }

    /// The field's value read into `slot`, unless the field was read before.
    fn read<'a, T>(
        &mut self,
        field: u8,
        p: &mut Skim<'a>,
        slot: &mut T,
        read: impl FnOnce(&mut Skim<'a>) -> Option<T>,
    ) -> Option<()> {
        self.first(field)?;
        *slot = read(p)?;
        Some(())
    }
}

struct Skim<'a> {
    src: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Skim<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    /// A string without escapes or control characters, borrowed.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = string_end(&self.s[start..]);
        self.i = start + len;
        self.eat_raw(b'"')?;
        // Both ends are at ASCII bytes of valid UTF-8, so they are character boundaries.
        self.src.get(start..start + len)
    }

    /// A string: borrowed when it has no escapes (nearly always), else unescaped as serde_json
    /// does. A `\u` escape of a surrogate (half of a pair) makes the skim give up, so pairs and
    /// lone halves stay serde_json's to judge.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let at = self.i;
        match self.plain_str() {
            Some(s) => Some(Cow::Borrowed(s)),
            None => {
                self.i = at;
                self.escaped().map(Cow::Owned)
            }
        }
    }

    /// The slow path of [`Self::string`], kept out of line so the plain path stays small.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => out.push(self.escape()?),
                b if b < 0x20 => return None,
                _ => {
                    let run = string_end(&self.s[self.i..]);
                    out.push_str(self.src.get(self.i..self.i + run)?);
                    self.i += run;
                }
            }
        }
    }

    /// The character an escape at the cursor stands for (JSON's eight, and `\u` outside the
    /// surrogates).
    fn escape(&mut self) -> Option<char> {
        let c = match *self.s.get(self.i + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = self.s.get(self.i + 2..self.i + 6)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                self.i += 4;
                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
            }
            _ => return None,
        };
        self.i += 2;
        Some(c)
    }

    fn eat_raw(&mut self, b: u8) -> Option<()> {
        (self.s.get(self.i) == Some(&b)).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        let end = self.i + word.len();
        (self.s.get(self.i..end) == Some(word)).then(|| self.i = end)
    }

    fn null(&mut self) -> Option<()> {
        self.literal(b"null")
    }

    /// `null`, or a value read by `read`.
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.peek()? {
            b'n' => self.null().map(|()| None),
            _ => read(self).map(Some),
        }
    }

    fn str_or_null(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.or_null(Self::string)
    }

    /// An object's members, each value read by `member` (which is handed the key).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            // A key with an escape is left to serde_json (no server sends one).
            let key = self.plain_str()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array's elements, each read by `element` (which is handed its index).
    fn array(&mut self, mut element: impl FnMut(&mut Self, usize) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        let mut n = 0;
        loop {
            element(self, n)?;
            n += 1;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any JSON value, checked and passed over.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|p, _| p.skip_value(depth + 1)),
            b'[' => self.array(|p, _| p.skip_value(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.null(),
            _ => self.number(),
        }
    }

    /// A number as JSON's grammar has it: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let _ = self.eat_raw(b'-');
        match self.s.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat_raw(b'.').is_some() {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// An unsigned integer that fits in a u64 (a sign, fraction or exponent would be a float to
    /// serde, so the skim gives up on them).
    fn uint(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&b) = self.s.get(self.i).filter(|b| b.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        let leading_zero = len > 1 && self.s[start] == b'0';
        let float = matches!(self.s.get(self.i), Some(b'.' | b'e' | b'E'));
        (len > 0 && !leading_zero && !float).then_some(n)
    }

    /// mock-server's ground truth: all four fields, each an unsigned integer.
    fn ground_truth(&mut self) -> Option<GroundTruthChunk> {
        let mut g = GroundTruthChunk::default();
        let mut seen = Seen::default();
        self.object(|p, key| match key {
            "arrival_mono_us" => seen.read(0, p, &mut g.arrival_mono_us, Self::uint),
            "due_mono_us" => seen.read(1, p, &mut g.due_mono_us, Self::uint),
            "sent_mono_us" => seen.read(2, p, &mut g.sent_mono_us, Self::uint),
            "tokens" => seen.read(3, p, &mut g.tokens, |p| u32::try_from(p.uint()?).ok()),
            _ => p.skip_value(2),
        })?;
        (seen.0 == 0b1111).then_some(g)
    }

    /// `choices`: null, or a list whose first element is read and the rest passed over.
    fn choices(&mut self) -> Option<Option<Option<EventChoice<'a>>>> {
        self.or_null(|p| {
            let mut first = None;
            p.array(|p, n| match n {
                0 => p.choice().map(|c| first = Some(c)),
                _ => p.skip_value(1),
            })?;
            Some(first)
        })
    }

    fn choice(&mut self) -> Option<EventChoice<'a>> {
        let mut c = EventChoice::default();
        let mut seen = Seen::default();
        self.object(|p, key| match key {
            "delta" => seen.read(0, p, &mut c.delta, |p| p.or_null(Self::delta)),
            "text" => seen.read(1, p, &mut c.text, Self::str_or_null),
            "finish_reason" => seen.read(2, p, &mut c.finish_reason, Self::str_or_null),
            _ => p.skip_value(2),
        })?;
        Some(c)
    }

    fn delta(&mut self) -> Option<EventDelta<'a>> {
        let mut d = EventDelta::default();
        let mut seen = Seen::default();
        self.object(|p, key| match key {
            "content" => seen.read(0, p, &mut d.content, Self::str_or_null),
            "reasoning_content" => seen.read(1, p, &mut d.reasoning_content, Self::str_or_null),
            _ => p.skip_value(3),
        })?;
        Some(d)
    }
}

/// Where a string's plain run ends: the first quote, backslash or control character, or the end.
/// Eight bytes at a time (as serde_json's own string scan does), since most of an event's bytes are
/// inside strings: a byte-by-byte loop took a quarter of the skim's time.
pub(super) fn string_end(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // A byte of `x` is below `n` (< 128) iff its high bit is set in `(x - n·ONES) & !x`; above the
    // lowest such byte a borrow can set others, so only the lowest one counts.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut at = 0;
    while let Some(word) = s.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let hits = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = &s[at..];
    at + tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(tail.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// What serde_json makes of `text`, as comparable text (or its error).
    fn full(text: &str) -> Result<String, String> {
        serde_json::from_str::<StreamEvent>(text)
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string())
    }

    fn agrees(text: &str) -> bool {
        match skim(text) {
            Some(ev) => {
                assert_eq!(Ok(format!("{ev:?}")), full(text), "skim differs on {text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn a_plain_run_ends_at_the_first_quote_backslash_or_control_character() {
        let plain = |s: &[u8]| s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        let mut rng = Rng::new(5);
        for _ in 0..20_000 {
            let len = rng.below(40);
            let s: Vec<u8> = (0..len)
                .map(|_| match rng.below(12) {
                    0 => [b'"', b'\\', b'\n', 0, 0x1f, 0x20, 0x7f, 0x80, 0xff][rng.below(9)],
                    _ => b'a' + rng.below(26) as u8,
                })
                .collect();
            assert_eq!(string_end(&s), plain(&s).unwrap_or(len), "{s:?}");
        }
    }

    #[test]
    fn reads_what_real_servers_send_in_one_pass() {
        for text in [
            r#"{"id":"cmpl-cf15","object":"text_completion","created":1796223577,"model":"m","choices":[{"index":0,"text":" iron","logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1796223577,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":" the"}}],"created":1,"id":"c","model":"llama","system_fingerprint":"b1-x","object":"chat.completion.chunk","timings":{"prompt_n":3,"predicted_per_second":51.2e0}}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hm","content":null}}],"usage":null}"#,
            " {\n\"choices\" : [ ] , \"model\" : null } \r\n",
            r#"{"choices":[{"text":"a"},{"text":"b","extra":[1,-2.5,3E+7,true,false,null,{}]}]}"#,
            r#"{"choices":null}"#,
            "{}",
            r#"{"choices":[{"text":" a","finish_reason":null}],"tokenperf":{"arrival_mono_us":1796223577123456,"due_mono_us":0,"sent_mono_us":18446744073709551615,"tokens":4294967295}}"#,
            r#"{"tokenperf":null,"usage":null,"error":null}"#,
            r#"{"choices":[{"text":"a\nb\t\"q\"\\\/\b\f\r\u00e9\u0000 é"}],"model":"\u4e2d"}"#,
            r#"{"choices":[{"delta":{"content":"x\ny"}}],"x":"\u0000\"\\"}"#,
        ] {
            assert!(agrees(text), "skim gave up on {text}");
        }
    }

    #[test]
    fn gives_up_where_serde_json_must_decide() {
        for text in [
            r#"{"model":"\ud83d\ude00"}"#,
            r#"{"choic\u0065s":[]}"#,
            r#"{"model":"\udc00"}"#,
            r#"{"model":"a\x"}"#,
            r#"{"model":"\u12"}"#,
            r#"{"model":"\u+123"}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"text":"a","text":"b"}]}"#,
            r#"{"model":7}"#,
            r#"{"choices":[null]}"#,
            r#"{"choices":[{"delta":"x"}]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"[[]]"#,
            "{\"a\":\"tab\there\"}",
            r#"{"tokenperf":{"arrival_mono_us":1,"due_mono_us":2,"sent_mono_us":3}}"#,
            r#"{"tokenperf":{"arrival_mono_us":1,"due_mono_us":2,"sent_mono_us":3,"tokens":4294967296}}"#,
            r#"{"tokenperf":{"arrival_mono_us":18446744073709551616,"due_mono_us":2,"sent_mono_us":3,"tokens":4}}"#,
            r#"{"tokenperf":{"arrival_mono_us":1.0,"due_mono_us":2,"sent_mono_us":3,"tokens":4}}"#,
            r#"{"tokenperf":{"arrival_mono_us":-1,"due_mono_us":2,"sent_mono_us":3,"tokens":4}}"#,
            r#"{"tokenperf":{"arrival_mono_us":01,"due_mono_us":2,"sent_mono_us":3,"tokens":4}}"#,
        ] {
            assert!(skim(text).is_none(), "skim answered {text}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(skim(&deep).is_none());
    }

    /// Events built from random pieces, then mutated byte by byte: wherever the skim answers,
    /// serde_json answers the same. It must also answer many unmutated events (the pieces hold
    /// escapes, usage and out-of-range numbers often, on purpose), ground truth among them.
    #[test]
    fn random_events_read_as_serde_json_reads_them() {
        let mut rng = Rng::new(17);
        let (mut answered, mut built, mut with_truth) = (0, 0, 0);
        for _ in 0..4000 {
            let text = random_event(&mut rng);
            built += 1;
            answered += usize::from(agrees(&text));
            with_truth += usize::from(skim(&text).is_some_and(|e| e.tokenperf.is_some()));
            let mut bytes = text.into_bytes();
            for _ in 0..=rng.below(3) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = PIECES[rng.below(PIECES.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, PIECES[rng.below(PIECES.len())]),
                }
            }
            if let Ok(mutated) = std::str::from_utf8(&bytes) {
                agrees(mutated);
            }
        }
        assert!(
            answered * 5 > built * 2 && with_truth > 200,
            "the skim answered {answered} of {built}, {with_truth} with ground truth"
        );
    }

    const PIECES: &[u8] = b"{}[]\",:\\ 0123456789-+.eEntrufalsx\t\n";

    fn random_event(rng: &mut Rng) -> String {
        let mut members = vec![];
        if rng.below(8) > 0 {
            let n = [0, 1, 1, 1, 2][rng.below(5)];
            let choices: Vec<String> = (0..n).map(|_| random_choice(rng)).collect();
            members.push(format!("\"choices\":[{}]", choices.join(",")));
        }
        if rng.below(2) == 0 {
            members.push(format!("\"model\":{}", random_str_or_null(rng)));
        }
        if rng.below(3) == 0 {
            members.push(format!("\"tokenperf\":{}", random_ground_truth(rng)));
        }
        for _ in 0..rng.below(4) {
            // Now and then a key with an escape, which the skim leaves to serde_json.
            let keys = [
                "id",
                "object",
                "created",
                "timings",
                "usage",
                "x",
                "i\\u0064",
                "mod\\u0065l",
            ];
            let n = if rng.below(16) > 0 { 6 } else { keys.len() };
            let key = keys[rng.below(n)];
            members.push(format!("\"{key}\":{}", random_value(rng, 0)));
        }
        shuffle(rng, &mut members);
        spaced(rng, &format!("{{{}}}", members.join(",")))
    }

    fn random_choice(rng: &mut Rng) -> String {
        let mut members = vec![format!("\"index\":{}", rng.below(3))];
        if rng.below(2) == 0 {
            let mut delta = vec![format!("\"content\":{}", random_str_or_null(rng))];
            if rng.below(3) == 0 {
                delta.push(format!("\"reasoning_content\":{}", random_str_or_null(rng)));
            }
            if rng.below(3) == 0 {
                delta.push("\"role\":\"assistant\"".into());
            }
            shuffle(rng, &mut delta);
            members.push(format!("\"delta\":{{{}}}", delta.join(",")));
        } else {
            members.push(format!("\"text\":{}", random_str_or_null(rng)));
        }
        members.push(format!("\"finish_reason\":{}", random_str_or_null(rng)));
        if rng.below(2) == 0 {
            members.push(format!("\"logprobs\":{}", random_value(rng, 1)));
        }
        shuffle(rng, &mut members);
        format!("{{{}}}", members.join(","))
    }

    fn random_ground_truth(rng: &mut Rng) -> String {
        // Mostly valid: the last three values are out of a u32's range, a u64's, or a float.
        let values = [
            "0",
            "7",
            "1796223577123456",
            "4294967296",
            "18446744073709551616",
            "1e3",
        ];
        let mut fields = vec![];
        for k in ["arrival_mono_us", "due_mono_us", "sent_mono_us", "tokens"] {
            if rng.below(16) > 0 {
                let v = values[if rng.below(8) > 0 {
                    rng.below(3)
                } else {
                    rng.below(6)
                }];
                fields.push(format!("\"{k}\":{v}"));
            }
        }
        if rng.below(4) == 0 {
            fields.push(format!("\"x\":{}", random_value(rng, 1)));
        }
        shuffle(rng, &mut fields);
        format!("{{{}}}", fields.join(","))
    }

    fn random_str_or_null(rng: &mut Rng) -> String {
        match rng.below(12) {
            0 => "null".into(),
            1 => "\"a\\\"b\"".into(),
            2 => "\"é ü\"".into(),
            3 => "\"def f():\\n\\treturn \\u00e9\\/\\\\\"".into(),
            4 => "\"\\ud83d\\ude00 \\u00\"".into(),
            _ => format!("\" w{}\"", rng.below(1000)),
        }
    }

    fn random_value(rng: &mut Rng, depth: u32) -> String {
        let leaf = depth > 3;
        match rng.below(if leaf { 5 } else { 7 }) {
            0 => random_str_or_null(rng),
            1 => ["true", "false", "null"][rng.below(3)].into(),
            2 => [
                "0",
                "-1",
                "12.5",
                "3e9",
                "-0.0E-2",
                "1e400",
                "123456789012345678901234",
            ][rng.below(7)]
            .into(),
            3 => format!("\"id-{}\"", rng.below(100)),
            4 => "[]".into(),
            5 => {
                let items: Vec<String> = (0..rng.below(3))
                    .map(|_| random_value(rng, depth + 1))
                    .collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let items: Vec<String> = (0..rng.below(3))
                    .map(|i| format!("\"k{i}\":{}", random_value(rng, depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(","))
            }
        }
    }

    fn shuffle(rng: &mut Rng, v: &mut [String]) {
        for i in (1..v.len()).rev() {
            v.swap(i, rng.below(i + 1));
        }
    }

    /// Whitespace after some structural characters, as some servers pretty-print.
    fn spaced(rng: &mut Rng, text: &str) -> String {
        if rng.below(4) > 0 {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() * 2);
        for c in text.chars() {
            out.push(c);
            if matches!(c, ',' | ':' | '{' | '[') {
                out.push_str([" ", "\n  ", "\t", "\r\n"][rng.below(4)]);
            }
        }
        out
    }
}
