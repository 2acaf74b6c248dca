//! HTTP/1.1 response framing for loadgen's client: the response head and the body's framing
//! (Content-Length, chunked, or to the connection's close), decoded in place from a read buffer.
//!
//! Our own decoder instead of hyper's client because a measured stream is read by its request's own
//! task: one wake-up and one read per arrival, no connection task, no channel per chunk and no
//! per-chunk allocation (hyper's dispatcher cost about a third of loadgen's user time per event;
//! BENCHMARKS.md, issue 17). The head is parsed by `httparse`, which hyper uses too.

use std::fmt;

/// Most headers a response head may have.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most trailer bytes after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Why a response could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("invalid response head: {0}")]
    Head(String),
    #[error("the response head has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("invalid Content-Length '{0}'")]
    ContentLength(String),
    #[error("invalid chunk size line '{0}'")]
    ChunkSize(String),
    #[error("a chunk's data is not followed by CRLF")]
    ChunkEnd,
    #[error("a chunk-size or trailer line is longer than {MAX_LINE_BYTES} bytes")]
    LongLine,
    #[error("the trailers are longer than {MAX_TRAILER_BYTES} bytes")]
    LongTrailers,
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    Close,
}

/// A parsed response head: what the client needs of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    pub framing: Framing,
    /// Whether the connection may carry another request after this response (no `Connection:
    /// close`, HTTP/1.0 only with keep-alive, and a body whose end is not the connection's).
    pub reusable: bool,
    pub location: Option<String>,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP/1.{} {} {:?}{}",
            self.minor_version,
            self.status,
            self.framing,
            if self.reusable { "" } else { " (closes)" }
        )
    }
}

/// Parses a response head at the start of `buf`: `None` until it is complete, else the head and
/// its length in bytes. Interim (1xx) responses are returned like any other; the caller skips them.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingError::TooManyHeaders),
        Err(e) => return Err(FramingError::Head(e.to_string())),
    };
    let status = r.code.unwrap_or(0);
    let minor_version = r.version.unwrap_or(1);
    let mut keep_alive = minor_version >= 1;
    let (mut chunked, mut has_te, mut length, mut location) = (false, false, None, None);
    for h in r.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding says whether the body is chunked.
            has_te = true;
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(&value)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::ContentLength(value.into_owned()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("location") {
            location = Some(value.into_owned());
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if has_te {
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3).
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        length.map_or(Framing::Close, Framing::Length)
    };
    // After a 101 the connection speaks another protocol.
    let reusable =
        keep_alive && framing != Framing::Close && !(has_te && length.is_some()) && status != 101;
    let head = Head {
        status,
        minor_version,
        framing,
        reusable,
        location,
    };
    Ok(Some((head, len)))
}

/// A Content-Length value: digits only (a list of equal values, as some proxies send, is one).
fn parse_length(v: &str) -> Result<u64, FramingError> {
    let bad = || FramingError::ContentLength(v.chars().take(40).collect());
    let mut out = None;
    for part in v.split(',').map(str::trim) {
        if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = part.parse().map_err(|_| bad())?;
        if out.is_some_and(|o| o != n) {
            return Err(bad());
        }
        out = Some(n);
    }
    out.ok_or_else(bad)
}

/// What the decoder found at the start of the unread bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes `skip..skip + len` of the buffer; consume `skip + len`.
    Data { skip: usize, len: usize },
    /// Consume `skip` bytes of framing, then read more.
    More { skip: usize },
    /// The body ended after `skip` more bytes of framing.
    End { skip: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers(usize),
    Close,
    Done,
}

/// The body's framing, decoded step by step over whatever bytes have arrived.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Self { state }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the connection's close is the body's proper end.
    pub fn ends_at_close(&self) -> bool {
        matches!(self.state, State::Close | State::Done)
    }

    /// Decodes from the unread bytes `buf`: the next piece of body data, a need for more bytes, or
    /// the body's end, with the framing bytes to consume on the way.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, FramingError> {
        let mut skip = 0;
        loop {
            let rest = &buf[skip..];
            match self.state {
                State::Done => return Ok(Decoded::End { skip }),
                State::Close if rest.is_empty() => return Ok(Decoded::More { skip }),
                State::Close => {
                    return Ok(Decoded::Data {
                        skip,
                        len: rest.len(),
                    });
                }
                State::Length(_) | State::ChunkData(_) if rest.is_empty() => {
                    return Ok(Decoded::More { skip });
                }
                State::Length(n) => {
                    let (len, left) = take(rest, n);
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Decoded::Data { skip, len });
                }
                State::ChunkData(n) => {
                    let (len, left) = take(rest, n);
                    self.state = match left {
                        0 => State::ChunkDataEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data { skip, len });
                }
                State::ChunkDataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        skip += 2;
                        self.state = State::ChunkSize;
                    }
                    [b'\n', ..] => {
                        skip += 1;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(Decoded::More { skip }),
                    _ => return Err(FramingError::ChunkEnd),
                },
                State::ChunkSize => {
                    let Some(line) = line(rest)? else {
                        return Ok(Decoded::More { skip });
                    };
                    skip += line.len();
                    let size = chunk_size(line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::Trailers(seen) => {
                    let Some(line) = line(rest)? else {
                        return Ok(Decoded::More { skip });
                    };
                    skip += line.len();
                    let seen = seen + line.len();
                    if seen > MAX_TRAILER_BYTES {
                        return Err(FramingError::LongTrailers);
                    }
                    self.state = if line == b"\r\n" || line == b"\n" {
                        State::Done
                    } else {
                        State::Trailers(seen)
                    };
                }
            }
        }
    }
}

/// Of `n` body bytes still due, how many `rest` holds, and how many are due after them.
fn take(rest: &[u8], n: u64) -> (usize, u64) {
    let len = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
    (len, n - len as u64)
}

