//! A stream's events read against the last plain one: servers repeat every byte of a token's
//! event but its text.
//!
//! vLLM, llama.cpp and our mock send each token as the same JSON around a new text: the same `id`,
//! `object`, `created` (llama.cpp's moves once a second), `model`, `index`, `logprobs` and
//! `finish_reason: null` in the same order and spacing; an event that differs elsewhere is read
//! whole and kept in its place. Reading each one whole was about a third of loadgen's instructions per event
//! (cachegrind, BENCHMARKS.md issue 17). So a stream keeps its last plain event (see [`Recurring`]),
//! and a new event whose bytes before the text's opening quote and from its closing quote on are
//! the kept event's, with a text between them that has no quote, backslash or control character,
//! is known to be that event with a new text, found with two compares.
//!
//! Why that is exact: the skim reads left to right and decides each value from its own bytes, so on
//! the same bytes before the text it is in the same state when the text's string starts; a plain
//! run ends at the first quote, which is the kept suffix's first byte; and nothing it reads after a
//! string depends on what the string held, so on the same suffix it ends as it did for the kept
//! event, whose reading it answered (a randomized test below holds it to this against the full
//! reading). The bytes around the text are ASCII at both ends and were valid UTF-8 in the kept
//! event, so checking the text alone checks the event.

use super::{StreamEvent, skim};

/// The largest event kept to compare with: a token's event is a few hundred bytes, and a stream's
/// memory stays bounded whatever the server sends.
const MAX_KEPT: usize = 4096;

/// A stream's last plain event: one the skim read that has a first choice with a non-empty text
/// (its `delta.content`, else its `text`), borrowed, and no finish reason, usage, error or ground
/// truth. Those are the events that recur; anything else is read whole every time.
#[derive(Debug, Default)]
pub struct Recurring {
    bytes: Vec<u8>,
    /// Where the text's bytes start and end (between its quotes) in `bytes`; equal when nothing is
    /// kept. `u32`s, so that a stream's state stays in fewer cache lines (`bytes` is ≤ MAX_KEPT).
    text_start: u32,
    text_end: u32,
}

