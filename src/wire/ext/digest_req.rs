//! DIGEST_REQ: the buckets of a DIGEST that differ from the receiver's copy; the
//! digest's creator answers each with IDS.
//!
//! ```text
//!  0               4       6       8
//! +---------------+-------+-------+-------+-------+ ...
//! | round (BE32)  | count |  pad  | bucket (BE16) | (count times)
//! +---------------+-------+-------+-------+-------+ ...
//! ```

use super::{check_list, Error, Result};

/// Bytes before the bucket numbers.
pub const HEAD: usize = 8;
/// The most buckets one request names; a sender answers at most this many per request.
pub const MAX_REQ_BUCKETS: usize = 256;

/// DIGEST_REQ body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestReqRepr {
    /// The round of the DIGEST this answers.
    pub round: u32,
    pub buckets: Vec<u16>,
}

impl DigestReqRepr {
    pub fn parse(body: &[u8]) -> Result<DigestReqRepr> {
        if body.len() < HEAD {
            return Err(Error::BadBody {
                kind: "DIGEST_REQ",
                need: HEAD,
                have: body.len(),
            });
        }
        let round = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
        let count = usize::from(u16::from_be_bytes([body[4], body[5]]));
        check_list("DIGEST_REQ", body, HEAD, 2, count, MAX_REQ_BUCKETS)?;
        let buckets = body[HEAD..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        Ok(DigestReqRepr { round, buckets })
    }

    pub fn buffer_len(&self) -> usize {
        HEAD + 2 * self.buckets.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes. Panics past
    /// [`MAX_REQ_BUCKETS`].
    pub fn emit(&self, out: &mut [u8]) {
        assert!(self.buckets.len() <= MAX_REQ_BUCKETS);
        out[..4].copy_from_slice(&self.round.to_be_bytes());
        out[4..6].copy_from_slice(&(self.buckets.len() as u16).to_be_bytes());
        out[6..HEAD].fill(0);
        for (b, c) in self.buckets.iter().zip(out[HEAD..].chunks_exact_mut(2)) {
            c.copy_from_slice(&b.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr};

    static FRAME: [u8; 28] = [
        0xc5, 0x08, 0x00, 0x1c, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // header
        0, 0, 0, 9, 0, 2, 0, 0, // round 9, two buckets
        0x00, 0x03, 0x00, 0xff,
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame.body,
            Body::DigestReq(DigestReqRepr {
                round: 9,
                buckets: vec![3, 255]
            })
        );
        let mut buf = [0xa5u8; 28];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }
}
