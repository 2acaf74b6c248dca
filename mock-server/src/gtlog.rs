//! The ground-truth log: one JSON line per request with every chunk's due time, actual send time and
//! token count, written by a dedicated task so that file I/O never sits on a stream's path.

use std::path::Path;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Line(String),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task.
pub struct GroundTruthLog {
    tx: mpsc::UnboundedSender<Msg>,
}

impl GroundTruthLog {
    /// Creates (truncates) the file now, so a bad path fails at start-up.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the ground-truth log '{}'", path.display()))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let shown = path.display().to_string();
        tokio::spawn(async move {
            let mut w = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
            while let Some(m) = rx.recv().await {
                let r = match m {
                    Msg::Line(l) => w.write_all(l.as_bytes()).await,
                    Msg::Flush(done) => {
                        let r = w.flush().await;
                        let _ = done.send(());
                        r
                    }
                };
                if let Err(e) = r {
                    eprintln!("mock-server: writing the ground-truth log '{shown}': {e}");
                    return;
                }
                // Flush whenever the queue is drained, so the file is current between bursts.
                if rx.is_empty() && w.flush().await.is_err() {
                    return;
                }
            }
            let _ = w.flush().await;
        });
        Ok(Self { tx })
    }

    /// Queues a line (a trailing newline is added).
    pub fn send(&self, mut line: String) {
        line.push('\n');
        let _ = self.tx.send(Msg::Line(line));
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
