//! A memory-table slot's bytes (a state's compact encoding): in the slot when they fit,
//! else in the table's [`Spill`], a slab per size class with a free list.
//!
//! The slot list is one allocation, not one a state. Encodings longer than [`INLINE`]
//! (IPv6 addresses, names, routes) were boxed one by one, a `malloc` and a `free` each
//! and a malloc chunk's overhead (issue 14: the bench's receiving parent held 169 MB for
//! a million states, 154 MB with the spill). Here they go to fixed-width places on pages
//! of their width, and a place given back (a delete, an expiry, an update to another
//! width) is the next one taken of its width: a table churning states never holds more
//! places of a width than it once held states of that width.

/// Encodings up to this long are held in the slot itself (a synthetic IPv4 state's is
/// 40–70 bytes). 74: what fills a [`Bytes`] of the width a spilled one takes anyway
/// (a slot of 104 bytes).
pub(super) const INLINE: usize = 74;

/// The widths of the spill's places, for encodings longer than [`INLINE`]: steps of 16
/// bytes where IPv6 states' encodings fall (79–110 bytes for the synthetic ones), wider
/// ones for states with names and routes. An encoding longer than the last (only one of
/// padded varints can be, see `compact_record::MAX_RECORD_BYTES`) is boxed.
const WIDTHS: [usize; 10] = [80, 96, 112, 128, 160, 192, 256, 320, 384, 512];

/// The class of the boxed encodings, past [`WIDTHS`].
const BOXED: u8 = WIDTHS.len() as u8;

/// The class of each length up to the widest, by `(len - 1) / 16`.
const CLASS_BY_16: [u8; 32] = {
    let mut classes = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        // The narrowest width that holds `16 * (i + 1)` bytes, every length of the step.
        let longest = 16 * (i + 1);
        let mut c = 0;
        while WIDTHS[c] < longest {
            c += 1;
        }
        classes[i] = c as u8;
        i += 1;
    }
    classes
};

/// The class of an encoding of `len` (> [`INLINE`]) bytes.
#[inline]
fn class_of(len: usize) -> u8 {
    match CLASS_BY_16.get((len - 1) / 16) {
        Some(&c) => c,
        None => BOXED,
    }
}

/// A state's compact encoding: in the slot, or a place in the table's [`Spill`] (which
/// only the table's [`Spill`] can read, and which [`Bytes::release`] gives back: a slot's
/// bytes are released before the slot is dropped).
pub(super) enum Bytes {
    Inline {
        len: u8,
        data: [u8; INLINE],
    },
    Spilled {
        /// The encoding's length (boxed ones: 0, the box knows it).
        len: u16,
        /// The index of its width in [`WIDTHS`], or [`BOXED`].
        class: u8,
        /// Its place among those of its class.
        at: u32,
    },
}

impl Bytes {
    /// No bytes, inline: what a new slot holds until its bytes are written in place.
    pub(super) const EMPTY: Bytes = Bytes::Inline {
        len: 0,
        data: [0; INLINE],
    };

    /// Holds `bytes` now, written where the slot is when they fit inline (a `Bytes`
    /// built aside and moved into the slot was read back whole right after its bytes'
    /// narrow stores, a stall per state of a bulk), else in `spill`: in the place held
    /// already when it is of their width, or in another, the one held given back.
    #[inline]
    pub(super) fn set(&mut self, bytes: &[u8], spill: &mut Spill) {
        if bytes.len() <= INLINE {
            if let Bytes::Spilled { .. } = self {
                self.release(spill);
            }
            if let Bytes::Inline { len, data } = self {
                copy_short(data, bytes);
                *len = bytes.len() as u8;
            }
            return;
        }
        let wanted = class_of(bytes.len());
        match self {
            Bytes::Spilled { len, class, at } if *class == wanted && wanted != BOXED => {
                spill.rewrite(wanted, *at, bytes);
                *len = bytes.len() as u16;
            }
            _ => {
                self.release(spill);
                // The place alone comes back, not a `Bytes`: one returned through memory
                // and copied into the slot was read back whole right after its narrow
                // stores (see above).
                let at = spill.put(wanted, bytes);
                let len = if wanted == BOXED {
                    0
                } else {
                    bytes.len() as u16
                };
                *self = Bytes::Spilled {
                    len,
                    class: wanted,
                    at,
                };
            }
        }
    }

