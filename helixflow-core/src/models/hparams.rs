//! Reading an architecture's hyper-parameters from GGUF metadata (`{arch}.{key}`), with
//! errors that name the file and the key.

use helixflow_kernels::math::GateActivation;

use super::decoder::{check_block_count, embedding_rows, DecoderConfig, LayerAttention, NormKind};
use super::rope::{RopeScaling, RopeStyle};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The metadata of one GGUF file under its architecture's prefix.
pub(crate) struct Hparams<'a> {
    gguf: &'a GgufFile,
    arch: &'a str,
}

impl<'a> Hparams<'a> {
    /// The hyper-parameters of `gguf`, which must declare `arch`.
    pub(crate) fn new(gguf: &'a GgufFile, arch: &'a str) -> Self {
        Self { gguf, arch }
    }

    /// The file.
    pub(crate) fn gguf(&self) -> &'a GgufFile {
        self.gguf
    }

    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    /// Whether `key` is present.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.gguf.get(&self.key(key)).is_some()
    }

    /// A required count.
    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        let v = self.gguf.get_u64(&self.key(key))?;
        usize::try_from(v)
            .map_err(|_| Error::invalid_file(self.gguf.path(), format!("absurd {}", self.key(key))))
    }

    /// An optional count.
    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.has(key) {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    /// An optional real number.
    pub(crate) fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.gguf.get(&self.key(key)) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|v| Some(v as f32)).ok_or_else(|| {
                Error::invalid_file(
                    self.gguf.path(),
                    format!("{} is not a number", self.key(key)),
                )
            }),
        }
    }

    /// An optional real number with a default.
    pub(crate) fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        Ok(self.f32_opt(key)?.unwrap_or(default))
    }

    /// An optional string.
    pub(crate) fn str_opt(&self, key: &str) -> Option<&'a str> {
        self.gguf.get(&self.key(key)).and_then(|v| v.as_str())
    }

    /// An optional value of any type.
    pub(crate) fn value(&self, key: &str) -> Option<&'a crate::gguf::MetadataValue> {
        self.gguf.get(&self.key(key))
    }

    /// An error about this file.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::invalid_file(self.gguf.path(), reason)
    }
}

/// The hyper-parameters every family reads the same way: sizes, heads (the head width from
/// `attention.key_length` where the file gives it), the trained context, the norm epsilon
/// and one rotary embedding for all layers (`rope.freq_base`, `rope.scaling.*`), with no
/// window. A family then changes what it does differently.
pub(crate) fn standard_config(
    hp: &Hparams<'_>,
    defaults: StandardDefaults,
) -> Result<DecoderConfig> {
    let gguf = hp.gguf();
    let architecture = gguf.get_str("general.architecture")?.to_owned();
    let hidden_size = hp.usize("embedding_length")?;
    let num_heads = hp.usize("attention.head_count")?;
    let num_kv_heads = hp.usize_or("attention.head_count_kv", num_heads)?;
    if num_heads == 0 {
        return Err(hp.invalid("attention.head_count is 0"));
    }
    let head_dim = match hp.has("attention.key_length") {
        true => hp.usize("attention.key_length")?,
        false if hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
        false => return Err(hp.invalid("inconsistent head counts")),
    };
    if hp.has("attention.value_length") && hp.usize("attention.value_length")? != head_dim {
        return Err(
            hp.invalid("attention.value_length differs from attention.key_length (not supported)")
        );
    }
    let rope_dim = hp.usize_or("rope.dimension_count", head_dim)?;
    let num_layers = hp.usize("block_count")?;
    // Before `layers` is sized by it.
    check_block_count(gguf, num_layers)?;
    let attention = LayerAttention {
        rope_base: hp.f32_or("rope.freq_base", defaults.rope_base)?,
        rope_scaling: rope_scaling(hp)?,
        sliding_window: None,
        rotary: true,
    };
    Ok(DecoderConfig {
        architecture,
        vocab_size: embedding_rows(gguf)?,
        hidden_size,
        intermediate_size: hp.usize("feed_forward_length")?,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        context_length: hp.usize_or("context_length", defaults.context_length)?,
        norm: NormKind::Rms,
        norm_eps: hp.f32_or("attention.layer_norm_rms_epsilon", defaults.norm_eps)?,
        activation: GateActivation::Silu,
        rope_style: defaults.rope_style,
        rope_dim,
        layers: vec![attention; num_layers],
        embedding_scale: None,
        query_scale: None,
        attention_softcap: None,
        final_logit_softcap: None,
        qk_norm: false,
        post_norms: false,
        rope_factors_tensor: "rope_freqs.weight",
        experts: None,
    })
}

