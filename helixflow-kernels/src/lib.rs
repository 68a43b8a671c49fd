//! CPU kernels of the decoder step.
//!
//! The arithmetic follows ggml's x86 AVX2 path operation for operation (the same activation
//! quantisation, the same lane layout of every dot product and reduction, the same exponential
//! approximation), so greedy decoding reproduces llama.cpp's tokens rather than merely
//! resembling them: small quantised models are numerically fragile, and a last-bit difference
//! early in the network can move a logprob by tenths.
//!
//! Every kernel has a portable scalar form, which is the reference; where the CPU has AVX2 and
//! FMA the same operations run vectorised, giving bit-identical results, as do the AVX-512
//! VNNI kernels where the CPU has them and the NEON dot products of every format on aarch64
//! (tested under qemu by `scripts/test`). Where ggml's results depend on its build's vector
//! width (attention's f16 sums, softmax, SiLU), [`reference::GgmlBuild`] says which build to
//! reproduce.
//! On x86-64 those three formats are packed eight rows at a time at load ([`packed`]), whose
//! kernels share the scale products and the weight unpacking among eight outputs and still
//! compute each output in ggml's order, bit for bit.
//!
//! [`encoder`] and [`sgemm`] hold the kernels of f32 sentence encoders (element-wise
//! operations, and matrix products against weights packed at load), which need speed rather
//! than another program's bits.

pub mod dot;
pub mod encoder;
pub mod f32dot;
pub mod features;
pub mod format;
pub mod kquant;
pub mod math;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod packed;
pub mod pool;
pub mod quant;
pub mod reference;
pub mod sgemm;
#[cfg(test)]
mod test_support;
