//! The building blocks every message view is made of: big-endian field access, the
//! fixed-size name and address types, and the `wire_struct!` macro that declares a
//! message once and derives its field table, view and `Repr` from that one list.

use core::fmt;

/// A field is a byte range inside a message, as in smoltcp.
pub type Field = core::ops::Range<usize>;

/// A value with a fixed size on the wire, stored big-endian (network order) as the
/// kernels store it in the structures they send.
///
/// `read` and `write` are given a slice of exactly `LEN` bytes; the views guarantee it
/// (their length is checked once in `new_checked`), so neither can panic for them.
pub trait WireField: Sized + Copy {
    /// Size on the wire in bytes.
    const LEN: usize;
    /// Reads the value from exactly `LEN` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Writes the value into exactly `LEN` bytes.
    fn write(&self, bytes: &mut [u8]);
}

macro_rules! impl_wire_int {
    ($($t:ty),*) => {$(
        impl WireField for $t {
            const LEN: usize = core::mem::size_of::<$t>();
            #[inline]
            fn read(bytes: &[u8]) -> Self {
                let mut raw = [0u8; core::mem::size_of::<$t>()];
                raw.copy_from_slice(&bytes[..Self::LEN]);
                <$t>::from_be_bytes(raw)
            }
            #[inline]
            fn write(&self, bytes: &mut [u8]) {
                bytes[..Self::LEN].copy_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}
impl_wire_int!(u8, u16, u32, u64, i32);

impl<T: WireField + Default, const N: usize> WireField for [T; N] {
    const LEN: usize = T::LEN * N;
    #[inline]
    fn read(bytes: &[u8]) -> Self {
        core::array::from_fn(|i| T::read(&bytes[i * T::LEN..(i + 1) * T::LEN]))
    }
    #[inline]
    fn write(&self, bytes: &mut [u8]) {
        for (i, v) in self.iter().enumerate() {
            v.write(&mut bytes[i * T::LEN..(i + 1) * T::LEN]);
        }
    }
}

/// A NUL-padded C string of `N` bytes (`char ifname[IFNAMSIZ]`, `char tagname[64]`).
///
/// Kept as the raw bytes so that `parse(emit(x)) == x` holds for any content; `as_str`
/// gives the text up to the first NUL.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name<const N: usize>(pub [u8; N]);

/// An interface name (`IFNAMSIZ` = 16 on both BSDs).
pub type IfName = Name<16>;
/// A pf tag name (`PF_TAG_NAME_SIZE` = 64).
pub type TagName = Name<64>;

impl<const N: usize> Name<N> {
    /// The empty name (all NUL).
    pub const EMPTY: Self = Name([0; N]);

    /// Builds a name from text; `None` if it does not fit with its terminating NUL or
    /// contains a NUL itself.
    pub fn new(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() >= N || bytes.contains(&0) {
            return None;
        }
        let mut raw = [0u8; N];
        raw[..bytes.len()].copy_from_slice(bytes);
        Some(Name(raw))
    }

    /// The bytes up to the first NUL (all of them if there is none).
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        &self.0[..end]
    }

    /// The name as text; bytes that are not UTF-8 are replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    /// True when the name is empty.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl<const N: usize> Default for Name<N> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<const N: usize> fmt::Display for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl<const N: usize> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl<const N: usize> WireField for Name<N> {
    const LEN: usize = N;
    #[inline]
    fn read(bytes: &[u8]) -> Self {
        let mut raw = [0u8; N];
        raw.copy_from_slice(&bytes[..N]);
        Name(raw)
    }
    #[inline]
    fn write(&self, bytes: &mut [u8]) {
        bytes[..N].copy_from_slice(&self.0);
    }
}

/// `struct pf_addr`: 16 bytes, an IPv4 address in the first 4 with the rest zero, or an
/// IPv6 address. Which one is told by the address family next to it, not by the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PfAddr(pub [u8; 16]);

impl PfAddr {
    /// The all-zero address.
    pub const ZERO: PfAddr = PfAddr([0; 16]);

    /// From an IPv4 address (first 4 bytes, rest zero).
    pub fn from_v4(a: std::net::Ipv4Addr) -> Self {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&a.octets());
        PfAddr(raw)
    }

    /// From an IPv6 address.
    pub fn from_v6(a: std::net::Ipv6Addr) -> Self {
        PfAddr(a.octets())
    }

    /// From any address.
    pub fn from_ip(a: std::net::IpAddr) -> Self {
        match a {
            std::net::IpAddr::V4(v4) => Self::from_v4(v4),
            std::net::IpAddr::V6(v6) => Self::from_v6(v6),
        }
    }

    /// The first 4 bytes as IPv4.
    pub fn v4(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(self.0[0], self.0[1], self.0[2], self.0[3])
    }

    /// All 16 bytes as IPv6.
    pub fn v6(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::from(self.0)
    }

    /// True when every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Debug for PfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0[4..] == [0; 12] {
            write!(f, "{}", self.v4())
        } else {
            write!(f, "{}", self.v6())
        }
    }
}

