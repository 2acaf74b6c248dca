//! OpenAI wire types shared by the mock server (which writes them) and loadgen (which reads them).
//!
//! Client-side types are lenient: every field is optional and unknown fields are ignored, because real
//! servers differ (llama.cpp's `timings`, `content: null` role chunks, usage inside the finish chunk of a
//! completions stream, `choices: []` usage chunks; see `shared/reference/real-server.md`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod recurring;
mod skim;

pub use recurring::{EventError, Reading, Recurring};

/// `usage` as OpenAI sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// `{"cached_tokens": n}`: prompt tokens the server took from its prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl Usage {
    /// Prompt tokens served from the server's prefix cache, when it says.
    pub fn cached_tokens(&self) -> Option<u64> {
        self.prompt_tokens_details?.cached_tokens
    }
}

/// `stream_options` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The `error` object of an OpenAI error body: `{"error": {"message", "type", "code", "param"}}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
    #[serde(default)]
    pub param: Option<String>,
}

/// A whole OpenAI error body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

impl ErrorObject {
    /// Reads an `error` value that may be an object (OpenAI) or a bare string (some servers).
    pub fn from_value(v: &Value) -> Self {
        match v {
            Value::String(s) => Self {
                message: s.clone(),
                ..Self::default()
            },
            Value::Object(_) => serde_json::from_value(v.clone()).unwrap_or_else(|_| Self {
                message: v.to_string(),
                ..Self::default()
            }),
            other => Self {
                message: other.to_string(),
                ..Self::default()
            },
        }
    }
}

/// One streamed event as a client reads it, for both chat and completions. Borrows from the event's
/// bytes where the JSON has no escapes.
#[derive(Debug, Default, Deserialize)]
pub struct StreamEvent<'a> {
    /// The first choice only (the client asks for n = 1); `Some(None)` for `choices: []`. Read without
    /// collecting the list, so an event costs no allocation beyond escaped strings.
    #[serde(default, borrow, deserialize_with = "first_choice")]
    pub choices: Option<Option<EventChoice<'a>>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<Value>,
    /// Ground truth from tokenperf's mock-server (only when asked for).
    #[serde(default)]
    pub tokenperf: Option<GroundTruthChunk>,
    /// The model the server says answered.
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub model: Option<Cow<'a, str>>,
}

/// The ground truth mock-server adds to a chunk: CLOCK_MONOTONIC µs of the request's arrival, the
/// chunk's due time and its actual send time, and how many tokens it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroundTruthChunk {
    pub arrival_mono_us: u64,
    pub due_mono_us: u64,
    pub sent_mono_us: u64,
    pub tokens: u32,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventChoice<'a> {
    /// Chat streams.
    #[serde(default, borrow)]
    pub delta: Option<EventDelta<'a>>,
    /// Completions streams.
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventDelta<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub reasoning_content: Option<Cow<'a, str>>,
}

/// A string or null that borrows from the event when the JSON string has no escapes. serde's own
/// `Cow` copies once it sits inside an `Option`, `borrow` or not (serde-rs/serde#2016): that was
/// two allocations (model and text) for every streamed event.
fn borrowed_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct V<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
        type Value = Option<Cow<'a, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(self)
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
    }
    d.deserialize_option(V(std::marker::PhantomData))
}

/// Deserializes `choices` keeping only its first element.
fn first_choice<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<EventChoice<'a>>>, D::Error> {
    struct V<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
        type Value = Option<Option<EventChoice<'a>>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of choices or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<EventChoice<'a>>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Some(first))
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

impl<'a> StreamEvent<'a> {
    /// Reads one event's JSON: in one pass where it is plain (no escapes, no usage or error; nearly
    /// every event), else with serde_json, which gives the same answer either way (`skim`).
    pub fn parse(text: &'a str) -> serde_json::Result<Self> {
        match skim::skim(text) {
            Some(ev) => Ok(ev),
            None => serde_json::from_str(text),
        }
    }

