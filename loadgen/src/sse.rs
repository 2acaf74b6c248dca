//! Incremental Server-Sent Events parser: bytes in, complete `data` payloads out.
//!
//! Handles what real servers send: LF, CRLF or CR line endings, `:` comment lines (keep-alive pings),
//! `event:`/`id:`/`retry:` fields (ignored), `data:` with or without the space, several events in one
//! read, and one event split across reads. Multi-line data is joined with `\n` as the SSE spec says.
//! Allocation-free per event in the common case (one `data:` line per event).

/// A line (or the data of one event) longer than the parser's cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE line or event passed {limit} bytes without ending (--max-sse-line-bytes)")]
pub struct LineTooLong {
    pub limit: usize,
}

/// Feeds bytes and hands each complete event's data to a callback. Every byte is scanned once
/// (a line split over many reads is not rescanned), and no line or event may pass `max_line` bytes,
/// so a peer that never sends a newline costs bounded memory.
#[derive(Debug)]
pub struct SseParser {
    /// The unfinished line carried over from earlier reads (it has no line ending yet).
    buf: Vec<u8>,
    /// Data of the event being assembled, when it has more than one `data:` line.
    data: Vec<u8>,
    /// Whether the event being assembled has any `data:` line.
    has_data: bool,
    /// The last byte seen was a CR, so a following LF belongs to the same line ending.
    after_cr: bool,
    max_line: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Default cap on one line or event: far above any real chunk (logprobs included).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

impl SseParser {
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_LINE)
    }

    /// A parser that refuses lines and events longer than `max_line` bytes.
    pub fn with_limit(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            max_line: max_line.max(1),
        }
    }

    /// Appends `bytes` and calls `on_event` with the data of every event completed by them.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        on_event: &mut impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        if !self.buf.is_empty() {
            // Only the new bytes are scanned for the end of the carried-over line.
            let Some(k) = memchr::memchr2(b'\n', b'\r', bytes) else {
                self.buf.extend_from_slice(bytes);
                return self.check(self.buf.len());
            };
            self.buf.extend_from_slice(&bytes[..k]);
            self.check(self.buf.len())?;
            let line = std::mem::take(&mut self.buf);
            self.line(&line, on_event)?;
            self.buf = line;
            self.buf.clear();
            bytes = &bytes[self.past_line_end(bytes, k)..];
        }
        let used = self.lines(bytes, on_event)?;
        self.buf.extend_from_slice(&bytes[used..]);
        self.check(self.buf.len())
    }

    fn check(&self, len: usize) -> Result<(), LineTooLong> {
        if len > self.max_line {
            Err(LineTooLong {
                limit: self.max_line,
            })
        } else {
            Ok(())
        }
    }

    /// Ends the stream: an event left without its blank line is still delivered (lenient).
    pub fn finish(&mut self, on_event: &mut impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.line(&buf, on_event)?;
        }
        self.dispatch(on_event);
        Ok(())
    }

    /// Processes complete lines of `input`; returns how many bytes were consumed.
    fn lines(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(&[u8]),
    ) -> Result<usize, LineTooLong> {
        let mut start = 0;
        // The value of an event's only data line so far, still in `input`: an event of one data
        // line that ends in the same read (nearly every event) is handed out from the read itself,
        // not copied into `data` first, which for a thousand streams meant a write to a cold
        // buffer per event.
        let mut lone: Option<std::ops::Range<usize>> = None;
        // Line ends found a vector at a time: this scan runs over every byte of every stream.
        while let Some(k) = memchr::memchr2(b'\n', b'\r', &input[start..]) {
            let end = start + k;
            self.check(k)?;
            let line = &input[start..end];
            if line.is_empty()
                && let Some(value) = lone.take()
            {
                on_event(&input[value]);
            } else if let Some(value) = data_value(line)
                && lone.is_none()
                && !self.has_data
            {
                let at = start + (line.len() - value.len());
                lone = Some(at..end);
            } else {
                if let Some(value) = lone.take() {
                    self.keep(&input[value]);
                }
                self.line(line, on_event)?;
            }
            start = self.past_line_end(input, end);
        }
        if let Some(value) = lone {
            self.keep(&input[value]);
        }
        Ok(start)
    }

    /// Takes a lone data line's value into `data`: the event goes on past this read, or has
    /// more lines.
    fn keep(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    /// Where the line ending at `input[end]` (a CR or an LF) is over: past a CRLF pair, and past
    /// a CR that ends the read, whose LF (if any) the next read then skips.
    fn past_line_end(&mut self, input: &[u8], end: usize) -> usize {
        let next = end + 1;
        if input[end] != b'\r' {
            return next;
        }
        match input.get(next) {
            None => {
                self.after_cr = true;
                next
            }
            Some(b'\n') => next + 1,
            Some(_) => next,
        }
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment / ping
        }
        if let Some(value) = data_value(line) {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
            self.check(self.data.len())?;
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if self.has_data {
            on_event(&self.data);
            self.data.clear();
            self.has_data = false;
        }
    }
}

