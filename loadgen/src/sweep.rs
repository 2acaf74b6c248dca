//! Sweeps: the same benchmark at several loads, to find where a server saturates. Each point is a full
//! run with its own files in a numbered subfolder of `--results-dir` (`01-concurrency-1`, …), and the
//! sweep writes `sweep_summary.json` (one row per point) and prints a table. The sweep stops early when
//! a point passes a stated limit (`--sweep-stop error_rate=0.1,ttft_p99=2,e2e_p99=30`).
//!
//! `--sweep auto` measures the synchronous rate (one request at a time) and the saturated throughput
//! (many streams at once), then runs `--sweep-points` open-loop rates spread evenly between them.

use std::str::FromStr;

use serde::Serialize;
use serde_json::json;
use tokenperf_core::slo::Goodput;

use crate::arrival::Arrival;
use crate::cli::{Load, Plan};
use crate::{Control, Exit, RunOutput, run_plan};

/// What a sweep varies.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepSpec {
    Concurrency(Vec<u64>),
    Rate(Vec<f64>),
    Auto,
}

impl FromStr for SweepSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "auto" {
            return Ok(SweepSpec::Auto);
        }
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not concurrency=1,2,4 / rate=1,2,4 / auto"))?;
        let nums: Vec<f64> = v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| format!("'{x}' is not a positive number"))
            })
            .collect::<Result<_, _>>()?;
        if nums.is_empty() {
            return Err("a sweep needs at least one point".into());
        }
        match k.trim() {
            "concurrency" => {
                if nums.iter().any(|n| n.fract() != 0.0) {
                    return Err("concurrency points must be whole numbers".into());
                }
                Ok(SweepSpec::Concurrency(
                    nums.iter().map(|n| *n as u64).collect(),
                ))
            }
            "rate" => Ok(SweepSpec::Rate(nums)),
            other => Err(format!(
                "unknown sweep '{other}': use concurrency, rate or auto"
            )),
        }
    }
}

/// Limits that end a sweep early.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SweepStop {
    pub error_rate: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
}

impl FromStr for SweepStop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut stop = SweepStop::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not name=value"))?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("'{part}': not a non-negative number"))?;
            match k.trim() {
                "error_rate" => stop.error_rate = Some(v),
                "ttft_p99" => stop.ttft_p99_s = Some(v),
                "e2e_p99" => stop.e2e_p99_s = Some(v),
                other => {
                    return Err(format!(
                        "unknown limit '{other}': use error_rate, ttft_p99 or e2e_p99"
                    ));
                }
            }
        }
        Ok(stop)
    }
}

impl SweepStop {
    /// The limit a point passed, if any.
    fn passed(&self, out: &RunOutput) -> Option<String> {
        let s = &out.summary;
        if let Some(l) = self.error_rate
            && s.error_rate > l
        {
            return Some(format!("error rate {:.3} > {l}", s.error_rate));
        }
        if let (Some(l), Some(v)) = (self.ttft_p99_s, s.ttft_s.p99)
            && v > l
        {
            return Some(format!("TTFT p99 {v:.3} s > {l} s"));
        }
        if let (Some(l), Some(v)) = (self.e2e_p99_s, s.end_to_end_latency_s.p99)
            && v > l
        {
            return Some(format!("e2e p99 {v:.3} s > {l} s"));
        }
        None
    }
}

/// One row of the sweep summary.
#[derive(Debug, Clone, Serialize)]
pub struct PointRow {
    pub point: String,
    pub load: Load,
    pub requests: u64,
    pub error_rate: f64,
    pub output_tokens_per_s: Option<f64>,
    pub requests_per_min: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub tpot_p50_s: Option<f64>,
    pub tpot_p99_s: Option<f64>,
    pub e2e_p50_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    pub goodput: Option<Goodput>,
}

