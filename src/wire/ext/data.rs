//! DATA: one whole pfsync packet, as the engine built it, under a per-sender sequence
//! number. The packet is opaque here; the receiver hands it to its engine.
//!
//! ```text
//!  0                               8
//! +-------------------------------+---------------------------------
//! | seq (BE64)                    | pfsync packet (header, subheaders, records) ...
//! +-------------------------------+---------------------------------
//! ```

use super::{Error, Result};

/// Bytes before the pfsync packet.
pub const SIZE: usize = 8;

/// DATA body: a sequence number and the pfsync packet it numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRepr<'a> {
    /// Per-sender sequence number, from 1, one per DATA whatever its addressee.
    pub seq: u64,
    /// The pfsync packet.
    pub packet: &'a [u8],
}

impl<'a> DataRepr<'a> {
    /// Parses a DATA body; an empty packet is refused (the sender never numbers one).
    pub fn parse(body: &'a [u8]) -> Result<DataRepr<'a>> {
        if body.len() <= SIZE {
            return Err(Error::BadBody {
                kind: "DATA",
                need: SIZE + 1,
                have: body.len(),
            });
        }
        let seq = u64::from_be_bytes(body[..SIZE].try_into().expect("8 bytes"));
        if seq == 0 {
            return Err(Error::BadValue {
                kind: "DATA",
                field: "seq",
                value: 0,
            });
        }
        Ok(DataRepr {
            seq,
            packet: &body[SIZE..],
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        SIZE + self.packet.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes.
    pub fn emit(&self, out: &mut [u8]) {
        out[..SIZE].copy_from_slice(&self.seq.to_be_bytes());
        out[SIZE..].copy_from_slice(self.packet);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr, Sender, DATA_OVERHEAD};

    static FRAME: [u8; 28] = [
        0xc5, 0x03, 0x00, 0x1c, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, // header
        0, 0, 0, 0, 0, 0, 0x10, 0x01, // seq 4097
        0x06, 0x00, 0x00, 0x04, // pfsync bytes (opaque here)
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame,
            FrameRepr {
                sender: Sender {
                    creator: 7,
                    boot: 1
                },
                body: Body::Data(DataRepr {
                    seq: 4097,
                    packet: &[6, 0, 0, 4]
                }),
            }
        );
        assert_eq!(frame.buffer_len() - 4, DATA_OVERHEAD);
        let mut buf = [0xa5u8; 28];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn seq_zero_and_empty_packet_are_refused() {
        let mut zero = FRAME;
        zero[16..24].fill(0);
        assert!(matches!(
            FrameRepr::parse(&zero),
            Err(Error::BadValue { field: "seq", .. })
        ));
        let mut empty = FRAME[..24].to_vec();
        empty[3] = 24;
        assert!(matches!(
            FrameRepr::parse(&empty),
            Err(Error::BadBody { .. })
        ));
    }
}
