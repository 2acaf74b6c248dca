//! Request handling: authentication, OpenAI request parsing (naming the offending field on error),
//! fault selection, admission, and OpenAI-shaped error bodies with the right status (400 bad input,
//! 401 key, 404 model, 413 body size, 429 queue full, injected 4xx/5xx). Never panics on client input.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request as HttpRequest, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use tokenperf_core::rng::Rng;

use crate::faults::{self, FAULT_HEADER, Plan as FaultPlan};
use crate::listener::ConnHandle;
use crate::request::{ApiError, Endpoint, parse};
use crate::stream::{self, Plan};
use crate::{Counting, State};

/// Header that turns on ground truth in the chunks of one request.
pub const GROUND_TRUTH_HEADER: &str = "x-tokenperf-ground-truth";

/// Header naming a request in logs on both sides: the client's when it sent one, else ours.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn authorized(state: &State, headers: &HeaderMap) -> bool {
    let Some(key) = &state.config.api_key else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == key)
}

/// Faults for this request: the `x-mock-fault` header when present, else one of the configured kinds
/// at the configured rate.
fn faults_for(state: &State, headers: &HeaderMap, rng: &mut Rng) -> Result<FaultPlan, ApiError> {
    if let Some(h) = headers.get(FAULT_HEADER) {
        let text = h
            .to_str()
            .map_err(|_| ApiError::bad_request("x-mock-fault is not text", None))?;
        let list = faults::parse_list(text)
            .map_err(|e| ApiError::bad_request(format!("x-mock-fault: {e}"), None))?;
        return Ok(FaultPlan::from_faults(&list));
    }
    let cfg = &state.config;
    if cfg.fault_rate > 0.0 && !cfg.fault.is_empty() && rng.next_f64() < cfg.fault_rate {
        let f = cfg.fault[rng.below(cfg.fault.len())];
        return Ok(FaultPlan::from_faults(&[f]));
    }
    Ok(FaultPlan::default())
}

async fn handle(
    state: Arc<State>,
    (version, headers): (Version, HeaderMap),
    conn: Option<ConnHandle>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    // The clock starts when the request reached the host (the kernel's receive stamp of its last
    // packet, else the read that brought it off the socket): TTFT and queue time count from here,
    // not from this server's wake-up, nor from after hyper's parsing and the middleware (tens of
    // µs a client would otherwise see added to every TTFT).
    let start = conn
        .as_ref()
        .and_then(ConnHandle::last_read)
        .unwrap_or_else(Instant::now);
    let result = respond(&state, (version, &headers), conn, body, endpoint, start).await;
    if let Err(e) = &result {
        state
            .metrics
            .requests_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(status = e.status.as_u16(), reason = %e.message, "request refused");
    }
    result
}

async fn respond(
    state: &Arc<State>,
    (version, headers): (Version, &HeaderMap),
    conn: Option<ConnHandle>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
    start: Instant,
) -> Result<Response, ApiError> {
    if !authorized(state, headers) {
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API key: send 'Authorization: Bearer <key>'".into(),
            kind: "authentication_error",
            param: None,
        });
    }
    let body = body?;
    let req = parse(&body, endpoint, state)?;
    let mut rng = state.next_request_rng();
    let faults = faults_for(state, headers, &mut rng)?;
    if let Some(secs) = faults.slow_first_byte {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    if let Some(code) = faults.status {
        return Err(ApiError::injected(code));
    }
    let prompt_tokens = Counting::start(state, &req.prompt);
    let prompt_tokens = if state.config.max_context > 0 {
        let p = prompt_tokens.get().await;
        let n = p.count;
        let limit = state.config.max_context;
        if n.saturating_add(req.max_tokens) > limit {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!(
                    "This model's maximum context length is {limit} tokens. However, you requested \
                     {} tokens ({n} in the messages, {} in the completion).",
                    n.saturating_add(req.max_tokens),
                    req.max_tokens
                ),
                kind: "invalid_request_error",
                param: Some("messages".into()),
            });
        }
        Counting::Done(p)
    } else {
        prompt_tokens
    };
    let ticket = state.admission.reserve().ok_or_else(|| ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: format!(
            "the server is at capacity ({} running, {} waiting)",
            state.config.max_num_seqs, state.config.max_waiting
        ),
        kind: "rate_limit_error",
        param: None,
    })?;
    let ground_truth = state.config.ground_truth
        || headers
            .get(GROUND_TRUTH_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1" || v.as_bytes().eq_ignore_ascii_case(b"true"));
    let plan = Plan::new(rng, req, endpoint, start, ticket, faults, ground_truth);
    if plan.request.stream {
        // hyper frames an HTTP/1.1 response of unknown length in chunks, which the pacer can write
        // itself; HTTP/1.0 gets a body delimited by the connection's end instead.
        let raw = conn.clone().filter(|_| version == Version::HTTP_11);
        let chunked = raw.is_some();
        let close = conn.filter(|_| state.config.close_after_stream);
        Ok(sse_response(
            plan.into_sse(state.clone(), prompt_tokens, raw),
            chunked,
            close,
        ))
    } else {
        let json = plan.into_json(state.clone(), prompt_tokens).await?;
        Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
    }
}

