//! CPU kernels of the decoder step: the quantised products, element-wise steps and block
//! formats of [`helixflow_kernels`], and on top of them weight matrices loaded from GGUF and
//! attention over the paged KV cache.

pub mod attention;
pub mod gated;
pub mod matmul;
mod output_parts;
mod step_order;

pub use attention::{attend_row, attend_row_online, AttentionGeometry};
pub use gated::GatedProjection;
pub use helixflow_kernels::{dot, features, math, packed, pool, quant};
pub use matmul::{MatrixGroup, StepOrder, WeightMatrix, TILED_MIN_ROWS};
