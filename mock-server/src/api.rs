//! Request handling: parses OpenAI request bodies (naming the offending field on error) and turns every
//! failure into an OpenAI-shaped error body with the right status. Never panics on client input.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokenperf_core::openai::{ErrorBody, ErrorObject};

use crate::State;
use crate::stream::{Endpoint, Plan};

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
    pub stream: bool,
    pub include_usage: bool,
}

fn opt_u64(v: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(
                format!("'{field}' must be a non-negative integer, got {x}"),
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
            format!("'{field}' must be a boolean, got {x}"),
            Some(field),
        )),
    }
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
            format!("'{field}' must be a string or a list of content parts, got {other}"),
            Some(field),
        )),
    }
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
                format!("'model' must be a string, got {x}"),
                Some("model"),
            ));
        }
    };
    let models = &state.config.models;
    if !models.is_empty() && !models.contains(&model) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model '{model}' does not exist"),
            kind: "invalid_request_error",
            param: Some("model".into()),
        });
    }
    let prompt = match endpoint {
        Endpoint::Chat => {
            let msgs = v
                .get("messages")
                .ok_or_else(|| ApiError::bad_request("'messages' is required", Some("messages")))?;
            let arr = msgs.as_array().ok_or_else(|| {
                ApiError::bad_request("'messages' must be a list", Some("messages"))
            })?;
            let mut parts = Vec::with_capacity(arr.len());
            for (i, m) in arr.iter().enumerate() {
                let field = format!("messages[{i}].content");
                parts.push(text_of(m.get("content").unwrap_or(&Value::Null), &field)?);
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
                    format!("'prompt' must be a string or a list, got {x}"),
                    Some("prompt"),
                ));
            }
        },
    };
    let max_tokens = match opt_u64(&v, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u64(&v, "max_tokens")?,
    }
    .unwrap_or(state.config.default_max_tokens);
    if max_tokens == 0 {
        return Err(ApiError::bad_request(
            "'max_tokens' must be at least 1",
            Some("max_tokens"),
        ));
    }
    if let Some(n) = opt_u64(&v, "n")?
        && n != 1
    {
        return Err(ApiError::bad_request(
            format!("only n = 1 is supported, got {n}"),
            Some("n"),
        ));
    }
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
        stream,
        include_usage,
    })
}

async fn handle(
    state: Arc<State>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    // The clock starts when the request has been read: every token deadline is counted from here.
    let start = Instant::now();
    let body = body?;
    let req = parse(&body, endpoint, &state)?;
    let plan = Plan::new(&state, req, endpoint, start);
    if plan.request.stream {
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no")
            .body(Body::from_stream(plan.into_sse(state)))
            .expect("static headers are valid"))
    } else {
        let json = plan.into_json(&state).await;
        Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
    }
}

pub async fn chat_completions(
    AxState(state): AxState<Arc<State>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(state, body, Endpoint::Chat).await
}

pub async fn completions(
    AxState(state): AxState<Arc<State>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(state, body, Endpoint::Completions).await
}

pub async fn models(AxState(state): AxState<Arc<State>>) -> Json<Value> {
    let names: Vec<String> = if state.config.models.is_empty() {
        vec!["mock".to_string()]
    } else {
        state.config.models.clone()
    };
    Json(json!({
        "object": "list",
        "data": names.iter().map(|m| json!({
            "id": m, "object": "model", "created": 0, "owned_by": "tokenperf-mock"
        })).collect::<Vec<_>>()
    }))
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
