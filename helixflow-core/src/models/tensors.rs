//! Reading a decoder's weights from a GGUF file, each tensor's shape checked against the
//! configuration: separate or fused projections, dense MLPs or experts, norms.

use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::decoder::{DecoderConfig, NormKind};
use super::feed_forward::{FeedForward, GatedMlp};
use super::norm::Norm;
use super::router::Router;
use crate::cpu::{GatedProjection, WeightMatrix};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Reads the tensors of one GGUF file, checking each one's shape.
pub(super) struct TensorReader<'a> {
    pub(super) gguf: &'a GgufFile,
    pub(super) config: &'a DecoderConfig,
}

impl TensorReader<'_> {
    pub(super) fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let path = self.gguf.path();
        let info = self
            .gguf
            .tensor_infos()
            .get(name)
            .ok_or_else(|| Error::invalid_file(path, format!("tensor `{name}` is missing")))?;
        if info.shape != shape {
            return Err(Error::invalid_file(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?} for {}",
                    info.shape, self.config.architecture
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix> {
        self.expect_shape(name, &[rows, cols])?;
        WeightMatrix::from_gguf(self.gguf, name)
    }

    /// A mixture of experts' router `[count, hidden]`: F32 as it is (see [`Router`]).
    fn router(&self, name: &str, count: usize, hidden: usize) -> Result<Router> {
        self.expect_shape(name, &[count, hidden])?;
        let tensor = self.gguf.tensor(name, &Device::Cpu)?;
        if tensor.dtype() != GgmlDType::F32 {
            return Ok(Router::Matrix(WeightMatrix::from_gguf(self.gguf, name)?));
        }
        let weights = tensor
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Router::F32 {
            weights,
            cols: hidden,
        })
    }

    pub(super) fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.expect_shape(name, &[len])?;
        Ok(self
            .gguf
            .tensor(name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_vec1::<f32>()?)
    }

    pub(super) fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.gguf.has_tensor(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Rows `rows` of the matrix `name`, which must be `[total_rows, cols]`.
    pub(super) fn rows_of(
        &self,
        name: &str,
        total_rows: usize,
        cols: usize,
        rows: std::ops::Range<usize>,
    ) -> Result<WeightMatrix> {
        self.expect_shape(name, &[total_rows, cols])?;
        WeightMatrix::from_gguf_rows(self.gguf, name, rows)
    }

    /// The query, key and value projections of block `p`: separate, or the rows of one fused
    /// `attn_qkv` (Phi-3).
    pub(super) fn qkv(&self, p: &str) -> Result<Vec<WeightMatrix>> {
        let (h, qw, kvw) = (
            self.config.hidden_size,
            self.config.q_width(),
            self.config.kv_width(),
        );
        let fused = format!("{p}.attn_qkv.weight");
        if self.gguf.has_tensor(&fused) {
            let total = qw + 2 * kvw;
            return Ok(vec![
                self.rows_of(&fused, total, h, 0..qw)?,
                self.rows_of(&fused, total, h, qw..qw + kvw)?,
                self.rows_of(&fused, total, h, qw + kvw..total)?,
            ]);
        }
        Ok(vec![
            self.matrix(&format!("{p}.attn_q.weight"), qw, h)?,
            self.matrix(&format!("{p}.attn_k.weight"), kvw, h)?,
            self.matrix(&format!("{p}.attn_v.weight"), kvw, h)?,
        ])
    }

    /// The feed-forward network of block `p`: a gated MLP (its gate and up projections
    /// separate, or fused in `ffn_up` with the gate first, as Phi-3 has them), or a router
    /// and its experts.
    pub(super) fn feed_forward(&self, p: &str) -> Result<FeedForward> {
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        let activation = self.config.activation;
        let Some(routing) = self.config.experts else {
            let up = format!("{p}.ffn_up.weight");
            let (gate, up) = if self.gguf.has_tensor(&format!("{p}.ffn_gate.weight")) {
                (
                    self.matrix(&format!("{p}.ffn_gate.weight"), i, h)?,
                    self.matrix(&up, i, h)?,
                )
            } else {
                (
                    self.rows_of(&up, 2 * i, h, 0..i)?,
                    self.rows_of(&up, 2 * i, h, i..2 * i)?,
                )
            };
            return Ok(FeedForward::Dense(GatedMlp {
                gate_up: GatedProjection::with_activation(gate, up, activation)?,
                down: self.matrix(&format!("{p}.ffn_down.weight"), h, i)?,
            }));
        };
        let (count, width) = (routing.count, routing.feed_forward_length);
        let (gate, up, down) = (
            format!("{p}.ffn_gate_exps.weight"),
            format!("{p}.ffn_up_exps.weight"),
            format!("{p}.ffn_down_exps.weight"),
        );
        self.expect_shape(&gate, &[count, width, h])?;
        self.expect_shape(&up, &[count, width, h])?;
        self.expect_shape(&down, &[count, h, width])?;
        let mut experts = Vec::with_capacity(count);
        for e in 0..count {
            let (mlp_rows, out_rows) = (e * width..(e + 1) * width, e * h..(e + 1) * h);
            experts.push(GatedMlp {
                gate_up: GatedProjection::with_activation(
                    WeightMatrix::from_gguf_rows(self.gguf, &gate, mlp_rows.clone())?,
                    WeightMatrix::from_gguf_rows(self.gguf, &up, mlp_rows)?,
                    activation,
                )?,
                down: WeightMatrix::from_gguf_rows(self.gguf, &down, out_rows)?,
            });
        }
        let ffn = FeedForward::Experts {
            router: self.router(&format!("{p}.ffn_gate_inp.weight"), count, h)?,
            experts,
            routing,
        };
        ffn.check(h)
            .map_err(|reason| Error::invalid_file(self.gguf.path(), reason))?;
        Ok(ffn)
    }

    /// The norm `{name}.weight` (and `{name}.bias` for LayerNorm).
    pub(super) fn norm(&self, name: &str, width: usize) -> Result<Norm> {
        let weight = self.vector(&format!("{name}.weight"), width)?;
        let eps = self.config.norm_eps;
        Ok(match self.config.norm {
            NormKind::Rms => Norm::Rms { weight, eps },
            NormKind::Layer => Norm::Layer {
                weight,
                bias: self.optional_vector(&format!("{name}.bias"), width)?,
                eps,
            },
        })
    }
}
