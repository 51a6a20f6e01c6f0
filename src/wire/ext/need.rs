//! NEED: ids of the addressee's own states the sender lacks, or holds at another version
//! (found by comparing an IDS list with its copy); the addressee answers with full
//! updates of those states.
//!
//! ```text
//!  0       2       4
//! +-------+-------+-------------------------------+ ...
//! | count |  pad  | id (BE64)                     | (count times)
//! +-------+-------+-------------------------------+ ...
//! ```

use super::{check_list, read_u64s, Error, Result};

/// The most ids per frame (1028 bytes of body).
pub const MAX_IDS_PER_FRAME: usize = 128;

/// Bytes before the ids.
pub const HEAD: usize = 4;

/// NEED body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NeedRepr {
    pub ids: Vec<u64>,
}

impl NeedRepr {
    pub fn parse(body: &[u8]) -> Result<NeedRepr> {
        if body.len() < HEAD {
            return Err(Error::BadBody {
                kind: "NEED",
                need: HEAD,
                have: body.len(),
            });
        }
        let count = usize::from(u16::from_be_bytes([body[0], body[1]]));
        check_list("NEED", body, HEAD, 8, count, MAX_IDS_PER_FRAME)?;
        Ok(NeedRepr {
            ids: read_u64s(&body[HEAD..]),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEAD + 8 * self.ids.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes. Panics past
    /// [`MAX_IDS_PER_FRAME`].
    pub fn emit(&self, out: &mut [u8]) {
        assert!(self.ids.len() <= MAX_IDS_PER_FRAME);
        out[..2].copy_from_slice(&(self.ids.len() as u16).to_be_bytes());
        out[2..HEAD].fill(0);
        for (id, c) in self.ids.iter().zip(out[HEAD..].chunks_exact_mut(8)) {
            c.copy_from_slice(&id.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr};

    static FRAME: [u8; 28] = [
        0xc5, 0x0a, 0x00, 0x1c, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // header
        0, 1, 0, 0, // one id
        0x80, 0, 0, 0, 0, 0, 0, 1,
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame.body,
            Body::Need(NeedRepr {
                ids: vec![0x8000_0000_0000_0001]
            })
        );
        let mut buf = [0xa5u8; 28];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }
}
