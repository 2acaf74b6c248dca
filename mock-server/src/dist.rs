//! Seeded distributions the mock samples from: output lengths, tokens per chunk, and timing jitter.
//!
//! Written as short strings on the command line and in config files:
//! * lengths and counts ([`Dist`]): `fixed:N`, `uniform:LO,HI`, `normal:MEAN,STD`,
//!   `lognormal:MEAN,STD`, `exponential:MEAN`;
//! * jitter ([`Jitter`]), a multiplicative factor with mean 1 applied to a base time: `none`,
//!   `normal:CV`, `lognormal:CV`, `exponential` (CV is the coefficient of variation, std / mean).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokenperf_core::rng::Rng;

/// A distribution of positive counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Fixed(u64),
    Uniform(u64, u64),
    Normal(f64, f64),
    LogNormal(f64, f64),
    Exponential(f64),
}

impl Dist {
    /// A sample, rounded, at least 1.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let v = match *self {
            Dist::Fixed(n) => return n.max(1),
            Dist::Uniform(lo, hi) => {
                let span = (hi - lo).saturating_add(1).min(usize::MAX as u64) as usize;
                return lo.saturating_add(rng.below(span) as u64);
            }
            Dist::Normal(m, s) => m + s * rng.normal(),
            Dist::LogNormal(m, s) => {
                // Parameters of the underlying normal that give this mean and standard deviation.
                let sigma2 = (1.0 + (s / m).powi(2)).ln();
                (m.ln() - sigma2 / 2.0 + sigma2.sqrt() * rng.normal()).exp()
            }
            Dist::Exponential(m) => rng.exponential(m),
        };
        v.round().max(1.0) as u64
    }
}

fn nums(s: &str, n: usize, what: &str) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .map_err(|_| format!("'{x}' is not a number in {what}"))
        })
        .collect::<Result<_, _>>()?;
    if v.len() != n {
        return Err(format!("{what} takes {n} number(s), got {}", v.len()));
    }
    if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(format!("{what} takes non-negative numbers"));
    }
    Ok(v)
}

impl FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, args) = s.split_once(':').unwrap_or((s, ""));
        let d = match kind {
            "fixed" => Dist::Fixed(nums(args, 1, "fixed:N")?[0] as u64),
            "uniform" => {
                let v = nums(args, 2, "uniform:LO,HI")?;
                if v[0] > v[1] {
                    return Err("uniform:LO,HI needs LO ≤ HI".into());
                }
                Dist::Uniform(v[0] as u64, v[1] as u64)
            }
            "normal" => {
                let v = nums(args, 2, "normal:MEAN,STD")?;
                Dist::Normal(v[0], v[1])
            }
            "lognormal" => {
                let v = nums(args, 2, "lognormal:MEAN,STD")?;
                if v[0] <= 0.0 {
                    return Err("lognormal:MEAN,STD needs MEAN > 0".into());
                }
                Dist::LogNormal(v[0], v[1])
            }
            "exponential" => Dist::Exponential(nums(args, 1, "exponential:MEAN")?[0]),
            _ => {
                // A bare number means fixed.
                if let Ok(n) = s.trim().parse::<u64>() {
                    return Ok(Dist::Fixed(n));
                }
                return Err(format!(
                    "'{s}' is not a distribution: use fixed:N, uniform:LO,HI, normal:MEAN,STD, \
                     lognormal:MEAN,STD or exponential:MEAN"
                ));
            }
        };
        Ok(d)
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Fixed(n) => write!(f, "fixed:{n}"),
            Dist::Uniform(a, b) => write!(f, "uniform:{a},{b}"),
            Dist::Normal(m, s) => write!(f, "normal:{m},{s}"),
            Dist::LogNormal(m, s) => write!(f, "lognormal:{m},{s}"),
            Dist::Exponential(m) => write!(f, "exponential:{m}"),
        }
    }
}

/// Multiplicative timing jitter with mean 1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    #[default]
    None,
    /// 1 + CV·z, clamped at 0.
    Normal(f64),
    /// Log-normal with mean 1 and the given CV (a right tail, like real servers).
    LogNormal(f64),
    /// Exponential with mean 1 (CV 1).
    Exponential,
}

impl Jitter {
    /// A factor to multiply a base time by.
    pub fn factor(&self, rng: &mut Rng) -> f64 {
        match *self {
            Jitter::None => 1.0,
            Jitter::Normal(cv) => (1.0 + cv * rng.normal()).max(0.0),
            Jitter::LogNormal(cv) => {
                let sigma2 = (1.0 + cv * cv).ln();
                (-sigma2 / 2.0 + sigma2.sqrt() * rng.normal()).exp()
            }
            Jitter::Exponential => rng.exponential(1.0),
        }
    }
}

impl FromStr for Jitter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, args) = s.split_once(':').unwrap_or((s, ""));
        Ok(match kind {
            "none" => Jitter::None,
            "normal" => Jitter::Normal(nums(args, 1, "normal:CV")?[0]),
            "lognormal" => Jitter::LogNormal(nums(args, 1, "lognormal:CV")?[0]),
            "exponential" => Jitter::Exponential,
            _ => {
                return Err(format!(
                    "'{s}' is not a jitter: use none, normal:CV, lognormal:CV or exponential"
                ));
            }
        })
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Jitter::None => write!(f, "none"),
            Jitter::Normal(cv) => write!(f, "normal:{cv}"),
            Jitter::LogNormal(cv) => write!(f, "lognormal:{cv}"),
            Jitter::Exponential => write!(f, "exponential"),
        }
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Dist);
serde_via_str!(Jitter);

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_of(d: &Dist, n: usize) -> f64 {
        let mut rng = Rng::new(3);
        (0..n).map(|_| d.sample(&mut rng) as f64).sum::<f64>() / n as f64
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "fixed:7",
            "uniform:1,4",
            "normal:100,20",
            "lognormal:50,10",
            "exponential:30",
        ] {
            let d: Dist = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("12".parse::<Dist>().unwrap(), Dist::Fixed(12));
        for s in ["none", "normal:0.1", "lognormal:0.5", "exponential"] {
            assert_eq!(s.parse::<Jitter>().unwrap().to_string(), s);
        }
        assert!("gauss:1".parse::<Dist>().unwrap_err().contains("fixed:N"));
        assert!("uniform:5,1".parse::<Dist>().is_err());
        assert!("normal:1".parse::<Dist>().is_err());
        assert!("wobbly".parse::<Jitter>().is_err());
    }

    #[test]
    fn samples_have_the_stated_means() {
        assert!((mean_of(&Dist::Normal(100.0, 10.0), 20_000) - 100.0).abs() < 1.0);
        assert!((mean_of(&Dist::LogNormal(100.0, 30.0), 20_000) - 100.0).abs() < 2.0);
        assert!((mean_of(&Dist::Exponential(50.0), 20_000) - 50.0).abs() < 2.0);
        assert!((mean_of(&Dist::Uniform(1, 4), 20_000) - 2.5).abs() < 0.05);
        let mut rng = Rng::new(1);
        for j in [
            Jitter::Normal(0.2),
            Jitter::LogNormal(0.5),
            Jitter::Exponential,
        ] {
            let m = (0..20_000).map(|_| j.factor(&mut rng)).sum::<f64>() / 20_000.0;
            assert!((m - 1.0).abs() < 0.03, "{j}: {m}");
        }
        assert_eq!(Jitter::None.factor(&mut rng), 1.0);
    }
}
