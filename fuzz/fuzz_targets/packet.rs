//! Feeds arbitrary bytes to the pfsync packet reader as both families would receive
//! them, and checks more than "no panic": every record the reader accepts emits back to
//! the bytes it came from (up to the fields it ignores) and re-parses to itself, and a
//! builder of the reader's dialect either takes it or refuses it with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::wire::{Dialect, Item, Message, PacketBuilder, PacketReader, Pushed, RawItem};

fn check_round_trip(dialect: Dialect, message: &Message) {
    let mut buf = vec![0u8; message.buffer_len()];
    message.emit_bytes(&mut buf);
    let again = Message::parse(message.action(), dialect.family(), &buf)
        .expect("a parsed message has a record")
        .expect("an emitted record parses");
    assert_eq!(&again, message, "parse(emit(x)) != x");
    let mut builder = PacketBuilder::new(dialect, 65535);
    match builder.push(message) {
        Ok(Pushed::Added) => {
            let packet = builder.finish().expect("one message was pushed");
            let reader =
                PacketReader::new_as(&packet, dialect).expect("our packet has a valid header");
            let back: Vec<_> = reader.messages().collect();
            assert_eq!(back, vec![Ok(*message)], "a built packet reads back");
        }
        Ok(Pushed::Full) => panic!("one record cannot fill a 64 KiB packet"),
        // Records the receiving dialect accepted but the sending one cannot carry
        // (e.g. a FreeBSD 1301 DEL, refused on send by 14+) are fine to refuse.
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let readers = [
        PacketReader::new(data),
        PacketReader::new_as(data, Dialect::FreeBsd1301),
        PacketReader::new_as(data, Dialect::FreeBsd1400),
    ];
    for reader in readers.into_iter().flatten() {
        let dialect = reader.dialect();
        let raw: Vec<_> = reader.raw_items().collect();
        let parsed: Vec<_> = reader.items().collect();
        assert_eq!(raw.len(), parsed.len(), "both walks see the same items");
        for (r, p) in raw.iter().zip(&parsed) {
            match (r, p) {
                (Ok(RawItem::Record(rec)), Ok(Item::Message(m))) => {
                    assert_eq!(rec.message().as_ref(), Ok(m));
                    check_round_trip(dialect, m);
                }
                (Ok(RawItem::Eof), Ok(Item::Eof)) => {}
                (Ok(RawItem::Skipped { .. }), Ok(Item::Skipped { .. })) => {}
                (Err(a), Err(b)) => {
                    assert_eq!(a, b);
                    // Every refusal names a kernel counter.
                    let _ = a.counter().name();
                }
                other => panic!("walks disagree: {other:?}"),
            }
        }
    }
});
