//! The generic netlink framing against a real kernel: Linux's generic netlink
//! controller answers the same family lookup FreeBSD's does (FreeBSD implements the
//! Linux protocol), so resolving a family here exercises the request encoding, the
//! multi-message reading and the attribute walk that pf's state dump uses.

#![cfg(target_os = "linux")]

use pfsyncd::sys::NetlinkSocket;
use pfsyncd::table::pf::netlink::{resolve_family, GENL_ID_CTRL};

#[test]
fn the_controller_resolves_itself_and_refuses_an_unknown_family() {
    let mut s = NetlinkSocket::open().expect("a generic netlink socket");
    // The controller's own family is nlctrl, with the fixed id GENL_ID_CTRL.
    assert_eq!(resolve_family(&mut s, "nlctrl", 1).unwrap(), GENL_ID_CTRL);
    // No pf here: the kernel says ENOENT, which the pf backend takes as "use the ioctls".
    let e = resolve_family(&mut s, "pfctl", 2).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}
