//! Ioctl numbers as sys/ioccom.h builds them on the BSDs, for the numbers a header no
//! longer spells out (FreeBSD 15 hides DIOCGETSTATES and DIOCKILLSTATES).

/// `_IOWR(group, number, size)`: in and out, a 13-bit parameter length (both BSDs).
pub const fn iowr(group: u8, number: u8, size: usize) -> u32 {
    0xC000_0000 | (((size as u32) & 0x1fff) << 16) | ((group as u32) << 8) | number as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iowr_gives_the_numbers_of_the_headers() {
        // kernel-interface.md §1.2/1.3, from the headers' macros and struct sizes.
        assert_eq!(iowr(b'D', 25, 16), 0xC010_4419); // DIOCGETSTATES
        assert_eq!(iowr(b'D', 41, 224), 0xC0E0_4429); // DIOCKILLSTATES
        assert_eq!(iowr(b'D', 37, 242), 0xC0F2_4425); // FreeBSD DIOCADDSTATE
        assert_eq!(iowr(b'D', 37, 264), 0xC108_4425); // OpenBSD DIOCADDSTATE
    }
}