impl PointRow {
    fn new(point: String, load: Load, out: &RunOutput) -> Self {
        let s = &out.summary;
        Self {
            point,
            load,
            requests: s.num_requests_started,
            error_rate: s.error_rate,
            output_tokens_per_s: s.mean_output_throughput_token_per_s,
            requests_per_min: s.num_completed_requests_per_min,
            ttft_p50_s: s.ttft_s.p50,
            ttft_p99_s: s.ttft_s.p99,
            tpot_p50_s: s.tpot_s.p50,
            tpot_p99_s: s.tpot_s.p99,
            e2e_p50_s: s.end_to_end_latency_s.p50,
            e2e_p99_s: s.end_to_end_latency_s.p99,
            goodput: out.goodput,
        }
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Serialize)]
pub struct SweepResult {
    pub rows: Vec<PointRow>,
    /// Why it stopped early, if it did.
    pub stopped: Option<String>,
}

impl SweepResult {
    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.1}", x * 1e3));
        let mut s = format!(
            "{:<18} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "point",
            "requests",
            "errors",
            "tok/s",
            "TTFT p50",
            "TTFT p99",
            "TPOT p50",
            "e2e p50",
            "e2e p99"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:<18} {:>8} {:>6.1}% {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                r.point,
                r.requests,
                r.error_rate * 100.0,
                r.output_tokens_per_s
                    .map_or("n/a".into(), |v| format!("{v:.1}")),
                ms(r.ttft_p50_s),
                ms(r.ttft_p99_s),
                ms(r.tpot_p50_s),
                ms(r.e2e_p50_s),
                ms(r.e2e_p99_s),
            ));
        }
        s.push_str("(latencies in ms)\n");
        if let Some(why) = &self.stopped {
            s.push_str(&format!("sweep stopped early: {why}\n"));
        }
        s
    }
}

fn point_plan(base: &Plan, index: usize, name: &str, load: Load) -> Plan {
    let mut p = base.clone();
    p.load = load;
    p.results_dir = base
        .results_dir
        .as_ref()
        .map(|d| d.join(format!("{:02}-{name}", index + 1)));
    p.sweep = None;
    p.quiet = true;
    p
}

/// A sweep under way: its points so far, why it stopped, and the worst exit code of its points.
struct Sweep<'a> {
    plan: &'a Plan,
    spec: SweepSpec,
    stop: SweepStop,
    control: Control,
    rows: Vec<PointRow>,
    stopped: Option<String>,
    exit: Exit,
}

/// Which of two exit codes a sweep reports: an interrupt first, then the most serious failure.
fn worse(a: Exit, b: Exit) -> Exit {
    let rank = |e: Exit| match e {
        Exit::Ok => 0,
        Exit::ErrorRate => 1,
        Exit::NoSuccess => 2,
        Exit::Fatal => 3,
        Exit::Interrupted => 4,
    };
    if rank(b) > rank(a) { b } else { a }
}

impl Sweep<'_> {
    /// Runs one point, records it, and rewrites `sweep_summary.json`. Returns the point's completed
    /// requests per second, or `None` when the sweep must end here (a limit passed, a signal, a
    /// point that failed).
    async fn point(&mut self, name: String, load: Load) -> anyhow::Result<Option<f64>> {
        let out = Box::pin(run_plan(
            point_plan(self.plan, self.rows.len(), &name, load.clone()),
            self.control.clone(),
        ))
        .await?;
        self.exit = worse(self.exit, out.exit);
        let rate = out.summary.num_completed_requests_per_min.unwrap_or(0.0) / 60.0;
        self.rows.push(PointRow::new(name, load, &out));
        if let Some(why) = self.stop.passed(&out) {
            self.stopped = Some(why);
        } else if self.control.is_stopped() {
            self.stopped = Some("interrupted".into());
        } else if let Some(e) = &out.file_error {
            self.stopped = Some(format!("{e:#}"));
        }
        self.write_summary()?;
        Ok(self.stopped.is_none().then_some(rate))
    }

    /// `sweep_summary.json`, rewritten whole after every point so a stopped sweep keeps its points.
    fn write_summary(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.plan.results_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        let doc = json!({
            "schema_version": tokenperf_core::SCHEMA_VERSION,
            "sweep": self.spec,
            "stop": self.stop,
            "result": { "rows": self.rows, "stopped": self.stopped },
        });
        crate::output::write_json(&dir.join("sweep_summary.json"), &doc)
    }
}

