//! The workload stage: what every request of the plan sends (prompt and `max_tokens`) and, for an
//! open loop or a trace, when; all from the seed. Every shard builds the same whole-plan workload and
//! keeps its own requests, so the shards' union is exactly the unsharded plan (request `i` is shard
//! `i mod N`'s).
//!
//! Corpus and dataset prompts are built in order on a thread of their own ([`PromptPool`]) while the
//! load already runs: the first request waits for the first prompt only, not for a pool of 100,000
//! (which takes tens of seconds with a real tokenizer). A request whose prompt is not built yet waits
//! for it, and that wait shows as its schedule lag.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokenperf_core::rng::Rng;
use tokenperf_core::tokenizer::{PROJECT_CORPUS, TokenCounter};
use tokio::sync::oneshot;

use crate::cli::{Load, Plan};
use crate::prompt::{self, PromptBuilder, PromptSpec};
use crate::{arrival, dataset, tokenizer, trace, unix_us};

/// Prompt text the pool may hold; past it, prompts are cycled as they are past
/// [`crate::cli::MAX_PROMPT_POOL`], so a long run of long prompts costs bounded memory.
pub const MAX_POOL_BYTES: usize = 64 << 20;

/// Prompts in the making: request `i` sends prompt `i mod target` (the pool's planned size), of
/// the ones built so far when the builder stopped short (at [`MAX_POOL_BYTES`] of text, or at an
/// error, which the run reports).
pub struct PromptPool {
    target: usize,
    /// Each prompt goes to one request only (a trace's): the pool lets go of a prompt once its
    /// request has it ([`Self::release`]), so a long trace holds only the prompts in flight and
    /// built ahead, not every prompt it has sent.
    single_use: bool,
    state: Mutex<PoolState>,
    /// The builder waits on it while it is as far ahead of the requests as [`ahead`] lets it be.
    more_wanted: Condvar,
}

/// How many prompts the builder may be ahead of the highest one asked for: as many as have been
/// asked for, up to [`BUILD_AHEAD`] (so nothing but the first prompt while the run starts, then a
/// lead that grows with the run). Paced so, it takes the CPU the run needs at the rate the run
/// needs it, with no burst while the run starts.
pub const BUILD_AHEAD: usize = 256;
/// The builder's nice value after the first prompt. At 19 (as it was) it starved on a loaded
/// machine and requests waited for their prompts (an open loop asked for 40/s sent 25/s under six
/// CPU hogs); at 0 it took the CPU the first requests wanted (launch to first request about 9 ms
/// later at the median with LLaMA's tokenizer). 10 did neither in the same measurements.
pub const BUILDER_NICE: i32 = 10;

fn ahead(wanted: usize) -> usize {
    wanted.min(BUILD_AHEAD)
}

#[derive(Default)]
struct PoolState {
    /// Built so far, in order; `None` once released.
    specs: Vec<Option<Arc<PromptSpec>>>,
    finished: bool,
    error: Option<String>,
    /// Requests waiting, by the pool index they wait for: each is woken once, when its prompt
    /// exists (waking every waiter on every prompt would cost 1,000 wake-ups per prompt at 1,000
    /// streams).
    waiting: BTreeMap<usize, Vec<oneshot::Sender<()>>>,
    /// Pool prompts asked for so far: one past the highest pool index any request asked for.
    wanted: usize,
}

impl PoolState {
    /// Wakes the requests whose prompt now exists (every one, once the builder is done).
    fn wake(&mut self) {
        let later = if self.finished {
            BTreeMap::new()
        } else {
            self.waiting.split_off(&self.specs.len())
        };
        for tx in std::mem::replace(&mut self.waiting, later)
            .into_values()
            .flatten()
        {
            let _ = tx.send(());
        }
    }
}