impl WireField for PfAddr {
    const LEN: usize = 16;
    #[inline]
    fn read(bytes: &[u8]) -> Self {
        PfAddr(<[u8; 16]>::read(bytes))
    }
    #[inline]
    fn write(&self, bytes: &mut [u8]) {
        bytes[..16].copy_from_slice(&self.0);
    }
}

/// Declares one kernel structure: its `field` offset table, a zero-copy view with a
/// getter and a setter per field, and a `Repr` with `parse`, `emit` and `buffer_len`.
///
/// Offsets are written as named ranges, once. Compile-time assertions check that each
/// range is as long as its type and that the ranges, pads included, tile the whole
/// structure without gap or overlap, so a typo in an offset does not compile.
/// Fields named `_...` are padding: not in the `Repr`, written as zero, ignored on read.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        $view:ident, $repr:ident, size $size:expr;
        $( $(#[$fmeta:meta])* $fname:ident / $setter:ident : $fty:ty = $start:literal .. $end:literal ; )*
        $( [pad] $pname:ident = $pstart:literal .. $pend:literal ; )*
    ) => {
        /// Byte offsets of every field, as in the kernel header.
        #[allow(non_upper_case_globals, dead_code)]
        pub mod field {
            use $crate::wire::codec::Field;
            $( #[doc = concat!("`", stringify!($fname), "`")] pub const $fname: Field = $start..$end; )*
            $( #[doc = "padding"] pub const $pname: Field = $pstart..$pend; )*
        }

        /// Size of the structure on the wire.
        pub const SIZE: usize = $size;

        const _: () = {
            use $crate::wire::codec::WireField;
            $( assert!($end - $start == <$fty as WireField>::LEN, concat!("field ", stringify!($fname), " has the wrong length")); )*
            // The fields and pads, sorted by offset, must cover 0..SIZE exactly once.
            let ranges: &[(usize, usize)] = &[ $( ($start, $end), )* $( ($pstart, $pend), )* ];
            let mut covered = 0;
            let mut pos = 0;
            while pos < $size {
                let mut found = false;
                let mut i = 0;
                while i < ranges.len() {
                    if ranges[i].0 == pos {
                        assert!(!found, "two fields start at the same offset");
                        found = true;
                        covered += ranges[i].1 - ranges[i].0;
                        pos = ranges[i].1;
                        break;
                    }
                    i += 1;
                }
                assert!(found, "a gap in the field table");
            }
            assert!(covered == $size && pos == $size, "the field table does not end at SIZE");
        };

        $(#[$meta])*
        #[doc = ""]
        #[doc = "A zero-copy view. Once `new_checked` succeeded no accessor can panic."]
        #[derive(Debug, Clone, Copy)]
        pub struct $view<T> {
            buffer: T,
        }

        // A `len` field (header, subheader) is a wire field, not a container length.
        #[allow(clippy::len_without_is_empty)]
        impl<T: AsRef<[u8]>> $view<T> {
            /// Wraps a buffer without checking its length; accessors may then panic.
            /// Use only on buffers the caller sized (emitting).
            pub const fn new_unchecked(buffer: T) -> Self {
                $view { buffer }
            }

            /// Wraps a buffer after checking it holds the whole structure.
            pub fn new_checked(buffer: T) -> $crate::wire::Result<Self> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// Checks the buffer is at least `SIZE` bytes long.
            pub fn check_len(&self) -> $crate::wire::Result<()> {
                let have = self.buffer.as_ref().len();
                if have < SIZE {
                    Err($crate::wire::Error::BadLength {
                        what: stringify!($repr),
                        need: SIZE,
                        have,
                    })
                } else {
                    Ok(())
                }
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The structure's bytes as a fixed-size array. Panics only on an unchecked
            /// view of a too short buffer.
            #[inline]
            fn fixed(&self) -> &[u8; SIZE] {
                self.buffer.as_ref()[..SIZE]
                    .try_into()
                    .expect("a checked view holds SIZE bytes")
            }

            $(
                $(#[$fmeta])*
                #[inline]
                pub fn $fname(&self) -> $fty {
                    <$fty as $crate::wire::codec::WireField>::read(&self.buffer.as_ref()[field::$fname])
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $(
                #[doc = concat!("Sets `", stringify!($fname), "`.")]
                #[inline]
                pub fn $setter(&mut self, value: $fty) {
                    <$fty as $crate::wire::codec::WireField>::write(&value, &mut self.buffer.as_mut()[field::$fname]);
                }
            )*

            /// Zeroes the whole structure (pads included).
            pub fn clear(&mut self) {
                self.buffer.as_mut()[..SIZE].fill(0);
            }
        }

        $(#[$meta])*
        #[doc = ""]
        #[doc = "The parsed form: every field but the pads, in host representation."]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $repr {
            $( $(#[$fmeta])* pub $fname: $fty, )*
        }

        impl $repr {
            /// Reads every field from a checked view.
            #[inline]
            pub fn parse<T: AsRef<[u8]>>(view: &$view<T>) -> Self {
                Self::parse_array(view.fixed())
            }

            /// Reads every field from exactly the structure's bytes. The array's size is
            /// known at compile time, so the per-field bounds checks fold away.
            #[inline]
            pub fn parse_array(bytes: &[u8; SIZE]) -> Self {
                $repr { $( $fname: <$fty as $crate::wire::codec::WireField>::read(&bytes[field::$fname]), )* }
            }

            /// Reads every field from a buffer, checking its length first.
            #[inline]
            pub fn parse_bytes(bytes: &[u8]) -> $crate::wire::Result<Self> {
                Ok(Self::parse(&$view::new_checked(bytes)?))
            }

            /// Bytes `emit` writes.
            pub const fn buffer_len(&self) -> usize {
                SIZE
            }

            /// Writes every byte of the structure, pads as zero. Panics only if the view's
            /// buffer is shorter than `buffer_len()`.
            #[inline]
            pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, view: &mut $view<T>) {
                view.clear();
                $( view.$setter(self.$fname); )*
            }

            /// Emits into the first `SIZE` bytes of `bytes`, pads as zero.
            #[inline]
            pub fn emit_bytes(&self, bytes: &mut [u8]) {
                let out: &mut [u8; SIZE] = (&mut bytes[..SIZE])
                    .try_into()
                    .expect("the slice is SIZE bytes");
                out.fill(0);
                $( <$fty as $crate::wire::codec::WireField>::write(&self.$fname, &mut out[field::$fname]); )*
            }
        }

        impl $crate::wire::codec::WireField for $repr {
            const LEN: usize = SIZE;
            #[inline]
            fn read(bytes: &[u8]) -> Self {
                Self::parse(&$view::new_unchecked(bytes))
            }
            #[inline]
            fn write(&self, bytes: &mut [u8]) {
                self.emit_bytes(bytes)
            }
        }
    };
}
pub(crate) use wire_struct;