    /// The output text this event carries (chat `delta.content`, or completions `text`), if non-empty.
    pub fn content(&self) -> Option<&str> {
        let c = self.choices.as_ref()?.as_ref()?;
        let text = c
            .delta
            .as_ref()
            .and_then(|d| d.content.as_deref())
            .or(c.text.as_deref())?;
        (!text.is_empty()).then_some(text)
    }

    /// The finish reason, if this event has one.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.as_ref()?.as_ref()?.finish_reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shapes_real_servers_send() {
        let role: StreamEvent = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
        )
        .unwrap();
        assert_eq!(role.content(), None);
        let tok: StreamEvent = serde_json::from_str(
            r#"{"choices":[{"delta":{"content":" the"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(tok.content(), Some(" the"));
        let fin: StreamEvent = serde_json::from_str(
            r#"{"choices":[{"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8},"timings":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(fin.content(), None);
        assert_eq!(fin.finish_reason(), Some("length"));
        assert_eq!(fin.usage.unwrap().completion_tokens, 5);
        let cached: StreamEvent = serde_json::from_str(
            r#"{"model":"tiny","choices":[],"usage":{"prompt_tokens":17,"completion_tokens":2,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":16}}}"#,
        )
        .unwrap();
        assert_eq!(cached.usage.unwrap().cached_tokens(), Some(16));
        assert_eq!(cached.model.as_deref(), Some("tiny"));
        let usage: StreamEvent = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(usage.content(), None);
        let escaped: StreamEvent =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"a\nb"}}]}"#).unwrap();
        assert_eq!(escaped.content(), Some("a\nb"));
        // Only the first choice counts; the rest are skipped.
        let two: StreamEvent = serde_json::from_str(
            r#"{"choices":[{"delta":{"content":"one"}},{"delta":{"content":"two"}}]}"#,
        )
        .unwrap();
        assert_eq!(two.content(), Some("one"));
        let null: StreamEvent = serde_json::from_str(r#"{"choices":null}"#).unwrap();
        assert_eq!(null.content(), None);
    }

    /// Strings without escapes are borrowed from the event, not copied: an event costs no
    /// allocation. Escaped ones are unescaped into their own string; a string field that holds
    /// something else is an error.
    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let borrowed = |c: &Option<Cow<'_, str>>| matches!(c, Some(Cow::Borrowed(_)));
        let text: StreamEvent = serde_json::from_str(
            r#"{"model":"m","choices":[{"text":" the","finish_reason":"stop"}]}"#,
        )
        .unwrap();
        let choice = text.choices.as_ref().unwrap().as_ref().unwrap();
        assert!(borrowed(&text.model) && borrowed(&choice.text));
        assert!(borrowed(&choice.finish_reason));
        let chat: StreamEvent = serde_json::from_str(
            r#"{"choices":[{"delta":{"content":"x","reasoning_content":"y"}}]}"#,
        )
        .unwrap();
        let delta = chat.choices.unwrap().unwrap().delta.unwrap();
        assert!(borrowed(&delta.content) && borrowed(&delta.reasoning_content));
        let escaped: StreamEvent =
            serde_json::from_str(r#"{"model":"a\u00e9","choices":[{"text":"\"q\""}]}"#).unwrap();
        assert_eq!(escaped.model.as_deref(), Some("aé"));
        assert_eq!(escaped.content(), Some("\"q\""));
        assert!(!borrowed(&escaped.model));
        let wrong = serde_json::from_str::<StreamEvent>(r#"{"model":7}"#).unwrap_err();
        assert!(wrong.to_string().contains("a string or null"), "{wrong}");
        let absent: StreamEvent = serde_json::from_str(r#"{"model":null}"#).unwrap();
        assert_eq!(absent.model, None);
    }

    #[test]
    fn error_object_from_string_or_object() {
        let e = ErrorObject::from_value(&serde_json::json!({"message":"m","type":"t","code":429}));
        assert_eq!((e.message.as_str(), e.code), ("m", Some(429.into())));
        let s = ErrorObject::from_value(&serde_json::json!("plain"));
        assert_eq!(s.message, "plain");
    }
}
