//! The workload stage: what every request of the plan sends (prompt and `max_tokens`) and, for an
//! open loop or a trace, when; built from the seed before any load is offered. Every shard builds
//! the same whole-plan workload and keeps its own requests, so the shards' union is exactly the
//! unsharded plan (request `i` is shard `i mod N`'s).

use std::sync::Arc;

use anyhow::Context as _;
use tokenperf_core::rng::Rng;
use tokenperf_core::tokenizer::{PROJECT_CORPUS, TokenCounter};

use crate::cli::{Load, Plan};
use crate::prompt::{self, PromptBuilder, PromptSpec};
use crate::{arrival, dataset, tokenizer, trace, unix_us};

/// Prompt text the pool may hold; past it, prompts are cycled as they are past
/// [`crate::cli::MAX_PROMPT_POOL`], so a long run of long prompts costs bounded memory.
pub const MAX_POOL_BYTES: usize = 64 << 20;

/// What the drive stage sends.
pub struct Workload {
    pub tokenizer: Arc<TokenCounter>,
    /// Request `i` sends `specs[i % specs.len()]`.
    pub specs: Arc<Vec<PromptSpec>>,
    /// Open loop or trace: this shard's arrivals as (plan index, µs after the run start), in time
    /// order. `None`: a closed loop.
    pub arrivals: Option<Vec<(u64, u64)>>,
}

impl Workload {
    /// Loads the tokenizer and corpus, samples the prompts, and lays out the arrivals.
    pub async fn prepare(plan: &Plan) -> anyhow::Result<Self> {
        let tokenizer = Arc::new(
            tokenizer::resolve(&plan.tokenizer)
                .await
                .context("loading the tokenizer (--tokenizer)")?,
        );
        let corpus_text = match &plan.corpus {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading the corpus file '{}' (--corpus)", p.display()))?,
            None => PROJECT_CORPUS.to_string(),
        };
        let builder = PromptBuilder::new(&corpus_text, &tokenizer)?;
        if builder.is_empty() {
            anyhow::bail!("--corpus: the corpus has no non-empty lines to build prompts from");
        }
        // A trace brings its own schedule and lengths; everything else samples prompts up front.
        let (schedule, mut specs) = match &plan.load {
            Load::Trace {
                path, time_scale, ..
            } => {
                let mut entries = trace::read(path)?;
                if let Some(n) = plan.requests {
                    entries.truncate(n as usize);
                }
                let mut rng = Rng::new(plan.seed);
                let (schedule, specs) =
                    trace::plan(&entries, *time_scale, &builder, &tokenizer, &mut rng)?;
                (Some(schedule), specs)
            }
            Load::Open { .. } => (
                Some(open_schedule(plan)),
                build_prompts(plan, &builder, &tokenizer)?,
            ),
            Load::Closed { .. } => (None, build_prompts(plan, &builder, &tokenizer)?),
        };
        if plan.cache_bust {
            // Salted with the wall clock, so a re-run with the same seed does not meet its own
            // prefixes.
            prompt::bust_cache(&mut specs, plan.seed ^ unix_us(), &tokenizer)?;
        }
        let arrivals = schedule.map(|s| {
            s.into_iter()
                .enumerate()
                .map(|(i, t)| (i as u64, t))
                .filter(|(i, _)| plan.shard.owns(*i))
                .collect()
        });
        Ok(Self {
            tokenizer,
            specs: Arc::new(specs),
            arrivals,
        })
    }
}

/// The open loop's whole-plan schedule: arrivals at the rate, ramped, within the time limit.
fn open_schedule(plan: &Plan) -> Vec<u64> {
    let Load::Open {
        rate,
        arrival,
        burstiness,
        ..
    } = plan.load
    else {
        return Vec::new();
    };
    let mut rng = Rng::new(plan.seed ^ 0x5EED_A771_7A15);
    let mut schedule = arrival::schedule(
        &mut rng,
        rate,
        arrival,
        burstiness,
        plan.requests,
        Some(plan.timeout_s),
    );
    arrival::ramp(&mut schedule, plan.ramp_up_s);
    if plan.requests.is_none() {
        // A time-bounded run: arrivals the ramp pushed past its end are not part of it.
        schedule.retain(|&t| t as f64 <= plan.timeout_s * 1e6);
    }
    schedule
}

/// Samples every request's prompt and `max_tokens` up front, seeded, as LLMPerf does: from the corpus,
/// or from `--dataset`; with `--shared-prefix`, prefixes go ahead of the prompts in turn. At most
/// [`MAX_POOL_BYTES`] of corpus prompts are kept; requests past the pool cycle through it.
pub fn build_prompts(
    plan: &Plan,
    builder: &PromptBuilder<'_>,
    tokenizer: &TokenCounter,
) -> anyhow::Result<Vec<PromptSpec>> {
    let mut rng = Rng::new(plan.seed);
    let out = (
        plan.mean_output_tokens as f64,
        plan.stddev_output_tokens as f64,
    );
    let prefixes = match plan.shared_prefix {
        Some((n, p)) => dataset::shared_prefixes(builder, tokenizer, &mut rng, n, p)
            .context("building the shared prefixes (--shared-prefix)")?,
        None => Vec::new(),
    };
    if let Some((path, format, sampling)) = &plan.dataset {
        let items = match format {
            dataset::DatasetFormat::Jsonl => dataset::read_jsonl(path)?,
            dataset::DatasetFormat::Sharegpt => dataset::read_sharegpt(path, tokenizer)?,
        };
        return dataset::specs(
            &items,
            plan.prompt_pool(),
            *sampling,
            &prefixes,
            tokenizer,
            &mut rng,
            out,
        );
    }
    let input = (
        plan.mean_input_tokens as f64,
        plan.stddev_input_tokens as f64,
    );
    let mut llmperf = match plan.prompt_sampling {
        prompt::PromptSampling::Llmperf => Some(
            prompt::LlmperfSampler::new(builder.corpus(), tokenizer, plan.seed)
                .context("reading the corpus (--corpus)")?,
        ),
        prompt::PromptSampling::Exact => None,
    };
    let mut specs = Vec::new();
    let mut bytes = 0usize;
    for k in 0..plan.prompt_pool() {
        if bytes >= MAX_POOL_BYTES {
            break;
        }
        let mut spec = match &mut llmperf {
            Some(s) => s.next(input, out),
            None => builder.sample(&mut rng, input, out),
        }
        .context("building a prompt")?;
        if let Some(prefix) = prefixes.get(k as usize % prefixes.len().max(1)) {
            spec.prompt = format!("{prefix}{}", spec.prompt);
            spec.prompt_tokens = tokenizer.count(&spec.prompt, true)? as u64;
        }
        bytes += spec.prompt.len();
        specs.push(spec);
    }
    Ok(specs)
}
