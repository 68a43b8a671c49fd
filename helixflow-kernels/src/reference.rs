//! Which x86 build of ggml the arithmetic reproduces where that build's vector width shows in
//! the results.
//!
//! ggml's quantised dot products give the same bits whatever the build, but three things
//! depend on the width of its f32 vectors: the lanes the f16 dot products of attention add
//! up in (eight lanes with AVX2, sixteen with AVX-512, in both the single-token and the
//! prompt-batch kernels), the grouping of the softmax sum, and the vector exponential of
//! softmax and SiLU (its AVX-512 form rounds once more before scaling). Reference outputs
//! made by llama.cpp built one way are reproduced bit for bit only with that build's
//! arithmetic, which a model can be told to use on any x86 or Arm CPU (see
//! `CausalLm::set_ggml_build` in `helixflow-core`).

use std::str::FromStr;

/// The llama.cpp build whose vector arithmetic a model reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgmlBuild {
    /// Built for AVX2 without AVX-512 (eight-lane vectors). The default: the build the
    /// default model's reference outputs and the benchmark's peer come from.
    #[default]
    Avx2,
    /// Built with AVX-512 (sixteen-lane vectors).
    Avx512,
}

impl GgmlBuild {
    /// f32 lanes of the build's vectors.
    pub fn lanes(self) -> usize {
        match self {
            Self::Avx2 => 8,
            Self::Avx512 => 16,
        }
    }

    /// `HELIXFLOW_GGML_BUILD` (`avx2` or `avx512`), else the default; a value that names
    /// neither is reported on stderr and ignored.
    pub fn from_env() -> Self {
        match std::env::var("HELIXFLOW_GGML_BUILD") {
            Ok(value) => value.parse().unwrap_or_else(|e| {
                eprintln!("warning: HELIXFLOW_GGML_BUILD: {e}; using avx2");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }
}

impl FromStr for GgmlBuild {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx2" => Ok(Self::Avx2),
            "avx512" | "avx-512" => Ok(Self::Avx512),
            other => Err(format!("unknown ggml build `{other}` (avx2 or avx512)")),
        }
    }
}

impl std::fmt::Display for GgmlBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        })
    }
}