/// Runs a sweep over `plan` (whose `sweep` is set). The exit code is the most serious of its points'.
pub async fn run_sweep(plan: Plan, control: Control) -> anyhow::Result<(SweepResult, Exit)> {
    let spec = plan.sweep.clone().expect("a sweep plan");
    let mut sweep = Sweep {
        plan: &plan,
        spec: spec.clone(),
        stop: plan.sweep_stop.unwrap_or_default(),
        control,
        rows: Vec::new(),
        stopped: None,
        exit: Exit::Ok,
    };
    let points: Vec<(String, Load)> = match &spec {
        SweepSpec::Concurrency(cs) => cs
            .iter()
            .map(|&c| (format!("concurrency-{c}"), Load::Closed { concurrency: c }))
            .collect(),
        SweepSpec::Rate(rs) => rs.iter().map(|&r| (format!("rate-{r}"), open(r))).collect(),
        SweepSpec::Auto => auto_points(&mut sweep).await?.unwrap_or_default(),
    };
    for (name, load) in points {
        if sweep.point(name, load).await?.is_none() {
            break;
        }
    }
    let exit = sweep.exit;
    Ok((
        SweepResult {
            rows: sweep.rows,
            stopped: sweep.stopped,
        },
        exit,
    ))
}

/// `--sweep auto`: runs the two ends (one stream at a time, then as many streams as the plan's
/// concurrency allows, at least 16) and returns the rates between them, or `None` when it ended.
async fn auto_points(sweep: &mut Sweep<'_>) -> anyhow::Result<Option<Vec<(String, Load)>>> {
    let ends = [
        ("synchronous".to_string(), Load::Closed { concurrency: 1 }),
        (
            "throughput".to_string(),
            Load::Closed {
                concurrency: sweep.plan.concurrency().max(16),
            },
        ),
    ];
    let mut rates = Vec::new();
    for (name, load) in ends {
        match sweep.point(name, load).await? {
            Some(r) => rates.push(r),
            None => return Ok(None),
        }
    }
    if !(rates[0] > 0.0 && rates[1] > rates[0]) {
        sweep.stopped = Some(format!(
            "no rates to sweep: {:.3} requests/s at one stream, {:.3} at full concurrency",
            rates[0], rates[1]
        ));
        sweep.write_summary()?;
        return Ok(None);
    }
    let n = sweep.plan.sweep_points.max(1);
    Ok(Some(
        (1..=n)
            .map(|k| {
                let r = rates[0] + (rates[1] - rates[0]) * k as f64 / (n + 1) as f64;
                (format!("rate-{r:.3}"), open(r))
            })
            .collect(),
    ))
}

fn open(rate: f64) -> Load {
    Load::Open {
        rate,
        arrival: Arrival::Poisson,
        burstiness: 1.0,
        max_concurrency: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs_and_limits() {
        assert_eq!(
            "concurrency=1,2,4".parse::<SweepSpec>().unwrap(),
            SweepSpec::Concurrency(vec![1, 2, 4])
        );
        assert_eq!(
            "rate=0.5,2".parse::<SweepSpec>().unwrap(),
            SweepSpec::Rate(vec![0.5, 2.0])
        );
        assert_eq!("auto".parse::<SweepSpec>().unwrap(), SweepSpec::Auto);
        assert!(
            "concurrency=1.5"
                .parse::<SweepSpec>()
                .unwrap_err()
                .contains("whole")
        );
        assert!(
            "load=1"
                .parse::<SweepSpec>()
                .unwrap_err()
                .contains("unknown sweep")
        );
        assert!("rate=0".parse::<SweepSpec>().is_err());
        let s: SweepStop = "error_rate=0.1,ttft_p99=2".parse().unwrap();
        assert_eq!(
            (s.error_rate, s.ttft_p99_s, s.e2e_p99_s),
            (Some(0.1), Some(2.0), None)
        );
        assert!(
            "speed=1"
                .parse::<SweepStop>()
                .unwrap_err()
                .contains("unknown limit")
        );
    }
}