/// What a family assumes where its file is silent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StandardDefaults {
    pub(crate) rope_style: RopeStyle,
    pub(crate) rope_base: f32,
    pub(crate) context_length: usize,
    pub(crate) norm_eps: f32,
}

/// `rope.scaling.type` with its factor (`none`, `linear`, `yarn`; llama 3's scaling comes as
/// the `rope_freqs` tensor instead).
pub(crate) fn rope_scaling(hp: &Hparams<'_>) -> Result<RopeScaling> {
    let factor = hp.f32_opt("rope.scaling.factor")?;
    let kind = hp.str_opt("rope.scaling.type").unwrap_or(match factor {
        Some(f) if f != 1.0 => "linear",
        _ => "none",
    });
    let factor = factor.unwrap_or(1.0);
    if !(factor.is_finite() && factor > 0.0) {
        return Err(hp.invalid(format!("rope.scaling.factor {factor} is not a stretch")));
    }
    Ok(match kind {
        // LongRoPE's stretch is in its frequency factors (Phi-3 reads them).
        "none" | "longrope" => RopeScaling::None,
        "linear" if factor == 1.0 => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor },
        "yarn" => RopeScaling::Yarn {
            factor,
            original_context: hp.usize("rope.scaling.original_context_length")?,
            attn_factor: hp.f32_or("rope.scaling.attn_factor", 1.0)?,
        },
        other => {
            return Err(Error::UnsupportedModel(format!(
                "{}: rope scaling `{other}` (supported: none, linear, yarn, longrope)",
                hp.gguf().path().display()
            )))
        }
    })
}

/// Which layers attend within a sliding window, as llama.cpp reads it: the array
/// `attention.sliding_window_pattern` (one flag per layer) where the file has one, else a
/// period `n` (that key as a number, or the family's `default_period`) in which every layer
/// but the last of each period slides (`0`: every layer slides).
fn sliding_layers(hp: &Hparams<'_>, num_layers: usize, default_period: usize) -> Result<Vec<bool>> {
    let key = "attention.sliding_window_pattern";
    let period = match hp.value(key) {
        Some(value) => match (value.as_array(), value.as_u64()) {
            (Some(flags), _) => {
                let flags: Option<Vec<bool>> = flags.iter().map(|f| f.as_bool()).collect();
                return match flags {
                    Some(flags) if flags.len() == num_layers => Ok(flags),
                    _ => Err(hp.invalid(format!(
                        "{key} is not one flag for each of the {num_layers} layers"
                    ))),
                };
            }
            (None, Some(period)) => period as usize,
            (None, None) => return Err(hp.invalid(format!("{key} is neither flags nor a period"))),
        },
        None => default_period,
    };
    Ok((0..num_layers)
        .map(|l| period == 0 || l % period < period - 1)
        .collect())
}

/// The sliding window as llama.cpp reads it: `attention.sliding_window` positions (the
/// family's `default_window` where the file is silent; 0: none) on the layers
/// [`sliding_layers`] names (with the family's `default_period`), which take the rotary
/// embedding of `sliding_attention`; the other layers keep theirs.
pub(crate) fn apply_sliding_window(
    hp: &Hparams<'_>,
    config: &mut DecoderConfig,
    default_window: usize,
    default_period: usize,
    sliding_attention: LayerAttention,
) -> Result<()> {
    let window = hp.usize_or("attention.sliding_window", default_window)?;
    if window == 0 {
        return Ok(());
    }
    let sliding = sliding_layers(hp, config.num_layers, default_period)?;
    for (layer, slides) in config.layers.iter_mut().zip(sliding) {
        if slides {
            *layer = LayerAttention {
                sliding_window: Some(window),
                ..sliding_attention
            };
        }
    }
    Ok(())
}
