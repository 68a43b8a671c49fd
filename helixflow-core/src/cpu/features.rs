//! Run-time detection of the instruction sets the kernels use.

use std::sync::OnceLock;

/// Whether this CPU has AVX2, FMA and F16C (every x86-64 CPU since Haswell does).
pub fn has_avx2_fma() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect_avx2_fma)
}

#[cfg(target_arch = "x86_64")]
fn detect_avx2_fma() -> bool {
    // `HELIXFLOW_NO_SIMD` forces the scalar reference path, for testing and comparison.
    std::env::var_os("HELIXFLOW_NO_SIMD").is_none()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_avx2_fma() -> bool {
    false
}