/// The value of a `data` line (`data` alone is an empty value); `None` for any other line.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"data")?;
    match rest.first() {
        None => Some(rest),
        Some(b':') => Some(rest[1..].strip_prefix(b" ").unwrap_or(&rest[1..])),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], sizes: &[usize]) -> Vec<String> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut cb = |d: &[u8]| out.push(String::from_utf8_lossy(d).into_owned());
        let mut rest = input;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].min(rest.len()).max(1);
            p.feed(&rest[..n], &mut cb).unwrap();
            rest = &rest[n..];
            k += 1;
        }
        p.finish(&mut cb).unwrap();
        out
    }

    #[test]
    fn every_framing_and_split_gives_the_same_events() {
        let lf = b"data: {\"a\":1}\n\n: ping\n\nevent: x\ndata:{\"b\":2}\n\ndata: [DONE]\n\n";
        let crlf = b"data: {\"a\":1}\r\n\r\n: ping\r\n\r\nevent: x\r\ndata:{\"b\":2}\r\n\r\ndata: [DONE]\r\n\r\n";
        let cr = b"data: {\"a\":1}\r\r: ping\r\revent: x\rdata:{\"b\":2}\r\rdata: [DONE]\r\r";
        let want = vec!["{\"a\":1}", "{\"b\":2}", "[DONE]"];
        for input in [&lf[..], &crlf[..], &cr[..]] {
            for sizes in [&[1000][..], &[1], &[2], &[3, 7], &[13, 1, 5]] {
                assert_eq!(parse_in_pieces(input, sizes), want, "sizes {sizes:?}");
            }
        }
    }

    #[test]
    fn multi_line_data_and_missing_final_blank_line() {
        assert_eq!(
            parse_in_pieces(b"data: a\ndata: b\n\ndata: tail", &[4]),
            vec!["a\nb", "tail"]
        );
        assert!(parse_in_pieces(b": only a comment\n\n", &[100]).is_empty());
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_cap_and_scanned_once() {
        let mut p = SseParser::with_limit(1000);
        let mut n = 0;
        let mut cb = |_: &[u8]| n += 1;
        p.feed(b"data: ", &mut cb).unwrap();
        let piece = [b'x'; 100];
        for _ in 0..9 {
            p.feed(&piece, &mut cb).unwrap();
        }
        assert_eq!(
            p.feed(&piece, &mut cb),
            Err(LineTooLong { limit: 1000 }),
            "the 11th piece passes the cap"
        );
        // Multi-line data counts toward the cap too.
        let mut p = SseParser::with_limit(10);
        let r = p.feed(b"data: 123456\ndata: 123456\n", &mut |_| {});
        assert!(r.is_err());
        // A long line fed one byte at a time: each read scans only its own byte (the carried-over
        // line is never rescanned, which made this 2·10^10 comparisons before).
        let mut p = SseParser::with_limit(1 << 20);
        p.feed(b"data: ", &mut |_| {}).unwrap();
        for _ in 0..200_000 {
            p.feed(b"y", &mut |_| {}).unwrap();
        }
        let mut got = 0;
        p.feed(b"\n\n", &mut |d| got = d.len()).unwrap();
        assert_eq!(got, 200_000);
    }

    /// The events of `input` read the plain way, straight from the spec: whole input, lines split
    /// on CRLF, LF or CR, fields split at the first colon.
    fn reference(input: &[u8]) -> Vec<String> {
        let text = String::from_utf8(input.to_vec()).unwrap();
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let (mut out, mut data, mut has) = (Vec::new(), String::new(), false);
        for line in text.split('\n') {
            if line.is_empty() {
                if has {
                    out.push(std::mem::take(&mut data));
                }
                has = false;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            if field == "data" {
                if has {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
                has = true;
            }
        }
        if has {
            out.push(data);
        }
        out
    }

    /// Events of one data line (handed out from the read itself), of several, of none, with
    /// comments and other fields between, in every framing, read in random pieces: the same
    /// events as the plain reading.
    #[test]
    fn random_streams_in_random_pieces_give_the_plain_reading() {
        let lines = [
            "data: {\"a\":1}",
            "data:{\"b\":2}",
            "data",
            "data:",
            "data:  two spaces",
            ": ping",
            "event: delta",
            "id: 7",
            "datum: not data",
            "retry: 10",
            "",
            "",
        ];
        let mut rng = tokenperf_core::rng::Rng::new(17);
        for case in 0..400 {
            let ending = ["\n", "\r\n", "\r"][case % 3];
            let mut input = String::new();
            for _ in 0..rng.below(30) {
                input.push_str(lines[rng.below(lines.len())]);
                input.push_str(ending);
            }
            let want = reference(input.as_bytes());
            let sizes: Vec<usize> = (0..4).map(|_| 1 + rng.below(40)).collect();
            assert_eq!(
                parse_in_pieces(input.as_bytes(), &sizes),
                want,
                "{input:?} in pieces of {sizes:?}"
            );
            assert_eq!(parse_in_pieces(input.as_bytes(), &[1 << 20]), want);
        }
    }
}
