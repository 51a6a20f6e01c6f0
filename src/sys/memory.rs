//! A hint to the processor about memory the memory table is about to use: it changes
//! no byte of it and no outcome, only how soon it is in the cache.
//!
//! (Transparent huge pages for the table, `madvise(MADV_HUGEPAGE)`, were tried against
//! its page faults: on a kernel set to compact memory for advised regions the first
//! million states cost more system time, not less.)

/// Starts loading the cache line of `value` into the caches, without waiting for it:
/// a lookup soon after then finds it there. Several in a row overlap their misses,
/// where loads that are used at once would wait for each in turn. Nothing elsewhere
/// than on x86-64.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetch` is a hint: it reads no byte into the program and cannot fault
    // (an address of no mapping is ignored), and `value` is a valid reference anyway.
    // SSE, which the instruction needs, is part of every x86-64 processor.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
