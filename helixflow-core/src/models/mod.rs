//! Model architectures. One file per architecture; shared CPU kernels in [`kernels`].

pub mod kernels;
pub mod llama;
