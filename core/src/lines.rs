//! Line-at-a-time reading of JSONL files with a cap on what one line may hold, for analyze's record
//! reader and loadgen's trace reader: a file is never read whole, and an endless line is refused at
//! the cap instead of growing a buffer to the file's size.

use std::io::BufRead;

/// Longest line read as one record or trace entry: a longer one is refused, not held whole in
/// memory. A record loadgen writes under its default `--max-response-bytes` (256 MiB of stream, at
/// most a few hundred MB of record) stays under it.
pub const MAX_LINE_BYTES: usize = 1 << 30;

/// Reads one line (up to and with its `\n`, or to the end): into `keep` if given, where a line of
/// more than `cap` bytes is refused instead of growing `keep` to the whole file; else skipped
/// without keeping anything. The bytes read, 0 at the end.
pub fn next_line(
    r: &mut impl BufRead,
    mut keep: Option<&mut Vec<u8>>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut n = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        let end = buf.iter().position(|b| *b == b'\n').map(|i| i + 1);
        let take = end.unwrap_or(buf.len());
        if let Some(line) = keep.as_deref_mut() {
            if line.len() + take > cap {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    if cap >= 1 << 20 {
                        format!("a line longer than {} MiB", cap >> 20)
                    } else {
                        format!("a line longer than {cap} bytes")
                    },
                ));
            }
            line.extend_from_slice(&buf[..take]);
        }
        r.consume(take);
        n += take;
        if end.is_some() {
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    /// Lines are read whole up to the cap, across buffer refills; a longer one is refused after
    /// reading no more than the cap, and a line without a newline at the end is returned as it is.
    #[test]
    fn lines_are_capped_and_skipped_without_being_kept() {
        let text = format!(
            "{}\n{}\nshort\n{}",
            "a".repeat(40),
            "b".repeat(100),
            "c".repeat(7)
        );
        // A 16-byte buffer, so lines span refills.
        let mut r = BufReader::with_capacity(16, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(next_line(&mut r, Some(&mut line), 64).unwrap(), 41);
        assert_eq!(line.len(), 41);
        line.clear();
        let e = next_line(&mut r, Some(&mut line), 64).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(line.len() <= 64, "held {} bytes", line.len());

        let mut r = BufReader::with_capacity(16, text.as_bytes());
        assert_eq!(next_line(&mut r, None, 64).unwrap(), 41);
        assert_eq!(next_line(&mut r, None, 64).unwrap(), 101);
        line.clear();
        assert_eq!(next_line(&mut r, Some(&mut line), 64).unwrap(), 6);
        line.clear();
        assert_eq!(next_line(&mut r, Some(&mut line), 64).unwrap(), 7);
        assert_eq!(line, b"ccccccc");
        assert_eq!(next_line(&mut r, Some(&mut line), 64).unwrap(), 0);
        assert_eq!(next_line(&mut r, None, 64).unwrap(), 0);
    }
}
