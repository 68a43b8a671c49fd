//! Model architectures, one file per architecture; their CPU kernels are in [`crate::cpu`].

pub mod llama;
pub mod logits;

pub use logits::Logits;
