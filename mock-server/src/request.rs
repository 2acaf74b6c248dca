//! What a client asked for: the request body validated into a [`Request`] (every refusal names the
//! offending field), the endpoint it came to, and the OpenAI-shaped error a refusal is answered with.
//! Shared by the handlers ([`crate::api`]) and the response ([`crate::stream`]), which do not import
//! each other.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokenperf_core::openai::{ErrorBody, ErrorObject};

use crate::State;

/// Which OpenAI endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// Roles a chat message may have.
const ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "tool",
    "developer",
    "function",
];

/// A client's value in an error message, cut so that a huge value cannot make a huge answer.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// An error answered as `{"error": {"message", "type", "code", "param"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
        }
    }

    pub fn server_error(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
        }
    }

    /// An error for an injected `status=CODE` fault, worded as real servers word that status.
    pub fn injected(code: u16) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (message, kind) = match code {
            400 => (
                "This model's maximum context length was exceeded (mock fault)",
                "invalid_request_error",
            ),
            401 => ("Invalid API key (mock fault)", "authentication_error"),
            429 => (
                "Rate limit reached: too many requests (mock fault)",
                "rate_limit_error",
            ),
            503 => ("The server is overloaded (mock fault)", "server_error"),
            _ => ("Internal server error (mock fault)", "server_error"),
        };
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                message: self.message,
                kind: Some(self.kind.to_string()),
                code: Some(self.status.as_u16().into()),
                param: self.param,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        Self {
            status,
            message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body is larger than the server's limit".to_string()
            } else {
                r.body_text()
            },
            kind: "invalid_request_error",
            param: None,
        }
    }
}

/// What a request asked for, after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: String,
    /// The prompt text: chat message contents joined by newlines, or the completions prompt.
    pub prompt: String,
    pub max_tokens: u64,
    /// Lower bound on the output length (vLLM's extension).
    pub min_tokens: u64,
    /// Produce exactly `max_tokens` tokens.
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
}

fn opt_u64(v: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(
                format!("'{field}' must be a non-negative integer, got {}", shown(x)),
                Some(field),
            )
        }),
    }
}

fn opt_bool(v: &Value, field: &str) -> Result<Option<bool>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(x) => Err(ApiError::bad_request(
            format!("'{field}' must be a boolean, got {}", shown(x)),
            Some(field),
        )),
    }
}

/// The text of `messages[i]`, which must be an object with a known `role` and a text `content`.
fn message_text(m: &Value, i: usize) -> Result<String, ApiError> {
    let at = format!("messages[{i}]");
    let Some(obj) = m.as_object() else {
        return Err(ApiError::bad_request(
            format!(
                "'{at}' must be an object with 'role' and 'content', got {}",
                shown(m)
            ),
            Some(&at),
        ));
    };
    let role_field = format!("{at}.role");
    match obj.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
        Some(r) => {
            return Err(ApiError::bad_request(
                format!(
                    "'{role_field}' must be one of {}, got {}",
                    ROLES.join(", "),
                    shown(r)
                ),
                Some(&role_field),
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                format!("'{role_field}' is required"),
                Some(&role_field),
            ));
        }
    }
    text_of(
        obj.get("content").unwrap_or(&Value::Null),
        &format!("{at}.content"),
    )
}

fn text_of(content: &Value, field: &str) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        // Content parts: [{"type": "text", "text": "..."}]
        Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        other => Err(ApiError::bad_request(
            format!(
                "'{field}' must be a string or a list of content parts, got {}",
                shown(other)
            ),
            Some(field),
        )),
    }
}