impl PromptPool {
    /// A pool of `target` prompts that `build` makes on its own thread, passing each to its
    /// argument, which says whether to go on; `single_use` for prompts sent once each.
    pub fn build(
        target: usize,
        single_use: bool,
        build: impl FnOnce(&mut dyn FnMut(PromptSpec) -> bool) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<Arc<Self>> {
        let pool = Arc::new(Self {
            target: target.max(1),
            single_use,
            state: Mutex::new(PoolState::default()),
            more_wanted: Condvar::new(),
        });
        let p = pool.clone();
        std::thread::Builder::new()
            .name("loadgen-prompts".into())
            .spawn(move || {
                let mut push = |spec: PromptSpec| {
                    let mut st = p.lock();
                    st.specs.push(Some(Arc::new(spec)));
                    if st.specs.len() == 1 {
                        tokenperf_core::background::lower_this_thread_to(BUILDER_NICE);
                    }
                    st.wake();
                    while st.specs.len() >= st.wanted + ahead(st.wanted)
                        && st.specs.len() < p.target
                    {
                        // Nobody else holds the pool: the run is over, stop building.
                        if Arc::strong_count(&p) == 1 {
                            return false;
                        }
                        st = p
                            .more_wanted
                            .wait_timeout(st, Duration::from_millis(100))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    st.specs.len() < p.target
                };
                let result = build(&mut push);
                let mut st = p.lock();
                st.finished = true;
                st.error = result.err().map(|e| format!("{e:#}"));
                st.wake();
            })
            .context("starting the prompt-building thread")?;
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A builder that panicked leaves the state as it was: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Request `i`'s prompt, waiting until it is built; `None` only when no prompt could be built.
    pub async fn get(&self, i: u64) -> Option<Arc<PromptSpec>> {
        loop {
            let rx = {
                let mut st = self.lock();
                if let Some(found) = self.decided(&mut st, i) {
                    return found;
                }
                let (tx, rx) = oneshot::channel();
                let k = (i % self.target as u64) as usize;
                st.waiting.entry(k).or_default().push(tx);
                rx
            };
            let _ = rx.await;
        }
    }

    /// Request `i`'s prompt if it is decided: `Some(Some(p))` built, `Some(None)` never will be,
    /// `None` not built yet. Asks for it, as [`Self::get`] does.
    #[cfg(test)]
    fn try_get(&self, i: u64) -> Option<Option<Arc<PromptSpec>>> {
        self.decided(&mut self.lock(), i)
    }

    /// Request `i`'s prompt if it is built, without asking for it: for the record of a request
    /// that will not be sent (a drop, or the rest of a run that stopped), which must not set the
    /// builder going through the rest of the plan.
    pub fn peek(&self, i: u64) -> Option<Arc<PromptSpec>> {
        let st = self.lock();
        Self::lookup(&st, (i % self.target as u64) as usize).flatten()
    }

    fn decided(&self, st: &mut PoolState, i: u64) -> Option<Option<Arc<PromptSpec>>> {
        let k = (i % self.target as u64) as usize;
        if k >= st.wanted {
            st.wanted = k + 1;
            self.more_wanted.notify_one();
        }
        Self::lookup(st, k)
    }

    fn lookup(st: &PoolState, k: usize) -> Option<Option<Arc<PromptSpec>>> {
        if let Some(p) = st.specs.get(k) {
            return Some(p.clone());
        }
        if st.finished {
            let n = st.specs.len();
            return Some(st.specs.get(k % n.max(1)).cloned().flatten());
        }
        None
    }

    /// Prompts the pool holds now (built, not released).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().specs.iter().filter(|s| s.is_some()).count()
    }

    /// Lets go of request `i`'s prompt once the request holds it, in a single-use pool (a no-op
    /// otherwise: other pools' prompts are cycled).
    pub fn release(&self, i: u64) {
        if self.single_use {
            let k = (i % self.target as u64) as usize;
            if let Some(slot) = self.lock().specs.get_mut(k) {
                *slot = None;
            }
        }
    }

    /// Why the builder stopped before the pool was full, if it failed.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Prompts built so far.
    pub fn built(&self) -> usize {
        self.lock().specs.len()
    }
}

/// What the drive stage sends.
pub struct Workload {
    pub tokenizer: Arc<TokenCounter>,
    /// Request `i` sends prompt `i` of the pool (cycled).
    pub prompts: Arc<PromptPool>,
    /// Open loop or trace: this shard's arrivals as (plan index, µs after the run start), in time
    /// order. `None`: a closed loop.
    pub arrivals: Option<Vec<(u64, u64)>>,
}

impl Workload {
    /// Loads the tokenizer and corpus, starts building the prompts, and lays out the arrivals;
    /// returns once the first prompt is built (so a bad corpus or dataset fails before any load).
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
        if corpus_text.lines().all(|l| l.trim().is_empty()) {
            anyhow::bail!("--corpus: the corpus has no non-empty lines to build prompts from");
        }
        let salt = plan.cache_bust.then(|| plan.seed ^ unix_us());
        // Prompts are made on the pool's thread as the run asks for them; a trace brings its own
        // schedule and lengths.
        let (schedule, prompts) = match &plan.load {
            Load::Trace {
                path, time_scale, ..
            } => {
                let mut entries = trace::read(path)?;
                if let Some(n) = plan.requests {
                    entries.truncate(n as usize);
                }
                let schedule = trace::schedule(&entries, *time_scale);
                let (seed, tok) = (plan.seed, tokenizer.clone());
                let pool = PromptPool::build(entries.len(), true, move |push| {
                    build_trace_prompts(&entries, &corpus_text, &tok, seed, salt, push)
                })?;
                (Some(schedule), pool)
            }
            load => {
                let schedule = matches!(load, Load::Open { .. }).then(|| open_schedule(plan));
                let (plan2, tok) = (plan.clone(), tokenizer.clone());
                let pool = PromptPool::build(plan.prompt_pool() as usize, false, move |push| {
                    build_prompts(&plan2, &corpus_text, &tok, salt, push)
                })?;
                (schedule, pool)
            }
        };
        if prompts.get(0).await.is_none() {
            anyhow::bail!(
                "{}",
                prompts
                    .error()
                    .unwrap_or_else(|| "no prompt could be built".into())
            );
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
            prompts,
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

/// Builds a trace's requests in trace order, seeded: each entry's prompt (its own, or cut from the
/// corpus to its length), then `--cache-bust`'s marker with a `salt`, until `push` says stop. Built
/// so, a trace of hours does not make every prompt before the first request goes out.
fn build_trace_prompts(
    entries: &[trace::TraceEntry],
    corpus: &str,
    tokenizer: &TokenCounter,
    seed: u64,
    salt: Option<u64>,
    push: &mut dyn FnMut(PromptSpec) -> bool,
) -> anyhow::Result<()> {
    let builder = PromptBuilder::new(corpus, tokenizer)?;
    let mut rng = Rng::new(seed);
    // Salted with the wall clock, so a re-run with the same seed does not meet its own prefixes.
    let mut buster = salt.map(prompt::CacheBuster::new);
    for e in entries {
        let mut spec = trace::build_spec(e, &builder, tokenizer, &mut rng)?;
        if let Some(b) = buster.as_mut() {
            b.apply(&mut spec, tokenizer)?;
        }
        if !push(spec) {
            break;
        }
    }
    Ok(())
}

/// Samples every request's prompt and `max_tokens` in order, seeded, as LLMPerf does: from the
/// corpus, or from `--dataset`; with `--shared-prefix`, prefixes go ahead of the prompts in turn;
/// with a `salt`, `--cache-bust`'s markers. Each goes to `push` as it is made, until `push` says
/// stop, the pool is full, or [`MAX_POOL_BYTES`] of corpus prompts were made.
pub fn build_prompts(
    plan: &Plan,
    corpus: &str,
    tokenizer: &TokenCounter,
    salt: Option<u64>,
    push: &mut dyn FnMut(PromptSpec) -> bool,
) -> anyhow::Result<()> {
    // The exact builder tokenizes every corpus line: made only when something uses it, since it is
    // on the start-up's critical path and LLMPerf's sampler counts the lines itself.
    let needs_builder =
        plan.shared_prefix.is_some() || plan.prompt_sampling == prompt::PromptSampling::Exact;
    let builder = needs_builder
        .then(|| PromptBuilder::new(corpus, tokenizer))
        .transpose()?;
    let mut buster = salt.map(prompt::CacheBuster::new);
    let mut rng = Rng::new(plan.seed);
    let out = (
        plan.mean_output_tokens as f64,
        plan.stddev_output_tokens as f64,
    );
    let prefixes = match (plan.shared_prefix, &builder) {
        (Some((n, p)), Some(b)) => dataset::shared_prefixes(b, tokenizer, &mut rng, n, p)
            .context("building the shared prefixes (--shared-prefix)")?,
        _ => Vec::new(),
    };
    if plan.dataset.is_some() {
        let specs = dataset_prompts(plan, tokenizer, &prefixes, &mut rng, out)?;
        for mut spec in specs {
            if let Some(b) = &mut buster {
                b.apply(&mut spec, tokenizer)?;
            }
            if !push(spec) {
                break;
            }
        }
        return Ok(());
    }
    let input = (
        plan.mean_input_tokens as f64,
        plan.stddev_input_tokens as f64,
    );
    let mut llmperf = match plan.prompt_sampling {
        prompt::PromptSampling::Llmperf => Some(
            prompt::LlmperfSampler::new(corpus, tokenizer, plan.seed)
                .context("reading the corpus (--corpus)")?,
        ),
        prompt::PromptSampling::Exact => None,
    };
    let mut bytes = 0usize;
    for k in 0..plan.prompt_pool() {
        if bytes >= MAX_POOL_BYTES {
            break;
        }
        let made = if let Some(s) = &mut llmperf {
            s.next(input, out)
        } else if let Some(b) = &builder {
            b.sample(&mut rng, input, out)
        } else {
            anyhow::bail!("exact prompt sampling needs its builder (a bug: please report it)");
        };
        let mut spec = made.context("building a prompt")?;
        if let Some(prefix) = prefixes.get(k as usize % prefixes.len().max(1)) {
            spec.prompt = format!("{prefix}{}", spec.prompt);
            spec.prompt_tokens = tokenizer.count(&spec.prompt, true)? as u64;
        }
        if let Some(b) = &mut buster {
            b.apply(&mut spec, tokenizer)?;
        }
        bytes += spec.prompt.len();
        if !push(spec) {
            break;
        }
    }
    Ok(())
}

/// `--dataset`'s prompts, drawn as `--sample` says, shared prefixes ahead.
fn dataset_prompts(
    plan: &Plan,
    tokenizer: &TokenCounter,
    prefixes: &[String],
    rng: &mut Rng,
    out: (f64, f64),
) -> anyhow::Result<Vec<PromptSpec>> {
    let Some((path, format, sampling)) = &plan.dataset else {
        return Ok(Vec::new());
    };
    let items = match format {
        dataset::DatasetFormat::Jsonl => dataset::read_jsonl(path)?,
        dataset::DatasetFormat::Sharegpt => dataset::read_sharegpt(path)?,
    };
    dataset::specs(
        &items,
        plan.prompt_pool(),
        *sampling,
        prefixes,
        tokenizer,
        rng,
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: u64) -> PromptSpec {
        PromptSpec {
            prompt: format!("p{n}"),
            messages: None,
            max_tokens: n,
            prompt_tokens: n,
            target_tokens: None,
        }
    }

    #[tokio::test]
    async fn requests_wait_for_their_prompt_and_cycle_the_pool() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let pool = PromptPool::build(3, false, move |push| {
            for n in 0..10 {
                // Each prompt waits for the test's go, so a request can be ahead of the builder.
                rx.recv().ok();
                if !push(spec(n)) {
                    break;
                }
            }
            Ok(())
        })
        .unwrap();
        assert!(pool.try_get(1).is_none(), "not built yet");
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get(4).await })
        };
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        // Request 4 is prompt 4 mod 3 = 1; the builder stops at the pool's size.
        assert_eq!(waiting.await.unwrap().unwrap().max_tokens, 1);
        assert_eq!(pool.get(5).await.unwrap().max_tokens, 2);
        while pool.built() < 3 || pool.try_get(99).is_none() {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.built(), 3);
        assert!(pool.error().is_none());
        // A cycled pool's prompts serve again: releasing one is a no-op.
        pool.release(4);
        assert_eq!(pool.held(), 3);
        assert_eq!(pool.get(7).await.unwrap().max_tokens, 1);
    }