/// The first line of `buf` with its line end, once it is complete.
fn line(buf: &[u8]) -> Result<Option<&[u8]>, FramingError> {
    match memchr::memchr(b'\n', buf) {
        Some(i) if i < MAX_LINE_BYTES => Ok(Some(&buf[..=i])),
        Some(_) => Err(FramingError::LongLine),
        None if buf.len() >= MAX_LINE_BYTES => Err(FramingError::LongLine),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let bad = || {
        FramingError::ChunkSize(
            String::from_utf8_lossy(line)
                .trim()
                .chars()
                .take(40)
                .collect(),
        )
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(bad());
    }
    let rest = &line[digits..];
    let ok_rest = rest
        .iter()
        .position(|&b| b == b';' || b == b'\r' || b == b'\n')
        .is_some_and(|i| rest[..i].iter().all(|&b| b == b' ' || b == b'\t'));
    if !ok_rest {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| bad())?;
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes (as reads would bring it); the body's bytes and
    /// whether it ended.
    fn decode_in_steps(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool), FramingError> {
        let mut d = Decoder::new(framing);
        let (mut buf, mut body, mut fed) = (Vec::new(), Vec::new(), 0);
        loop {
            match d.decode(&buf)? {
                Decoded::Data { skip, len } => {
                    body.extend_from_slice(&buf[skip..skip + len]);
                    buf.drain(..skip + len);
                }
                Decoded::End { skip } => {
                    buf.drain(..skip);
                    return Ok((body, true));
                }
                Decoded::More { skip } => {
                    buf.drain(..skip);
                    if fed == wire.len() {
                        return Ok((body, false));
                    }
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_the_reads_cut_them() {
        let wire = b"6\r\ndata: \r\n19;name=x\r\n{\"choices\":[]}\n\ndata: [DO\r\n3\r\nNE]\r\n0\r\nx-trailer: 1\r\n\r\n";
        let want = b"data: {\"choices\":[]}\n\ndata: [DONE]".to_vec();
        for step in 1..=wire.len() {
            assert_eq!(
                decode_in_steps(Framing::Chunked, wire, step),
                Ok((want.clone(), true)),
                "step {step}"
            );
        }
        // Bare LF line ends, as some servers send.
        assert_eq!(
            decode_in_steps(Framing::Chunked, b"2\nab\n0\n\n", 1),
            Ok((b"ab".to_vec(), true))
        );
    }

    #[test]
    fn a_body_cut_short_has_not_ended() {
        assert_eq!(
            decode_in_steps(Framing::Chunked, b"5\r\nab", 3),
            Ok((b"ab".to_vec(), false))
        );
        assert_eq!(
            decode_in_steps(Framing::Length(5), b"abc", 2),
            Ok((b"abc".to_vec(), false))
        );
        assert_eq!(
            decode_in_steps(Framing::Length(3), b"abc", 2),
            Ok((b"abc".to_vec(), true))
        );
        assert_eq!(
            decode_in_steps(Framing::Close, b"abc", 2),
            Ok((b"abc".to_vec(), false))
        );
        assert_eq!(decode_in_steps(Framing::Empty, b"", 2), Ok((vec![], true)));
    }

    #[test]
    fn bad_framing_is_an_error_not_a_hang() {
        let long = format!("1{}\r\n", " ".repeat(MAX_LINE_BYTES));
        for (wire, want) in [
            (&b"zz\r\n"[..], FramingError::ChunkSize("zz".into())),
            (b"\r\n", FramingError::ChunkSize(String::new())),
            (
                b"10000000000000000\r\n",
                FramingError::ChunkSize("10000000000000000".into()),
            ),
            (b"3 x\r\n", FramingError::ChunkSize("3 x".into())),
            (b"3\r\nabcX", FramingError::ChunkEnd),
            (long.as_bytes(), FramingError::LongLine),
        ] {
            assert_eq!(decode_in_steps(Framing::Chunked, wire, 7), Err(want));
        }
        let endless = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1));
        assert_eq!(
            decode_in_steps(Framing::Chunked, endless.as_bytes(), 100),
            Err(FramingError::LongTrailers)
        );
    }

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads_say_how_the_body_ends_and_whether_the_connection_stays() {
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
        );
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (200, Framing::Chunked, true)
        );
        let h =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 12\r\n\r\n");
        assert_eq!((h.framing, h.reusable), (Framing::Length(12), false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.reusable, "HTTP/1.0 closes unless it says keep-alive");
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n");
        assert!(h.reusable);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(
            (h.framing, h.reusable),
            (Framing::Chunked, false),
            "both: chunked wins, then close"
        );
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (100, Framing::Empty, true)
        );
        let h = head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.reusable, "a switched connection is not HTTP any more");
        let h = head(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://x/v1\r\nContent-Length: 0, 0\r\n\r\n",
        );
        assert_eq!(
            (h.location.as_deref(), h.framing),
            (Some("https://x/v1"), Framing::Length(0))
        );
    }

    #[test]
    fn incomplete_and_bad_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(parse_head(full).unwrap().unwrap().1, full.len() - 1);
        assert!(matches!(
            parse_head(b"garbage\r\n\r\n"),
            Err(FramingError::Head(_))
        ));
        for bad in ["-1", "1x", "", "1, 2", "99999999999999999999"] {
            let s = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(
                matches!(
                    parse_head(s.as_bytes()),
                    Err(FramingError::ContentLength(_))
                ),
                "{bad}"
            );
        }
        let two = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            parse_head(two.as_bytes()),
            Err(FramingError::ContentLength(_))
        ));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            parse_head(many.as_bytes()),
            Err(FramingError::TooManyHeaders)
        );
    }
}