    /// The bytes, read from `spill` if they are there.
    #[inline]
    pub(super) fn as_slice<'a>(&'a self, spill: &'a Spill) -> &'a [u8] {
        match self {
            Bytes::Inline { len, data } => &data[..usize::from(*len)],
            Bytes::Spilled { len, class, at } => spill.get(*class, *at, usize::from(*len)),
        }
    }

    /// Gives the bytes' place in `spill` back, if they have one; no bytes after.
    pub(super) fn release(&mut self, spill: &mut Spill) {
        if let Bytes::Spilled { class, at, .. } = *self {
            spill.give_back(class, at);
            *self = Bytes::EMPTY;
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Inline { len, .. } => write!(f, "{len} bytes"),
            Bytes::Spilled { len, class, at } => {
                write!(f, "{len} bytes, spilled (class {class}, place {at})")
            }
        }
    }
}

/// Copies `from` (at most [`INLINE`] bytes) to the start of `to`, as a few fixed-width
/// moves that overlap rather than a call to `memcpy` for a length it must dispatch on
/// (a call per state of a bulk).
#[inline(always)]
pub(super) fn copy_short(to: &mut [u8; INLINE], from: &[u8]) {
    let n = from.len();
    if n >= 32 {
        to[..32].copy_from_slice(&from[..32]);
        if n > 64 {
            to[32..64].copy_from_slice(&from[32..64]);
        }
        to[n - 32..n].copy_from_slice(&from[n - 32..]);
    } else if n >= 16 {
        to[..16].copy_from_slice(&from[..16]);
        to[n - 16..n].copy_from_slice(&from[n - 16..]);
    } else {
        to[..n].copy_from_slice(from);
    }
}

/// Places on a page of a class: a page is 80–512 kB, its memory mapped as it is made.
/// Pages, not one vector a class: a vector copies what it holds each time it doubles.
const PAGE_PLACES: usize = 1024;

/// The places of one width.
#[derive(Debug, Default)]
struct Class {
    /// The places, [`PAGE_PLACES`] a page, each [`WIDTHS`]`[class]` bytes: place `at` is
    /// on page `at / PAGE_PLACES`.
    pages: Vec<Box<[u8]>>,
    /// Places ever taken (those given back included).
    made: u32,
    /// Places given back, taken again first.
    free: Vec<u32>,
}

impl Class {
    /// The bytes of place `at`, of `width` bytes.
    #[inline]
    fn place(&mut self, at: u32, width: usize) -> &mut [u8] {
        let (page, on) = (at as usize / PAGE_PLACES, at as usize % PAGE_PLACES);
        &mut self.pages[page][on * width..(on + 1) * width]
    }

    /// A new place, on a new page when the last is full.
    fn make(&mut self, width: usize) -> u32 {
        let at = self.made;
        if at as usize == self.pages.len() * PAGE_PLACES {
            let bytes = PAGE_PLACES * width;
            let mut page = Vec::with_capacity(bytes);
            crate::sys::memory::populate_spare(&mut page, bytes);
            page.resize(bytes, 0);
            self.pages.push(page.into_boxed_slice());
        }
        // Four billion places would be 300 GB.
        self.made += 1;
        at
    }
}

/// The long encodings of a table's slots; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Spill {
    classes: [Class; WIDTHS.len()],
    /// Encodings longer than the widest place, and the places of them given back.
    boxed: Vec<Option<Box<[u8]>>>,
    boxed_free: Vec<u32>,
}

impl Spill {
    /// A place of class `class` (that of `bytes`' length) holding `bytes`.
    fn put(&mut self, class: u8, bytes: &[u8]) -> u32 {
        if class == BOXED {
            let held = Some(Box::from(bytes));
            let at = match self.boxed_free.pop() {
                Some(at) => {
                    self.boxed[at as usize] = held;
                    at
                }
                None => {
                    self.boxed.push(held);
                    (self.boxed.len() - 1) as u32
                }
            };
            return at;
        }
        let width = WIDTHS[usize::from(class)];
        let c = &mut self.classes[usize::from(class)];
        let at = match c.free.pop() {
            Some(at) => at,
            None => c.make(width),
        };
        c.place(at, width)[..bytes.len()].copy_from_slice(bytes);
        at
    }

    /// Writes `bytes` (of class `class`, not [`BOXED`]) over place `at`.
    fn rewrite(&mut self, class: u8, at: u32, bytes: &[u8]) {
        let width = WIDTHS[usize::from(class)];
        self.classes[usize::from(class)].place(at, width)[..bytes.len()].copy_from_slice(bytes);
    }

