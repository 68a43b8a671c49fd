//! The paged key/value cache.
//!
//! KV memory is a pool of fixed-size blocks ([`KvPool`]), each holding `block_size` positions
//! of keys and values for every layer. A sequence's cache ([`SequenceKv`]) is its table of
//! blocks; blocks are reference-counted, so several sequences can share a prefix (the choices
//! of an `n > 1` request, or requests with a common system prompt) and a shared block is
//! copied before it is written. A block's memory goes back to the pool when its last user
//! drops it, and the pool never holds more blocks than its budget. A [`PrefixCache`] keeps
//! full prompt blocks by the hash of their prefix so that later prompts skip that prefill.

mod block;
mod pool;
mod prefix;
mod sequence;

pub use block::{BlockLayout, KvBlock};
pub use pool::{KvPool, PoolStats};
pub use prefix::{block_hashes, PrefixCache};
pub use sequence::{KvView, SequenceKv};