/// The prompt text: the chat messages' contents joined by newlines, or the completions prompt.
fn prompt_of(v: &Value, endpoint: Endpoint) -> Result<String, ApiError> {
    Ok(match endpoint {
        Endpoint::Chat => {
            let msgs = v
                .get("messages")
                .ok_or_else(|| ApiError::bad_request("'messages' is required", Some("messages")))?;
            let arr = msgs.as_array().ok_or_else(|| {
                ApiError::bad_request("'messages' must be a list", Some("messages"))
            })?;
            let mut parts = Vec::with_capacity(arr.len());
            for (i, m) in arr.iter().enumerate() {
                parts.push(message_text(m, i)?);
            }
            parts.join("\n")
        }
        Endpoint::Completions => match v.get("prompt") {
            None => {
                return Err(ApiError::bad_request(
                    "'prompt' is required",
                    Some("prompt"),
                ));
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| p.to_string())
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Some(x) => {
                return Err(ApiError::bad_request(
                    format!("'prompt' must be a string or a list, got {}", shown(x)),
                    Some("prompt"),
                ));
            }
        },
    })
}

/// `max_completion_tokens`, else `max_tokens`, else the default; from 1 to `--max-tokens-limit`,
/// refused naming the field the client used.
fn max_tokens_of(v: &Value, state: &State) -> Result<u64, ApiError> {
    let (field, asked) = match opt_u64(v, "max_completion_tokens")? {
        Some(n) => ("max_completion_tokens", Some(n)),
        None => ("max_tokens", opt_u64(v, "max_tokens")?),
    };
    let max_tokens = asked.unwrap_or(state.config.default_max_tokens);
    if max_tokens == 0 {
        return Err(ApiError::bad_request(
            format!("'{field}' must be at least 1"),
            Some(field),
        ));
    }
    let limit = state.config.max_tokens_limit;
    if max_tokens > limit {
        return Err(ApiError::bad_request(
            format!("'{field}' is {max_tokens}, above this server's limit of {limit} tokens"),
            Some(field),
        ));
    }
    Ok(max_tokens)
}

/// Validates a request body for `endpoint`.
pub fn parse(body: &[u8], endpoint: Endpoint, state: &State) -> Result<Request, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}"), None))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "request body must be a JSON object",
            None,
        ));
    }
    let model = match v.get("model") {
        Some(Value::String(s)) => s.clone(),
        None => return Err(ApiError::bad_request("'model' is required", Some("model"))),
        Some(x) => {
            return Err(ApiError::bad_request(
                format!("'model' must be a string, got {}", shown(x)),
                Some("model"),
            ));
        }
    };
    let models = &state.config.model;
    if !models.is_empty() && !models.contains(&model) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model '{model}' does not exist"),
            kind: "invalid_request_error",
            param: Some("model".into()),
        });
    }
    let prompt = prompt_of(&v, endpoint)?;
    let max_tokens = max_tokens_of(&v, state)?;
    if let Some(n) = opt_u64(&v, "n")?
        && n != 1
    {
        return Err(ApiError::bad_request(
            format!("only n = 1 is supported, got {n}"),
            Some("n"),
        ));
    }
    let min_tokens = opt_u64(&v, "min_tokens")?.unwrap_or(0);
    if min_tokens > max_tokens {
        return Err(ApiError::bad_request(
            format!("'min_tokens' ({min_tokens}) must not exceed 'max_tokens' ({max_tokens})"),
            Some("min_tokens"),
        ));
    }
    let ignore_eos = opt_bool(&v, "ignore_eos")?.unwrap_or(false);
    let stream = opt_bool(&v, "stream")?.unwrap_or(false);
    let include_usage = match v.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(o @ Value::Object(_)) => opt_bool(o, "include_usage")
            .map_err(|mut e| {
                e.param = Some("stream_options.include_usage".into());
                e
            })?
            .unwrap_or(false),
        Some(x) => {
            return Err(ApiError::bad_request(
                format!("'stream_options' must be an object, got {x}"),
                Some("stream_options"),
            ));
        }
    };
    Ok(Request {
        model,
        prompt,
        max_tokens,
        min_tokens,
        ignore_eos,
        stream,
        include_usage,
    })
}