    fn get(&self, class: u8, at: u32, len: usize) -> &[u8] {
        match self.classes.get(usize::from(class)) {
            Some(c) => {
                let (page, on) = (at as usize / PAGE_PLACES, at as usize % PAGE_PLACES);
                let start = on * WIDTHS[usize::from(class)];
                &c.pages[page][start..start + len]
            }
            None => self.boxed[at as usize].as_deref().unwrap_or_default(),
        }
    }

    fn give_back(&mut self, class: u8, at: u32) {
        match self.classes.get_mut(usize::from(class)) {
            Some(c) => c.free.push(at),
            None => {
                self.boxed[at as usize] = None;
                self.boxed_free.push(at);
            }
        }
    }

    /// Places taken, of each class and boxed (given-back ones not counted).
    #[cfg(test)]
    pub(super) fn places_taken(&self) -> usize {
        let classes: usize = self
            .classes
            .iter()
            .map(|c| c.made as usize - c.free.len())
            .sum();
        classes + self.boxed.len() - self.boxed_free.len()
    }

    /// Bytes the places take, taken or given back.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        let classes: usize = self
            .classes
            .iter()
            .flat_map(|c| &c.pages)
            .map(|p| p.len())
            .sum();
        let boxed: usize = self.boxed.iter().flatten().map(|b| b.len()).sum();
        classes + boxed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each length longer than inline goes to the narrowest width that holds it.
    #[test]
    fn each_length_takes_the_narrowest_width_that_holds_it() {
        for len in INLINE + 1..=600 {
            let class = class_of(len);
            match WIDTHS.get(usize::from(class)) {
                Some(&w) => {
                    assert!(w >= len, "{len} bytes in {w}");
                    assert!(class == 0 || WIDTHS[usize::from(class) - 1] < len, "{len}");
                }
                None => assert!(len > WIDTHS[WIDTHS.len() - 1], "{len} boxed"),
            }
        }
    }

    /// Bytes of every length, set over bytes of every other, read back as given; every
    /// place given back is taken again, so the spill holds no more places than the bytes
    /// held at most.
    #[test]
    fn bytes_read_back_as_set_over_any_others_and_places_are_reused() {
        let mut spill = Spill::default();
        let lengths = [
            0, 1, 16, 40, 70, 74, 75, 80, 81, 96, 97, 110, 300, 512, 513, 900,
        ];
        let pattern = |len: usize, seed: usize| -> Vec<u8> {
            (0..len).map(|i| (i * 31 + seed * 7 + 1) as u8).collect()
        };
        let mut held: Vec<Bytes> = (0..lengths.len()).map(|_| Bytes::EMPTY).collect();
        let mut most = 0;
        for round in 0..2000usize {
            let which = (round * 7) % held.len();
            let len = lengths[(round * 13 + round / 5) % lengths.len()];
            let bytes = pattern(len, round);
            held[which].set(&bytes, &mut spill);
            assert_eq!(held[which].as_slice(&spill), &bytes[..], "round {round}");
            let spilled = held
                .iter()
                .filter(|b| matches!(b, Bytes::Spilled { .. }))
                .count();
            assert_eq!(spill.places_taken(), spilled, "round {round}");
            most = most.max(spilled);
            if round % 50 == 49 {
                for b in &mut held {
                    b.release(&mut spill);
                }
                assert_eq!(spill.places_taken(), 0);
            }
        }
        // Never more places than the bytes spilled at once, whatever their classes.
        let room: usize = spill.classes.iter().map(|c| c.made as usize).sum();
        assert!(
            room <= most * WIDTHS.len(),
            "{room} places for {most} at most"
        );
        assert!(spill.boxed.len() <= most);
    }

    /// The fixed-width copy writes exactly the bytes given, at every length that fits.
    #[test]
    fn short_copies_are_whole_copies() {
        let from: Vec<u8> = (1..=INLINE as u8).collect();
        for n in 0..=INLINE {
            let mut to = [0xee; INLINE];
            copy_short(&mut to, &from[..n]);
            assert_eq!(&to[..n], &from[..n], "{n} bytes");
            assert!(
                to[n..].iter().all(|&b| b == 0xee),
                "{n} bytes: past the end"
            );
        }
    }
}
