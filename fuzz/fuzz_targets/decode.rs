//! The whole `pfsyncd decode` path on arbitrary bytes: the capture readers (pcap and
//! pcapng), the link layers, and both printers (text and JSON). The same bytes are also
//! printed as a bare pfsync payload, so the printers see hostile packets directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::capture::{decapsulate, CaptureReader};
use pfsyncd::wire::pretty::{self, Envelope};

fn print(envelope: &Envelope, payload: &[u8]) {
    let text = pretty::text(envelope, payload).to_string();
    assert!(!text.is_empty(), "every packet prints at least its header line");
    let json = pretty::json(envelope, payload);
    assert!(json.is_object(), "one JSON object per packet");
}

fuzz_target!(|data: &[u8]| {
    let bare = Envelope {
        frame: None,
        time: None,
        ip: None,
    };
    print(&bare, data);
    let Ok(mut reader) = CaptureReader::new(data) else {
        return;
    };
    // Every frame consumes input, so this ends; the bound is a safety net.
    for _ in 0..100_000 {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                let envelope = Envelope {
                    frame: Some(frame.number),
                    time: frame.time,
                    ip: None,
                };
                if let Some(payload) = decapsulate(frame.link_type, frame.data)
                    .ok()
                    .and_then(|n| n.pfsync_payload())
                {
                    print(&envelope, payload);
                }
            }
            Err(e) if e.is_recoverable() => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("a capture of at most a few KB yielded 100000 frames");
});
