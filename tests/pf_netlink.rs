//! The generic netlink framing against a real kernel: Linux's generic netlink
//! controller answers the same family lookup FreeBSD's does (FreeBSD implements the
//! Linux protocol), so resolving a family here exercises the request encoding, the
//! multi-message reading and the attribute walk that pf's state dump uses.

#![cfg(target_os = "linux")]

use pfsyncd::sys::NetlinkSocket;
use pfsyncd::table::pf::netlink::{
    resolve_family, resolve_family_info, CTRL_CMD_GETFAMILY, GENL_ID_CTRL,
};

#[test]
fn the_controller_resolves_itself_and_refuses_an_unknown_family() {
    let mut s = NetlinkSocket::open().expect("a generic netlink socket");
    // The controller's own family is nlctrl, with the fixed id GENL_ID_CTRL.
    assert_eq!(resolve_family(&mut s, "nlctrl", 1).unwrap(), GENL_ID_CTRL);
    // No pf here: the kernel says ENOENT, which the pf backend takes as "use the ioctls".
    let e = resolve_family(&mut s, "pfctl", 2).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}

#[test]
fn the_controller_lists_its_own_commands() {
    let mut s = NetlinkSocket::open().expect("a generic netlink socket");
    // Linux's controller, like FreeBSD's dump_family, lists the commands it handles in
    // CTRL_ATTR_OPS: GETFAMILY among them.
    let info = resolve_family_info(&mut s, "nlctrl", 3).unwrap();
    assert_eq!(info.id, GENL_ID_CTRL);
    assert_eq!(info.has_command(CTRL_CMD_GETFAMILY), Some(true), "{info:?}");
    // Linux negates errnos, FreeBSD does not: either reads as ENOENT.
    let e = resolve_family_info(&mut s, "no-such-family", 4).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}