/// One event as [`Recurring::read`] read it.
#[derive(Debug)]
// Matched as soon as it is returned, once per event: boxing the large variant would allocate.
#[allow(clippy::large_enum_variant)]
pub enum Reading<'a> {
    /// The stream's last plain event again, with this text in place of its own: a chunk with no
    /// finish reason, usage, error or ground truth, and the kept event's model. Empty where the
    /// server sent `""` (where [`StreamEvent::content`] would answer `None`).
    Again(&'a str),
    /// Any other event, read whole.
    Event(StreamEvent<'a>),
}

/// An event that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Utf8(#[from] std::str::Utf8Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Recurring {
    /// Reads one event's JSON, against the last plain event where it can (see the module's
    /// comment), else whole with [`StreamEvent::parse`], keeping it when it is plain.
    pub fn read<'a>(&mut self, data: &'a [u8]) -> Result<Reading<'a>, EventError> {
        if let Some(text) = self.again(data) {
            return Ok(Reading::Again(text));
        }
        let text = std::str::from_utf8(data)?;
        match skim::skim(text) {
            Some(ev) => {
                self.keep(data, &ev);
                Ok(Reading::Event(ev))
            }
            None => Ok(Reading::Event(serde_json::from_str(text)?)),
        }
    }

    /// `data`'s text, if `data` is the kept event with another plain text.
    fn again<'a>(&self, data: &'a [u8]) -> Option<&'a str> {
        if self.text_start == self.text_end {
            return None;
        }
        let (head, tail) = (
            &self.bytes[..self.text_start as usize],
            &self.bytes[self.text_end as usize..],
        );
        let end = data.len().checked_sub(tail.len())?;
        // The tail first: it holds the finish reason, the part that changes at a stream's end.
        if end < head.len() || &data[end..] != tail || &data[..head.len()] != head {
            return None;
        }
        let text = &data[head.len()..end];
        if skim::string_end(text) != text.len() {
            return None;
        }
        std::str::from_utf8(text).ok()
    }

    /// Keeps `data` to compare the next events with, if the skim's reading of it, `ev`, is plain.
    fn keep(&mut self, data: &[u8], ev: &StreamEvent<'_>) {
        // The skim answers only where `usage` and `error` are null or absent (it leaves them to
        // serde_json), so a finish reason and ground truth are what remain to rule out.
        let plain = ev.finish_reason().is_none() && ev.tokenperf.is_none();
        let Some(text) = ev.content().filter(|_| plain && data.len() <= MAX_KEPT) else {
            return;
        };
        // Where the text lies in `data`, if it was borrowed from it (an escaped text was not).
        let start = (text.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        let quoted = start > 0
            && start < data.len()
            && data.len() - start > text.len()
            && data[start - 1] == b'"'
            && data[start + text.len()] == b'"';
        if !quoted || &data[start..start + text.len()] != text.as_bytes() {
            return;
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(data);
        // Both fit: `data` is at most MAX_KEPT long.
        self.text_start = start as u32;
        self.text_end = (start + text.len()) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const TOKEN: &str = r#"{"id":"cmpl-8e68","object":"text_completion","created":1796276772,"model":"m","choices":[{"index":0,"text":" iron","logprobs":null,"finish_reason":null}]}"#;

    fn read(r: &mut Recurring, data: &str) -> String {
        match r.read(data.as_bytes()).unwrap() {
            Reading::Again(t) => format!("again {t:?}"),
            Reading::Event(ev) => format!("event {:?}", ev.content()),
        }
    }

    #[test]
    fn a_token_event_after_one_of_the_same_shape_is_read_as_its_text() {
        let mut r = Recurring::default();
        assert_eq!(read(&mut r, TOKEN), r#"event Some(" iron")"#);
        let next = TOKEN.replace(" iron", " and é");
        assert_eq!(read(&mut r, &next), r#"again " and é""#);
        assert_eq!(read(&mut r, &TOKEN.replace(" iron", "")), r#"again """#);
        // The finish chunk differs after the text, an escaped text is read whole (and not kept),
        // and so is a shorter event, or one whose id changed.
        let finish = TOKEN
            .replace(" iron", "")
            .replace(":null}]", ":\"length\"}]");
        assert_eq!(read(&mut r, &finish), "event None");
        assert_eq!(
            read(&mut r, &TOKEN.replace(" iron", "a\\nb")),
            r#"event Some("a\nb")"#
        );
        let bad = [
            TOKEN.replace(" iron", "a\"b"),
            TOKEN.replace(" iron", "a\tb"),
        ];
        assert!(bad.iter().all(|b| r.read(b.as_bytes()).is_err()));
        assert_eq!(
            read(&mut r, &TOKEN.replace("8e68", "8e69")),
            r#"event Some(" iron")"#
        );
        assert_eq!(read(&mut r, r#"{"choices":[]}"#), "event None");
        assert_eq!(
            read(&mut r, &TOKEN.replace("8e68", "8e69")),
            r#"again " iron""#
        );
        // A token's event that also finishes the stream, or carries usage or ground truth, states
        // more than its text, so it is never kept.
        for other in [
            TOKEN.replace(":null}]", ":\"stop\"}]"),
            TOKEN.replace("}]}", r#"}],"usage":{"completion_tokens":3}}"#),
            TOKEN.replace("}]}", r#"}],"tokenperf":{"arrival_mono_us":1,"due_mono_us":2,"sent_mono_us":3,"tokens":1}}"#),
        ] {
            let mut r = Recurring::default();
            assert_eq!(read(&mut r, &other), r#"event Some(" iron")"#);
            assert_eq!(read(&mut r, &other), r#"event Some(" iron")"#, "{other}");
        }
    }

    #[test]
    fn bad_events_are_errors_whatever_was_kept() {
        let mut r = Recurring::default();
        read(&mut r, TOKEN);
        let mut bad = TOKEN.replace(" iron", " ir\u{e9}n").into_bytes();
        let at = bad.iter().position(|&b| b == 0xc3).unwrap();
        bad[at] = 0xff;
        assert!(matches!(r.read(&bad), Err(EventError::Utf8(_))));
        let cut = &TOKEN.as_bytes()[..TOKEN.len() - 1];
        assert!(matches!(r.read(cut), Err(EventError::Json(_))));
        // An event too large to keep is read whole every time.
        let huge = TOKEN.replace(" iron", &"x".repeat(MAX_KEPT));
        let mut r = Recurring::default();
        read(&mut r, &huge);
        assert_eq!(
            read(&mut r, &huge),
            format!("event Some({:?})", "x".repeat(MAX_KEPT))
        );
    }

    /// What reading the whole event says, in the terms `Again` states.
    fn whole(text: &str) -> Option<(Option<String>, Option<String>)> {
        let ev = StreamEvent::parse(text).ok()?;
        let plain = matches!(ev.choices, Some(Some(_)))
            && ev.finish_reason().is_none()
            && ev.usage.is_none()
            && ev.error.is_none()
            && ev.tokenperf.is_none();
        plain.then(|| {
            (
                ev.content().map(str::to_owned),
                ev.model.as_deref().map(str::to_owned),
            )
        })
    }

    /// Events of one shape with random texts, mutated byte by byte anywhere (around the text as
    /// well as in it): whenever an event is read as `Again`, the whole reading agrees, and most
    /// unmutated events are.
    #[test]
    fn again_agrees_with_the_whole_reading() {
        let shapes = [
            TOKEN.to_owned(),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}"#.to_owned(),
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":" the"}}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}"#.to_owned(),
            "{ \"choices\" : [ { \"text\" : \" the\" , \"x\" : [1, {\"y\": null}] } ] }".to_owned(),
            r#"{"choices":[{"delta":{"content":" the","reasoning_content":"r"}},{"text":"z"}],"usage":null}"#.to_owned(),
        ];
        const PIECES: &[u8] = b"{}[]\",:\\ 0123456789-+.eEntrufalsx\t\n\xc3\xa9\xff";
        let mut rng = Rng::new(23);
        let (mut again, mut plain) = (0, 0);
        for _ in 0..20_000 {
            let shape = &shapes[rng.below(shapes.len())];
            let mut r = Recurring::default();
            read(&mut r, shape);
            let word: String = (0..rng.below(6))
                .map(|_| ['a', ' ', 'é', '中', '1'][rng.below(5)])
                .collect();
            let mut bytes = shape
                .replacen(" the", &word, 1)
                .replacen(" iron", &word, 1)
                .into_bytes();
            let mutated = rng.below(2) == 0;
            for _ in 0..usize::from(mutated) * (1 + rng.below(3)) {
                let at = rng.below(bytes.len() + 1);
                let piece = PIECES[rng.below(PIECES.len())];
                match rng.below(3) {
                    0 if at < bytes.len() => bytes[at] = piece,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, piece),
                }
            }
            plain += usize::from(!mutated);
            match r.read(&bytes) {
                Ok(Reading::Again(t)) => {
                    again += usize::from(!mutated);
                    let text = std::str::from_utf8(&bytes).expect("Again on invalid UTF-8");
                    let kept = whole(shape).expect("kept a plain event");
                    let content = (!t.is_empty()).then(|| t.to_owned());
                    assert_eq!(whole(text), Some((content, kept.1)), "{text}");
                }
                Ok(Reading::Event(_)) => {}
                Err(_) => assert!(
                    std::str::from_utf8(&bytes).map_or(true, |t| StreamEvent::parse(t).is_err())
                ),
            }
        }
        assert!(
            again * 10 > plain * 9,
            "{again} of {plain} unmutated events read again"
        );
    }
}
