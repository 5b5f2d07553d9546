//! Link flags of the `loglake` binary.
//!
//! On GNU/Linux the binary is linked with packed relative relocations (`DT_RELR`, GNU ld 2.38
//! and glibc 2.36 on): a position-independent executable of this size carries ~15 MB of
//! `R_X86_64_RELATIVE` entries that the loader reads at every start, and they stayed resident
//! for the process's life, outside every budget. Packed, they take ~130 KB; the binary stays a
//! PIE (address-space randomisation kept). An older linker ignores the option with a warning;
//! ld does not pack against a glibc without `GLIBC_ABI_DT_RELR`, so the binary still runs there.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
