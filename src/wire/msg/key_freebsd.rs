//! FreeBSD state key (`struct pfsync_state_key`), 36 bytes: addresses and ports only.

use crate::wire::codec::{wire_struct, PfAddr};

wire_struct! {
    /// FreeBSD `struct pfsync_state_key`.
    KeyFreeBsdPacket, KeyFreeBsdRepr, size 36;
    /// Addresses; index 0 is the packet source for `direction in`.
    addr / set_addr: [PfAddr; 2] = 0..32;
    /// Ports, or ICMP id.
    port / set_port: [u16; 2] = 32..36;
}
