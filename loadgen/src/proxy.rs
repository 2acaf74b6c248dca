//! `--proxy`: reaching the server through an HTTP proxy, each connection a `CONNECT` tunnel.
//!
//! A tunnel rather than requests in absolute form, for https:// and http:// alike: the proxy then
//! passes bytes and nothing else, so a response is read, framed and timed as on a direct
//! connection, and a reused connection is still a connection to the server. The proxy is never
//! taken from `HTTPS_PROXY` and the like: its hop is in every time measured, so it is used only
//! when asked for.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a proxy's answer to `CONNECT` may hold before its blank line.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// An HTTP proxy: where to connect, and the credentials to send it.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` to connect to.
    pub addr: String,
    /// `Proxy-Authorization` for credentials in the URL (`Basic …`).
    auth: Option<String>,
    /// The URL as given, credentials and all, for reqwest (the model listing).
    url: String,
}

impl std::fmt::Debug for Proxy {
    /// Without the credentials, which end up in logs otherwise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Proxy({}{})",
            self.addr,
            if self.auth.is_some() {
                ", with credentials"
            } else {
                ""
            }
        )
    }
}

/// A plan records where its proxy was (its hop is in every time), never its credentials.
impl serde::Serialize for Proxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("http://{}", self.addr))
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port]` (port 80 when missing). Credentials are
    /// percent-decoded, as in any URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("'{}' is not a URL: {e}", shown(url)))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "'{}': a proxy reached over TLS is not supported; use its http:// address \
                     (the tunnel to an https:// server is TLS end to end either way)",
                    shown(url)
                ));
            }
            _ => return Err(format!("'{}' must start with http://", shown(url))),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("'{}': a proxy URL has no path", shown(url)));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{}' has no host", shown(url)))?;
        let auth = match authority.as_str().rsplit_once('@') {
            None => None,
            Some((userinfo, _)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| format!("'{}': its credentials are not UTF-8", shown(url)))
                };
                let pair = format!("{}:{}", decode(user)?, decode(password)?);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        };
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            addr: format!("{}:{port}", authority.host()),
            auth,
            url: url.to_string(),
        })
    }

    /// The same proxy for a reqwest client (which forwards plain http:// requests in absolute
    /// form rather than through a tunnel: for the unmeasured model listing only).
    pub fn for_reqwest(&self) -> reqwest::Result<reqwest::Proxy> {
        reqwest::Proxy::all(&self.url)
    }

    /// Asks the proxy, over `tcp`, for a tunnel to `target` (`host:port`). On `Ok` the connection
    /// carries the target's bytes from its next one.
    pub async fn tunnel(&self, tcp: &mut TcpStream, target: &str) -> Result<(), String> {
        let mut ask = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n");
        if let Some(auth) = &self.auth {
            ask.push_str(&format!("proxy-authorization: {auth}\r\n"));
        }
        ask.push_str("\r\n");
        let failed = |what: String| format!("proxy {}: CONNECT {target}: {what}", self.addr);
        tcp.write_all(ask.as_bytes())
            .await
            .map_err(|e| failed(crate::http::error_chain(&e)))?;
        let answer = read_answer(tcp).await.map_err(failed)?;
        match crate::h1::parse_head(&answer) {
            // Nothing may follow the answer yet: neither HTTP nor TLS lets a server speak first,
            // so bytes already waiting are the proxy's, and would pass for the server's answer.
            Ok(Some((head, _))) if (200..300).contains(&head.status) => {
                match tcp.try_read(&mut [0]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                    Ok(0) => Err(failed("the proxy closed the tunnel at once".into())),
                    Ok(_) => Err(failed("the proxy sent bytes after its answer".into())),
                    Err(e) => Err(failed(crate::http::error_chain(&e))),
                }
            }
            Ok(Some((head, _))) => Err(failed(status_line(&answer, head.status))),
            Ok(None) => Err(failed("its answer did not end".into())),
            Err(e) => Err(failed(format!("its answer is not HTTP: {e}"))),
        }
    }
}

/// The proxy's answer up to and including its blank line, read a byte at a time so that nothing
/// of the tunnel after it is taken (a proxy answers once per connection, so this is not a hot
/// path).
async fn read_answer(tcp: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut answer = Vec::with_capacity(256);
    while !answer.ends_with(b"\r\n\r\n") && !answer.ends_with(b"\n\n") {
        if answer.len() >= MAX_ANSWER_BYTES {
            return Err(format!("its answer is over {MAX_ANSWER_BYTES} bytes"));
        }
        match tcp.read_u8().await {
            Ok(b) => answer.push(b),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(if answer.is_empty() {
                    "the proxy closed the connection without answering".into()
                } else {
                    "the proxy closed the connection in its answer".into()
                });
            }
            Err(e) => return Err(crate::http::error_chain(&e)),
        }
    }
    Ok(answer)
}

/// The answer's status line, as the proxy wrote it (e.g. `407 Proxy Authentication Required`).
fn status_line(answer: &[u8], status: u16) -> String {
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let reason = line.trim_end().splitn(3, ' ').nth(2).unwrap_or("").trim();
    format!("the proxy answered {status} {reason}")
        .trim_end()
        .to_string()
}

/// `url` without the credentials in it, for messages.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://proxy.corp:3128").unwrap();
        assert_eq!((p.addr.as_str(), p.auth), ("proxy.corp:3128", None));
        assert_eq!(
            Proxy::parse("http://10.0.0.1/").unwrap().addr,
            "10.0.0.1:80"
        );
        assert_eq!(
            Proxy::parse("http://[::1]:8080").unwrap().addr,
            "[::1]:8080"
        );
        let p = Proxy::parse("http://alice:p%40ss%3Aw@proxy:3128").unwrap();
        // base64("alice:p@ss:w")
        assert_eq!(p.auth.as_deref(), Some("Basic YWxpY2U6cEBzczp3"));
        assert_eq!(p.addr, "proxy:3128");
        assert!(!format!("{p:?}").contains("YWxp"), "{p:?}");
        for (bad, says) in [
            ("https://proxy:3128", "over TLS"),
            ("socks5://proxy:1080", "http://"),
            ("http://proxy:3128/path", "no path"),
            ("proxy:3128", "http://"),
            ("http://alice:secret@", "secret"),
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            if says == "secret" {
                assert!(!e.contains("secret"), "{e}");
            } else {
                assert!(e.contains(says), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn status_lines_are_shown_as_the_proxy_wrote_them() {
        let a = b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n";
        assert_eq!(
            status_line(a, 407),
            "the proxy answered 407 Proxy Authentication Required"
        );
        assert_eq!(
            status_line(b"HTTP/1.1 502\r\n\r\n", 502),
            "the proxy answered 502"
        );
    }
}
