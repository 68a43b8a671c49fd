//! Engine settings.

use crate::{Error, Result};

/// How much memory the KV cache may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    /// A number of bytes.
    Bytes(usize),
    /// A fraction (0, 1] of the machine's total memory.
    FractionOfMemory(f64),
}

/// Settings of an [`super::Engine`].
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most tokens computed in one step (decodes plus prompt chunks).
    pub max_batched_tokens: usize,
    /// Most sequences running at once (each choice of an `n > 1` request counts).
    pub max_num_seqs: usize,
    /// Requests that may wait in the submission queue; more are refused as overloaded.
    pub queue_capacity: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// Memory for the KV cache.
    pub kv_budget: KvBudget,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batched_tokens: 512,
            max_num_seqs: 64,
            queue_capacity: 256,
            block_size: 16,
            kv_budget: KvBudget::Bytes(1 << 30),
        }
    }
}

impl EngineConfig {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidRequest(format!("engine config: {what}")));
        if self.max_batched_tokens == 0 {
            return bad("max_batched_tokens must be at least 1");
        }
        if self.max_num_seqs == 0 {
            return bad("max_num_seqs must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.block_size == 0 {
            return bad("block_size must be at least 1");
        }
        match self.kv_budget {
            KvBudget::Bytes(0) => bad("the KV budget must be more than 0 bytes"),
            KvBudget::FractionOfMemory(f) if !(f > 0.0 && f <= 1.0) => {
                bad("the KV memory fraction must be in (0, 1]")
            }
            _ => Ok(()),
        }
    }

    /// The KV budget in bytes on this machine.
    pub fn kv_budget_bytes(&self) -> Result<usize> {
        match self.kv_budget {
            KvBudget::Bytes(bytes) => Ok(bytes),
            KvBudget::FractionOfMemory(fraction) => {
                Ok((total_memory_bytes()? as f64 * fraction) as usize)
            }
        }
    }
}

/// Total physical memory, from `/proc/meminfo`.
fn total_memory_bytes() -> Result<usize> {
    let path = "/proc/meminfo";
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .find_map(|line| {
            let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
            kib.trim().parse::<usize>().ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| Error::InvalidRequest("cannot read MemTotal from /proc/meminfo".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_limits_are_not() {
        assert!(EngineConfig::default().validate().is_ok());
        for broken in [
            EngineConfig {
                max_batched_tokens: 0,
                ..Default::default()
            },
            EngineConfig {
                max_num_seqs: 0,
                ..Default::default()
            },
            EngineConfig {
                kv_budget: KvBudget::FractionOfMemory(1.5),
                ..Default::default()
            },
            EngineConfig {
                kv_budget: KvBudget::Bytes(0),
                ..Default::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn a_memory_fraction_becomes_bytes() {
        let config = EngineConfig {
            kv_budget: KvBudget::FractionOfMemory(0.01),
            ..Default::default()
        };
        assert!(config.kv_budget_bytes().unwrap() > 1 << 20);
    }
}
