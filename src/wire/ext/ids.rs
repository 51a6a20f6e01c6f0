//! IDS: the ids of the sender's own states in one digest bucket, as of its `as_of`
//! seq; a bucket with many ids takes several frames (`part` of `parts`).
//!
//! ```text
//!  0               4       6       8       10      12              16              24
//! +---------------+-------+-------+-------+-------+---------------+---------------+
//! | round (BE32)  |bucket | part  | parts | count |      pad      | as-of (BE64)  |
//! +---------------+-------+-------+-------+-------+---------------+---------------+
//! | id (BE64) ... count times
//! ```

use super::{check_list, read_u64s, Error, Result};
use crate::wire::codec::wire_struct;

wire_struct! {
    /// IDS head.
    IdsPacket, IdsHead, size 24;
    /// The digest round this answers.
    round / set_round: u32 = 0..4;
    /// The bucket listed.
    bucket / set_bucket: u16 = 4..6;
    /// This frame's part, from 0.
    part / set_part: u16 = 6..8;
    /// Frames the bucket's list takes.
    parts / set_parts: u16 = 8..10;
    /// Ids in this frame.
    count / set_count: u16 = 10..12;
    /// The sender's highest DATA seq when it listed.
    as_of / set_as_of: u64 = 16..24;
    [pad] _pad = 12..16;
}

/// The most ids per frame (1048 bytes of body).
pub const MAX_IDS_PER_FRAME: usize = 128;

/// IDS body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdsRepr {
    pub round: u32,
    pub bucket: u16,
    pub part: u16,
    pub parts: u16,
    pub as_of: u64,
    pub ids: Vec<u64>,
}

impl IdsRepr {
    pub fn parse(body: &[u8]) -> Result<IdsRepr> {
        let head = IdsPacket::new_checked(body).map_err(|_| Error::BadBody {
            kind: "IDS",
            need: SIZE,
            have: body.len(),
        })?;
        let head = IdsHead::parse(&head);
        check_list(
            "IDS",
            body,
            SIZE,
            8,
            usize::from(head.count),
            MAX_IDS_PER_FRAME,
        )?;
        if head.part >= head.parts {
            return Err(Error::BadValue {
                kind: "IDS",
                field: "part",
                value: head.part.into(),
            });
        }
        Ok(IdsRepr {
            round: head.round,
            bucket: head.bucket,
            part: head.part,
            parts: head.parts,
            as_of: head.as_of,
            ids: read_u64s(&body[SIZE..]),
        })
    }

    pub fn buffer_len(&self) -> usize {
        SIZE + 8 * self.ids.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes. Panics past
    /// [`MAX_IDS_PER_FRAME`].
    pub fn emit(&self, out: &mut [u8]) {
        assert!(self.ids.len() <= MAX_IDS_PER_FRAME);
        IdsHead {
            round: self.round,
            bucket: self.bucket,
            part: self.part,
            parts: self.parts,
            count: self.ids.len() as u16,
            as_of: self.as_of,
        }
        .emit_bytes(&mut out[..SIZE]);
        for (id, c) in self.ids.iter().zip(out[SIZE..].chunks_exact_mut(8)) {
            c.copy_from_slice(&id.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr};

    static FRAME: [u8; 56] = [
        0xc5, 0x09, 0x00, 0x38, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // header
        0, 0, 0, 9, 0, 3, 0, 1, 0, 2, 0, 2, 0, 0, 0, 0, // round 9, bucket 3, part 1 of 2
        0, 0, 0, 0, 0, 0, 0x01, 0x00, // as of 256
        0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6, // ids 5, 6
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame.body,
            Body::Ids(IdsRepr {
                round: 9,
                bucket: 3,
                part: 1,
                parts: 2,
                as_of: 256,
                ids: vec![5, 6]
            })
        );
        let mut buf = [0xa5u8; 56];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn part_must_be_below_parts() {
        let mut bad = FRAME;
        bad[23] = 2;
        assert!(matches!(
            FrameRepr::parse(&bad),
            Err(Error::BadValue { field: "part", .. })
        ));
    }
}
