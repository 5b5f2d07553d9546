//! The `loglake` binary's global allocator: jemalloc for the whole process, librdkafka and
//! zstd included (the unprefixed `malloc` interposes glibc's, as an `LD_PRELOAD` would).
//! glibc's allocator handed the memory of each flush's Arrow buffers, and of librdkafka's
//! per-message ops freed on another thread, back to the kernel only to fault it in again: a
//! fifth of ingest CPU per MB. See ARCHITECTURE.md, "Choices made here".
//!
//! A crate of its own, not a static in the binary's crate, because the allocator entry points
//! the compiler generates are compiled with the optimisation of the crate that declares the
//! `#[global_allocator]`: in the binary's crate (built without optimisation in the everyday
//! build) every allocation paid for unoptimised layout checks and calls, ~3 % of ingest CPU.
//! Only the binary links this crate; test binaries keep the system allocator (or their own
//! counting one).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
