//! Incremental Server-Sent Events parser: bytes in, complete `data` payloads out.
//!
//! Handles what real servers send: LF, CRLF or CR line endings, `:` comment lines (keep-alive pings),
//! `event:`/`id:`/`retry:` fields (ignored), `data:` with or without the space, several events in one
//! read, and one event split across reads. Multi-line data is joined with `\n` as the SSE spec says.
//! Allocation-free per event in the common case (one `data:` line per event).

/// Feeds bytes and hands each complete event's data to a callback.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Data of the event being assembled, when it has more than one `data:` line.
    data: Vec<u8>,
    /// Whether the event being assembled has any `data:` line.
    has_data: bool,
    /// The last byte seen was a CR, so a following LF belongs to the same line ending.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and calls `on_event` with the data of every event completed by them.
    pub fn feed(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        if self.buf.is_empty() {
            // Fast path: parse straight from the caller's bytes, keep only the unfinished tail.
            let used = self.lines(bytes, on_event);
            self.buf.extend_from_slice(&bytes[used..]);
        } else {
            self.buf.extend_from_slice(bytes);
            let buf = std::mem::take(&mut self.buf);
            let used = self.lines(&buf, on_event);
            self.buf = buf;
            self.buf.drain(..used);
        }
    }

    /// Ends the stream: an event left without its blank line is still delivered (lenient).
    pub fn finish(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.line(&buf, on_event);
        }
        self.dispatch(on_event);
    }

    /// Processes complete lines of `input`; returns how many bytes were consumed.
    fn lines(&mut self, input: &[u8], on_event: &mut impl FnMut(&[u8])) -> usize {
        let mut start = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if b == b'\n' || b == b'\r' {
                self.line(&input[start..i], on_event);
                i += 1;
                if b == b'\r' {
                    if i == input.len() {
                        self.after_cr = true;
                    } else if input[i] == b'\n' {
                        i += 1;
                    }
                }
                start = i;
            } else {
                i += 1;
            }
        }
        start
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return; // comment / ping
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if self.has_data {
            on_event(&self.data);
            self.data.clear();
            self.has_data = false;
        }
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
            p.feed(&rest[..n], &mut cb);
            rest = &rest[n..];
            k += 1;
        }
        p.finish(&mut cb);
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
}
