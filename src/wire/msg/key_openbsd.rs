//! OpenBSD state key (`struct pfsync_state_key`), 40 bytes: addresses and ports, plus
//! the routing domain and address family of this key.

use crate::wire::codec::{wire_struct, PfAddr};

wire_struct! {
    /// OpenBSD `struct pfsync_state_key`.
    KeyOpenBsdPacket, KeyOpenBsdRepr, size 40;
    /// Addresses; index 0 is the packet source for `direction in`.
    addr / set_addr: [PfAddr; 2] = 0..32;
    /// Ports, or ICMP id.
    port / set_port: [u16; 2] = 32..36;
    /// Routing domain.
    rdomain / set_rdomain: u16 = 36..38;
    /// Address family of this key (0: the state's `af`).
    af / set_af: u8 = 38..39;
    [pad] _pad = 39..40;
}
