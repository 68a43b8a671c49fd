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

/// Whether this CPU also has AVX-512 VNNI on 256-bit registers (`vpdpbusd ymm`), which does
/// the byte products of a block in one instruction instead of two with identical sums.
/// `HELIXFLOW_NO_AVX512` turns it off, to compare with the AVX2 path.
pub fn has_avx512_vnni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect_avx512_vnni)
}

#[cfg(target_arch = "x86_64")]
fn detect_avx512_vnni() -> bool {
    has_avx2_fma()
        && std::env::var_os("HELIXFLOW_NO_AVX512").is_none()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_avx512_vnni() -> bool {
    false
}

/// Whether this CPU has AVX-512F on 512-bit registers (the f32 products of [`crate::sgemm`]);
/// `HELIXFLOW_NO_AVX512` turns it off.
pub fn has_avx512f() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect_avx512f)
}

#[cfg(target_arch = "x86_64")]
fn detect_avx512f() -> bool {
    has_avx2_fma()
        && std::env::var_os("HELIXFLOW_NO_AVX512").is_none()
        && is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_avx512f() -> bool {
    false
}

/// Whether this CPU has NEON (every aarch64 CPU does; `HELIXFLOW_NO_SIMD` says no, which
/// forces the scalar reference path as on x86).
pub fn has_neon() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect_neon)
}

/// Whether this CPU also has the dotprod extension (`sdot`: Armv8.2-A onwards, optional
/// before Armv8.4-A), which sums four byte products per lane in one instruction.
/// `HELIXFLOW_NO_DOTPROD` turns it off, to compare with the plain NEON path.
pub fn has_neon_dotprod() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect_neon_dotprod)
}

#[cfg(target_arch = "aarch64")]
fn detect_neon() -> bool {
    std::env::var_os("HELIXFLOW_NO_SIMD").is_none()
        && std::arch::is_aarch64_feature_detected!("neon")
}

#[cfg(target_arch = "aarch64")]
fn detect_neon_dotprod() -> bool {
    has_neon()
        && std::env::var_os("HELIXFLOW_NO_DOTPROD").is_none()
        && std::arch::is_aarch64_feature_detected!("dotprod")
}

#[cfg(not(target_arch = "aarch64"))]
fn detect_neon() -> bool {
    false
}

#[cfg(not(target_arch = "aarch64"))]
fn detect_neon_dotprod() -> bool {
    false
}
