//! The response to one request: its token schedule and its bytes on the wire.
//!
//! Schedule: token `i` (0-based) is due at `start + ttft + i·itl`, computed from the request's start and
//! never from the previous write, so one late write does not delay the rest. The wire format follows
//! OpenAI's streaming API: chat sends a role chunk (with the first token), one chunk per token, a finish
//! chunk, a usage chunk with `choices: []` when `stream_options.include_usage` is set, then
//! `data: [DONE]`. Completions sends `text` chunks and no role chunk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use futures_util::Stream;
use serde_json::json;
use tokenperf_core::rng::Rng;

use crate::State;
use crate::api::Request;

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// Due time of token `i` (0-based) for a request that started at `start`.
pub fn due(start: Instant, ttft: Duration, itl: Duration, i: u64) -> Instant {
    start + ttft + itl * u32::try_from(i).unwrap_or(u32::MAX)
}

/// One request's response, decided up front.
pub struct Plan {
    pub request: Request,
    pub endpoint: Endpoint,
    pub start: Instant,
    id: String,
    created: u64,
    model_json: String,
    rng: Rng,
}

impl Plan {
    pub fn new(state: &State, request: Request, endpoint: Endpoint, start: Instant) -> Self {
        let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Self {
            id: format!("{prefix}-mock{n:016x}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model_json: serde_json::to_string(&request.model).expect("a string serializes"),
            rng: Rng::new(state.config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            request,
            endpoint,
            start,
        }
    }

    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        }
    }

    /// `data: {chunk}\n\n` for a chunk whose only choice has `delta_or_text` and `finish`.
    fn chunk(&self, content: &str, finish: Option<&str>) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        let choice = match self.endpoint {
            Endpoint::Chat if finish != "null" => {
                format!(r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":{finish}}}"#)
            }
            Endpoint::Chat => format!(
                r#"{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":{finish}}}"#,
                json!(content)
            ),
            Endpoint::Completions => format!(
                r#"{{"index":0,"text":{},"logprobs":null,"finish_reason":{finish}}}"#,
                json!(content)
            ),
        };
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"{}\",\"created\":{},\"model\":{},\"choices\":[{choice}]}}\n\n",
            self.id,
            self.object(),
            self.created,
            self.model_json
        )
    }

    fn role_chunk(&self) -> String {
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"{}\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
            self.id,
            self.object(),
            self.created,
            self.model_json
        )
    }

    fn usage(&self, prompt_tokens: u64) -> serde_json::Value {
        json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.request.max_tokens,
            "total_tokens": prompt_tokens + self.request.max_tokens,
        })
    }

    fn usage_chunk(&self, prompt_tokens: u64) -> String {
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"{}\",\"created\":{},\"model\":{},\"choices\":[],\"usage\":{}}}\n\n",
            self.id,
            self.object(),
            self.created,
            self.model_json,
            self.usage(prompt_tokens)
        )
    }

    fn prompt_tokens(&self, state: &State) -> u64 {
        state
            .tokenizer
            .count(&self.request.prompt, true)
            .map_or(0, |n| n as u64)
    }

    /// The SSE body. Each token is written when the pacer releases it at its deadline.
    pub fn into_sse(
        mut self,
        state: Arc<State>,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
        async_stream::stream! {
            let (ttft, itl) = (state.config.ttft, state.config.itl);
            // Counted before the first deadline, which is normally tens of milliseconds away.
            let prompt_tokens = self.prompt_tokens(&state);
            let n = self.request.max_tokens;
            for i in 0..n {
                let word = state.vocabulary.pick(&mut self.rng).to_string();
                state.pacer.sleep_until(due(self.start, ttft, itl, i)).await;
                let mut out = String::new();
                if i == 0 && self.endpoint == Endpoint::Chat {
                    out.push_str(&self.role_chunk());
                }
                out.push_str(&self.chunk(&word, None));
                if i + 1 == n {
                    // The end of the stream goes out in the same write as the last token, so a client's
                    // end-to-end time is not stretched by a second write.
                    out.push_str(&self.chunk("", Some("length")));
                    if self.request.include_usage {
                        out.push_str(&self.usage_chunk(prompt_tokens));
                    }
                    out.push_str("data: [DONE]\n\n");
                }
                yield Ok(Bytes::from(out));
            }
        }
    }

    /// The non-streaming body, returned when the last token is due.
    pub async fn into_json(mut self, state: &State) -> String {
        let n = self.request.max_tokens;
        let text: String = (0..n)
            .map(|_| state.vocabulary.pick(&mut self.rng).to_string())
            .collect();
        let prompt_tokens = self.prompt_tokens(state);
        let last = due(
            self.start,
            state.config.ttft,
            state.config.itl,
            n.saturating_sub(1),
        );
        state.pacer.sleep_until(last).await;
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": "length",
            }),
            Endpoint::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": "length",
            }),
        };
        json!({
            "id": self.id,
            "object": match self.endpoint {
                Endpoint::Chat => "chat.completion",
                Endpoint::Completions => "text_completion",
            },
            "created": self.created,
            "model": self.request.model,
            "choices": [choice],
            "usage": self.usage(prompt_tokens),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_absolute_from_start() {
        let s = Instant::now();
        let (ttft, itl) = (Duration::from_millis(50), Duration::from_micros(5_500));
        assert_eq!(due(s, ttft, itl, 0), s + ttft);
        assert_eq!(due(s, ttft, itl, 1), s + Duration::from_micros(55_500));
        // No accumulation: token 1000 is exactly ttft + 1000·itl after start.
        assert_eq!(
            due(s, ttft, itl, 1000),
            s + Duration::from_micros(5_550_000)
        );
    }
}