/// The event-stream response. `chunked` says so in the head, so hyper frames the body as the pacer
/// does when it writes chunks itself (hyper would choose it anyway for HTTP/1.1; this does not
/// leave that to its defaults). With `close` (`--close-after-stream`), llama.cpp's way: keep-alive
/// promised, the connection closed once the stream is written.
fn sse_response(
    events: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    chunked: bool,
    close: Option<ConnHandle>,
) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no");
    if chunked {
        response = response.header(header::TRANSFER_ENCODING, "chunked");
    }
    let body = match close {
        Some(conn) => {
            response = response
                .header(header::CONNECTION, "keep-alive")
                .header("keep-alive", "timeout=5, max=100");
            let closer = CloseWhenDone(conn);
            Body::from_stream(futures_util::StreamExt::map(events, move |e| {
                let _ = &closer;
                e
            }))
        }
        None => Body::from_stream(events),
    };
    response.body(body).expect("static headers are valid")
}

/// Closes its connection when the response body that holds it is dropped (hyper drops a body once
/// it has written all of it).
struct CloseWhenDone(ConnHandle);

impl Drop for CloseWhenDone {
    fn drop(&mut self) {
        self.0.close_after_response();
    }
}

pub async fn chat_completions(
    AxState(state): AxState<Arc<State>>,
    version: Version,
    headers: HeaderMap,
    conn: Option<Extension<ConnHandle>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let conn = conn.map(|c| c.0);
    handle(state, (version, headers), conn, body, Endpoint::Chat).await
}

pub async fn completions(
    AxState(state): AxState<Arc<State>>,
    version: Version,
    headers: HeaderMap,
    conn: Option<Extension<ConnHandle>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(
        state,
        (version, headers),
        conn.map(|c| c.0),
        body,
        Endpoint::Completions,
    )
    .await
}

/// Any path the server does not serve: 404 in OpenAI's error shape.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no route for '{}': this server serves /v1/chat/completions, /v1/completions, \
             /v1/models, /health and /metrics",
            uri.path()
        ),
        kind: "invalid_request_error",
        param: None,
    }
}

/// A served path with the wrong method: 405 in OpenAI's error shape.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not allowed on '{}'", uri.path()),
        kind: "invalid_request_error",
        param: None,
    }
}

/// Echoes the client's `x-request-id`, or gives the request a new one, on every response.
pub async fn request_id(req: HttpRequest, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&stream::new_id("req")).expect("hex is a valid header")
        });
    let mut response = next.run(req).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    response
}

/// Reads the request body whole, within `--body-limit` bytes and `--body-timeout-s`, before any
/// handler: a client that stops sending mid-body gets 408 instead of holding a task forever.
pub async fn read_body_in_time(
    AxState(state): AxState<Arc<State>>,
    req: HttpRequest,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.config.body_limit as usize;
    let wait = Duration::from_secs_f64(state.config.body_timeout_s);
    let read = http_body_util::Limited::new(body, limit).collect();
    let error = match tokio::time::timeout(wait, read).await {
        Ok(Ok(collected)) => {
            let req = HttpRequest::from_parts(parts, Body::from(collected.to_bytes()));
            return next.run(req).await;
        }
        Err(_) => ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("the request body did not arrive within {wait:?}"),
            kind: "invalid_request_error",
            param: None,
        },
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than the server's limit of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
        },
        Ok(Err(e)) => ApiError::bad_request(format!("reading the request body: {e}"), None),
    };
    state
        .metrics
        .requests_rejected
        .fetch_add(1, Ordering::Relaxed);
    error.into_response()
}

/// Prometheus text exposition of the server's metrics.
pub async fn metrics(AxState(state): AxState<Arc<State>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "tokenperf-mock"})
}

pub async fn models(AxState(state): AxState<Arc<State>>) -> Json<Value> {
    let names: Vec<String> = if state.config.model.is_empty() {
        vec!["mock".to_string()]
    } else {
        state.config.model.clone()
    };
    Json(json!({
        "object": "list",
        "data": names.iter().map(|m| model_object(m)).collect::<Vec<_>>()
    }))
}

/// `GET /v1/models/{id}` (the SDK's `models.retrieve`): any name when the server takes any name.
pub async fn model(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let served = &state.config.model;
    if served.is_empty() || served.contains(&id) {
        Ok(Json(model_object(&id)))
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model '{id}' does not exist"),
            kind: "invalid_request_error",
            param: Some("model".into()),
        })
    }
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
