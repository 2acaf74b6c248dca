//! Fault injection, for testing clients (ours included): chosen per request by the `x-mock-fault` header
//! (deterministic, for tests) or at a seeded rate from a configured list.
//!
//! Syntax, in the header or `--fault`, several separated by `;`:
//! * `status=CODE`: answer CODE (429, 500, 503, 400 …) before streaming; 400 reads as a context-length
//!   error, as vLLM and llama.cpp send it;
//! * `error-after=K`: after K tokens, an `{"error": …}` event, then the stream closes without `[DONE]`;
//! * `drop-after=K`: after K tokens, the connection is cut;
//! * `malformed-after=K`: after K tokens, a chunk that is not valid JSON;
//! * `stall=SECS@K`: after K tokens, a pause of SECS seconds (later tokens shift by as much);
//! * `slow-first-byte=SECS`: the response head waits SECS seconds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest stall or slow first byte a fault may ask for: an hour is past any client's timeout, and
/// far from where `Duration` arithmetic overflows.
pub const MAX_FAULT_SECS: f64 = 3600.0;

/// Header that selects faults for one request.
pub const FAULT_HEADER: &str = "x-mock-fault";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Status(u16),
    ErrorAfter(u64),
    DropAfter(u64),
    MalformedAfter(u64),
    Stall { secs: f64, after: u64 },
    SlowFirstByte(f64),
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, v) = s.trim().split_once('=').ok_or_else(|| {
            format!("fault '{s}' is not of the form kind=value (e.g. status=503, drop-after=3)")
        })?;
        let int = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("fault '{s}': '{v}' is not a whole number"))
        };
        let secs = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && (0.0..=MAX_FAULT_SECS).contains(x))
                .ok_or_else(|| {
                    format!(
                        "fault '{s}': '{v}' is not a number of seconds from 0 to {MAX_FAULT_SECS}"
                    )
                })
        };
        Ok(match k.trim() {
            "status" => {
                let code = int(v)?;
                if !(400..=599).contains(&code) {
                    return Err(format!("fault '{s}': status must be 400–599"));
                }
                Fault::Status(code as u16)
            }
            "error-after" => Fault::ErrorAfter(int(v)?),
            "drop-after" => Fault::DropAfter(int(v)?),
            "malformed-after" => Fault::MalformedAfter(int(v)?),
            "stall" => {
                let (t, after) = v.split_once('@').ok_or_else(|| {
                    format!("fault '{s}': stall takes SECS@TOKENS, e.g. stall=2@5")
                })?;
                Fault::Stall {
                    secs: secs(t)?,
                    after: int(after)?,
                }
            }
            "slow-first-byte" => Fault::SlowFirstByte(secs(v)?),
            other => {
                return Err(format!(
                    "unknown fault kind '{other}': use status, error-after, drop-after, malformed-after, stall or slow-first-byte"
                ));
            }
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(c) => write!(f, "status={c}"),
            Fault::ErrorAfter(k) => write!(f, "error-after={k}"),
            Fault::DropAfter(k) => write!(f, "drop-after={k}"),
            Fault::MalformedAfter(k) => write!(f, "malformed-after={k}"),
            Fault::Stall { secs, after } => write!(f, "stall={secs}@{after}"),
            Fault::SlowFirstByte(s) => write!(f, "slow-first-byte={s}"),
        }
    }
}

impl Serialize for Fault {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a `;`-separated list of faults.
pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// The faults that apply to one request, resolved into what the response does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Plan {
    pub status: Option<u16>,
    pub error_after: Option<u64>,
    pub drop_after: Option<u64>,
    pub malformed_after: Option<u64>,
    pub stall: Option<(f64, u64)>,
    pub slow_first_byte: Option<f64>,
}

impl Plan {
    pub fn from_faults(faults: &[Fault]) -> Self {
        let mut p = Self::default();
        for f in faults {
            match *f {
                Fault::Status(c) => p.status = Some(c),
                Fault::ErrorAfter(k) => p.error_after = Some(k),
                Fault::DropAfter(k) => p.drop_after = Some(k),
                Fault::MalformedAfter(k) => p.malformed_after = Some(k),
                Fault::Stall { secs, after } => p.stall = Some((secs, after)),
                Fault::SlowFirstByte(s) => p.slow_first_byte = Some(s),
            }
        }
        p
    }

    /// The first mid-stream fault to strike once `emitted` tokens are out, if any.
    pub fn ends_stream_at(&self) -> Option<u64> {
        [self.error_after, self.drop_after, self.malformed_after]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_round_trips() {
        let list = parse_list(
            "status=503; error-after=5;drop-after=3;malformed-after=2;stall=1.5@4;slow-first-byte=0.25",
        )
        .unwrap();
        assert_eq!(list.len(), 6);
        for f in &list {
            assert_eq!(f.to_string().parse::<Fault>().unwrap(), *f);
        }
        let p = Plan::from_faults(&list);
        assert_eq!(p.status, Some(503));
        assert_eq!(p.stall, Some((1.5, 4)));
        assert_eq!(p.ends_stream_at(), Some(2));
    }

    #[test]
    fn bad_faults_say_what_is_wrong() {
        assert!(
            "status=200"
                .parse::<Fault>()
                .unwrap_err()
                .contains("400–599")
        );
        assert!(
            "stall=2"
                .parse::<Fault>()
                .unwrap_err()
                .contains("SECS@TOKENS")
        );
        for huge in [
            "slow-first-byte=1e300",
            "stall=1e300@1",
            "stall=-1@1",
            "slow-first-byte=inf",
        ] {
            let e = huge.parse::<Fault>().unwrap_err();
            assert!(e.contains("seconds from 0 to 3600"), "{huge}: {e}");
        }
        assert!(
            "explode=1"
                .parse::<Fault>()
                .unwrap_err()
                .contains("unknown fault kind")
        );
        assert!(
            "drop-after"
                .parse::<Fault>()
                .unwrap_err()
                .contains("kind=value")
        );
    }
}
