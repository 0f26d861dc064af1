//! Process memory settings every binary applies first thing.

/// Turns transparent huge pages off for this process. mimalloc asks for huge pages and
/// gives memory back to the OS a second after it goes unused, so in a busy service each
/// reuse faulted in (and zeroed) a whole 2 MiB page again: ~8% of the CPU of the
/// notification pipeline's process (BENCHMARKS.md, notifications). What is already
/// faulted in stays as it is, so call this before any real work.
pub fn no_transparent_huge_pages() {
    // Refused only by kernels without the setting (before 3.15), which then keep the
    // system's; nothing is logged as tracing is not set up yet.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}