    #[tokio::test]
    async fn a_builder_that_stops_short_is_cycled_and_its_error_kept() {
        let pool = PromptPool::build(10, false, |push| {
            push(spec(0));
            push(spec(1));
            anyhow::bail!("the tokenizer failed")
        })
        .unwrap();
        // Prompt 7 was never built: the two that were serve in turn.
        assert_eq!(pool.get(7).await.unwrap().max_tokens, 1);
        assert_eq!(pool.get(12).await.unwrap().max_tokens, 0);
        assert!(pool.error().unwrap().contains("tokenizer failed"));
        let none = PromptPool::build(4, false, |_| anyhow::bail!("bad corpus")).unwrap();
        assert!(none.get(0).await.is_none());
    }

    /// Waits (bounded) until the pool holds `n` prompts.
    async fn built_reaches(pool: &PromptPool, n: usize) {
        let t = std::time::Instant::now();
        while pool.built() < n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "built {} of {n}",
                pool.built()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A trace's prompts are made as the run asks for them, in trace order and to each entry's
    /// length, with `--cache-bust`'s marker on each; the first request does not wait for the rest.
    #[tokio::test]
    async fn a_trace_is_built_as_it_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let n = 2_000u64;
        let lines: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"timestamp\": {i}, \"input_length\": {}, \"output_length\": 4}}\n",
                    200 + i % 7
                )
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        let trace = path.to_str().unwrap();
        let plan = crate::cli::Args::offline_plan(&["--trace", trace, "--cache-bust"]);
        let w = Workload::prepare(&plan).await.unwrap();
        assert_eq!(w.arrivals.as_ref().unwrap().len(), n as usize);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            w.prompts.built() <= 2,
            "built {} before any request",
            w.prompts.built()
        );
        // Peeking (the records of requests never sent, as when a run stops) asks for nothing.
        assert!(w.prompts.peek(n - 2).is_none());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            w.prompts.built() <= 2,
            "built {} after a peek",
            w.prompts.built()
        );
        let t = TokenCounter::project();
        for i in [0, 1, 777, n - 1] {
            let spec = w.prompts.get(i).await.unwrap();
            // The entry's length, and the marker's tokens on top: "[16 hex digits] ".
            let marker = &spec.prompt[..19];
            assert!(
                marker.starts_with('[') && marker.ends_with("] "),
                "{marker}"
            );
            let marker_tokens = t.count(marker, false).unwrap() as u64;
            assert_eq!(spec.prompt_tokens, 200 + i % 7 + marker_tokens, "entry {i}");
            assert_eq!(spec.max_tokens, 4);
        }
        // Each prompt of a trace goes to one request: once it has it, the pool lets go.
        for i in 0..100 {
            let spec = w.prompts.get(i).await.unwrap();
            w.prompts.release(i);
            assert!(!spec.prompt.is_empty(), "the request keeps its own");
        }
        assert_eq!(w.prompts.held(), w.prompts.built() - 100);
        assert!(w.prompts.error().is_none());
    }

    #[tokio::test]
    async fn the_builder_stays_a_bounded_way_ahead_and_stops_with_the_run() {
        let (stopped, builder_done) = std::sync::mpsc::channel();
        let pool = PromptPool::build(BUILD_AHEAD * 4, false, move |push| {
            let mut n = 0;
            while push(spec(n)) {
                n += 1;
            }
            stopped.send(n + 1).unwrap();
            Ok(())
        })
        .unwrap();
        built_reaches(&pool, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            pool.built(),
            1,
            "nothing asked yet: the first prompt, then it waits"
        );
        assert_eq!(pool.get(300).await.unwrap().max_tokens, 300);
        built_reaches(&pool, 301 + BUILD_AHEAD).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.built(), 301 + BUILD_AHEAD);
        drop(pool);
        let built = builder_done
            .recv_timeout(Duration::from_secs(60))
            .expect("the builder stops once the run has let the pool go");
        assert_eq!(built as usize, 301 + BUILD_AHEAD);
    }
}
