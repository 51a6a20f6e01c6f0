//! The messages between the daemon's two processes, as the parent reads what a
//! compromised engine process could send it (and the other way): arbitrary bytes cut
//! into frames as the channel cuts them. Nothing may panic, and every message that
//! decodes must encode into a frame that decodes to the same message; a frame of table
//! records reads the same through `decode_record_ops` (the parent's) as through `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::daemon::privsep::message::{FRAME_HEADER, MAX_BODY};
use pfsyncd::daemon::privsep::{ToEngine, ToParent};

/// The kind and body of the one frame in `frame`.
fn split(frame: &[u8]) -> (u8, &[u8]) {
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(frame.len(), FRAME_HEADER + len, "the length field covers the body");
    (frame[4], &frame[FRAME_HEADER..])
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while rest.len() >= FRAME_HEADER {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        // The channel refuses longer frames; shorter input is cut to what is there.
        let len = len.min(MAX_BODY).min(rest.len() - FRAME_HEADER);
        let kind = rest[4];
        let body = &rest[FRAME_HEADER..FRAME_HEADER + len];
        rest = &rest[FRAME_HEADER + len..];
        // The parent's way to a frame of records agrees with `decode`: the same
        // operations, or the same error.
        let mut ops = Vec::new();
        if let Some(r) = ToParent::decode_record_ops(kind, body, &mut ops) {
            match (r, ToParent::decode(kind, body)) {
                (Ok(seen), Ok(ToParent::TableRecords { seen: s, ops: whole })) => {
                    assert_eq!(seen, s);
                    let ops: Vec<_> = ops.iter().map(|op| op.table_op().expect("checked")).collect();
                    assert_eq!(ops, whole);
                }
                (Err(e), Err(whole)) => assert_eq!(e, whole),
                (r, whole) => panic!("{r:?} but decode says {whole:?}"),
            }
        }
        if let Ok(m) = ToParent::decode(kind, body) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (k, b) = split(&out);
            assert_eq!(ToParent::decode(k, b).as_ref(), Ok(&m));
        }
        if let Ok(m) = ToEngine::decode(kind, body) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (k, b) = split(&out);
            assert_eq!(ToEngine::decode(k, b).as_ref(), Ok(&m));
        }
    }
});
