//! Token sampling: request parameters, the per-sequence token history that penalties need, and
//! the [`Sampler`] that turns one step's logits into a token (with OpenAI-style logprobs).
//!
//! The pipeline, applied to a copy of the model's logits, is:
//! `logit_bias` → repetition penalty → frequency/presence penalties → (greedy when
//! `temperature == 0`) → temperature → `top_k` → `top_p` → `min_p` → draw from the renormalised
//! distribution. Logprobs are reported from the *raw* logits, before any of these steps.

mod filters;
mod history;
mod kernels;
mod params;
mod sampler;

pub use history::TokenHistory;
pub use params::{SamplingParams, MAX_TOP_LOGPROBS};
pub use sampler::{choice_seed, SampledToken, Sampler};
