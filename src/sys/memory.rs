//! Hints about memory the memory table is about to use, to the processor (load it into
//! the cache) and to the kernel (map its pages now): they change no byte of it and no
//! outcome, only how soon it is there.
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

/// Bytes a growing vector's pages are mapped ahead of its length, at most: a million
/// states' slots take 50 calls, and a table of a few states maps a few pages only (see
/// [`PopulateAhead::chunk_bytes`]).
const MOST_AHEAD: usize = 2 << 20;
const LEAST_AHEAD: usize = 64 << 10;

/// Maps the pages of a growing vector a chunk ahead of its length, in one call to the
/// kernel per chunk, rather than taking a page fault on the first write to each page:
/// the faults of a million states' table (some 35 000, each an exception, a page
/// cleared and charged) were a fifth of the receiving parent's time in a bulk, and
/// mapped in a batch they cost a third less. Linux only (`MADV_POPULATE_WRITE`, 5.14);
/// elsewhere, or where the kernel refuses it, the pages fault in as they are written,
/// as without it.
#[derive(Debug, Default)]
pub struct PopulateAhead {
    /// The vector's buffer when its pages were last mapped, and up to which element.
    buffer: usize,
    upto: usize,
}

impl PopulateAhead {
    /// Called before pushing onto `v`: when its length reaches what was mapped (or its
    /// buffer moved), makes room for a chunk more and maps its pages.
    #[inline]
    pub fn before_push<T>(&mut self, v: &mut Vec<T>) {
        if v.len() < self.upto && v.as_ptr() as usize == self.buffer {
            return;
        }
        self.next_chunk(v);
    }

    /// A chunk: an eighth of what the vector holds, between [`LEAST_AHEAD`] and
    /// [`MOST_AHEAD`] bytes.
    fn chunk_bytes<T>(v: &[T]) -> usize {
        (std::mem::size_of_val(v) / 8).clamp(LEAST_AHEAD, MOST_AHEAD)
    }

    #[cold]
    fn next_chunk<T>(&mut self, v: &mut Vec<T>) {
        let size = std::mem::size_of::<T>().max(1);
        let chunk = Self::chunk_bytes(v).div_ceil(size);
        // Room reserved up front (a bulk's announced size) is used to its end before
        // the vector grows: a chunk ahead past it would move the whole vector for the
        // chunk's sake. Reserving more than one push's room keeps the vector's doubling
        // (`reserve` grows it to at least twice its capacity when it grows).
        if v.len() == v.capacity() {
            v.reserve(chunk);
        }
        let ahead = chunk.min(v.capacity() - v.len());
        populate_spare(v, ahead);
        self.buffer = v.as_ptr() as usize;
        self.upto = v.len() + ahead;
    }
}

/// Maps the pages of the first `n` elements of `v`'s spare capacity now (see
/// [`PopulateAhead`]); nothing where that is not Linux's to do.
pub fn populate_spare<T>(v: &mut Vec<T>, n: usize) {
    let spare = v.spare_capacity_mut();
    let bytes = n.min(spare.len()) * std::mem::size_of::<T>();
    if bytes == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sysconf` reads a constant of the system and touches no memory of ours.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 && (p as usize).is_power_of_two() => p as usize,
            _ => return,
        };
        let start = spare.as_mut_ptr() as usize;
        let from = start & !(page - 1);
        let to = (start + bytes).next_multiple_of(page);
        // SAFETY: the pages from `from` to `to` each hold a byte of the vector's buffer
        // (its spare capacity, rounded out to whole pages), so they are mapped, writable
        // memory of this process. MADV_POPULATE_WRITE only maps them as a first write
        // would, without writing: no byte of them changes, whoever's it is. An error
        // (a kernel before 5.14 knows no such advice) leaves the pages to fault in as
        // they are written.
        let _ = unsafe {
            libc::madvise(
                from as *mut libc::c_void,
                to - from,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages are mapped ahead, the vector's bytes stay as they were and its growth
    /// stays a doubling.
    #[test]
    fn a_vector_populated_ahead_keeps_its_bytes_and_its_growth() {
        let mut ahead = PopulateAhead::default();
        let mut v: Vec<u64> = Vec::new();
        let mut reallocs = 0;
        for i in 0..1_000_000u64 {
            let before = v.as_ptr();
            ahead.before_push(&mut v);
            v.push(i * 7);
            reallocs += usize::from(before != v.as_ptr());
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 7));
        assert!(reallocs < 20, "{reallocs} reallocations");
        assert!(
            v.capacity() < 2 * v.len() + (MOST_AHEAD / 8),
            "{}",
            v.capacity()
        );
        let mut small: Vec<u8> = vec![1, 2, 3];
        populate_spare(&mut small, 1000);
        populate_spare(&mut small, 0);
        assert_eq!(small, [1, 2, 3]);
    }

    /// Room reserved up front is filled to its end before the vector moves, however
    /// close to its end a chunk ahead starts; past it, the vector grows as before.
    #[test]
    fn reserved_room_is_used_to_its_end_before_the_vector_moves() {
        let mut ahead = PopulateAhead::default();
        let mut v: Vec<u64> = Vec::with_capacity(100_000);
        let (buffer, room) = (v.as_ptr(), v.capacity());
        for i in 0..room as u64 {
            ahead.before_push(&mut v);
            v.push(i);
            assert_eq!(v.as_ptr(), buffer, "moved at {i}");
        }
        ahead.before_push(&mut v);
        v.push(0);
        assert!(v.capacity() >= 2 * room);
    }
}
