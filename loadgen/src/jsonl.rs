//! JSONL inputs (traces, datasets) read a line at a time: the file is never held whole, a line past
//! a cap is refused, and every error names the file and the line.

use std::path::Path;

use anyhow::Context;
use tokenperf_core::lines::next_line;

/// Calls `each` with every non-blank line of `path` and a function naming it (`'path' line N`), in
/// order; `what` names the file in an error opening it (e.g. "the trace"). A line longer than
/// `max_line` bytes, or not UTF-8, is an error naming it.
pub fn for_each_line(
    path: &Path,
    what: &str,
    max_line: usize,
    mut each: impl FnMut(&str, &dyn Fn() -> String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading {what} '{}'", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut bytes = Vec::new();
    for number in 1.. {
        let at = || format!("'{}' line {number}", path.display());
        bytes.clear();
        let n = next_line(&mut reader, Some(&mut bytes), max_line)
            .with_context(|| format!("reading {what} {}", at()))?;
        if n == 0 {
            break;
        }
        let line = std::str::from_utf8(&bytes).with_context(|| format!("{}: not UTF-8", at()))?;
        if !line.trim().is_empty() {
            each(line, &at)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRLF ends and blank lines are fine, the last line needs no newline, and a line past the cap or
    /// not UTF-8 is an error naming it, after the lines before it were handed over.
    #[test]
    fn lines_are_read_one_at_a_time_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let lines = |max: usize| {
            let mut seen = Vec::new();
            let r = for_each_line(&p, "the test file", max, |l, at| {
                seen.push((l.trim_end().to_string(), at()));
                Ok(())
            });
            (seen, r.map_err(|e| format!("{e:#}")))
        };
        std::fs::write(&p, "{\"a\": 1}\r\n\r\n  \n{\"b\": 2}").unwrap();
        let (seen, r) = lines(64);
        r.unwrap();
        let at = |n: usize| format!("'{}' line {n}", p.display());
        assert_eq!(
            seen,
            vec![("{\"a\": 1}".into(), at(1)), ("{\"b\": 2}".into(), at(4))]
        );

        std::fs::write(&p, format!("{{}}\n\"{}\"\n{{}}\n", "x".repeat(200))).unwrap();
        let (seen, r) = lines(64);
        let err = r.unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("longer than 64 bytes"),
            "{err}"
        );
        assert_eq!(seen.len(), 1);
        assert_eq!(lines(1024).0.len(), 3);

        std::fs::write(&p, b"{}\n\xff\xfe\n").unwrap();
        let err = lines(64).1.unwrap_err();
        assert!(err.contains("line 2: not UTF-8"), "{err}");

        let err = format!(
            "{:#}",
            for_each_line(&dir.path().join("none"), "the trace", 64, |_, _| Ok(())).unwrap_err()
        );
        assert!(
            err.contains("reading the trace") && err.contains("none"),
            "{err}"
        );
    }
}
