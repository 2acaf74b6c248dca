//! tokenperf-core: what more than one tokenperf binary needs, and nothing that needs async, HTTP or
//! polars. The per-request [`record::RequestRecord`] and its metrics, the [`stats`] every number goes
//! through, the [`summary::RunSummary`] with its LLMPerf renderings, the [`openai`] wire types, and the
//! project [`tokenizer`].
//!
//! # Layout
//! * [`record`]: the record written per request, with raw timestamps; metrics are methods on it.
//! * [`stats`]: percentiles (linear interpolation), mean, min, max, sample stddev; `None`, never NaN.
//! * [`summary`]: run-level statistics, LLMPerf's summary JSON and console block.
//! * [`tally`]: the summary built one record at a time; [`histogram`]: bounded tallies of µs values.
//! * [`lines`]: JSONL read a line at a time, each line capped.
//! * [`llmperf`]: LLMPerf's nine record keys, file names, metric definitions and float formatting.
//! * [`openai`]: request/response/error types of the OpenAI API.
//! * [`tokenizer`]: the embedded project tokenizer and `tokenizer.json` loading.
//! * [`wordmemo`]: byte-level BPE text counted a word at a time, each distinct word encoded once.
//! * [`rng`]: the seeded random number generator behind every sampled number.
//! * [`rxstamp`]: the kernel's receive stamps on TCP reads, mapped to the monotonic clock.

pub mod background;
pub mod clock;
pub mod histogram;
pub mod lines;
pub mod llmperf;
pub mod openai;
pub mod pyrandom;
pub mod record;
pub mod rng;
pub mod rxstamp;
pub mod selfcheck;
pub mod slo;
pub mod stats;
pub mod summary;
pub mod tally;
pub mod tokenizer;
pub mod wordmemo;

/// Version of every file format tokenperf writes. Bumped when a field is removed or changes meaning;
/// adding fields does not bump it.
pub const SCHEMA_VERSION: u32 = 1;
