//! Opening a bpf(4) device on the sync interface with the pfsync filter: the ioctls,
//! with the kernel's own numbers and structures from the bindgen bindings.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::bindings as k;
use crate::net::bpf::{HeaderLayout, Insn, Os};

// The record walker (net/bpf/buffer.rs) is tested on FreeBSD's LP64 layout only; 32-bit
// FreeBSD has another (i386: an 8-byte timeval; every 32-bit target: a 4-byte
// BPF_ALIGNMENT, `sizeof(long)`), which no kernel model covers. OpenBSD's header has
// fixed-width fields (`struct bpf_timeval`) and BPF_ALIGNMENT = sizeof(u_int32_t) on
// every architecture.
#[cfg(all(target_os = "freebsd", not(target_pointer_width = "64")))]
compile_error!(
    "pfsyncd reads FreeBSD bpf records only on 64-bit targets: the bpf_hdr layout and \
     BPF_ALIGNMENT of 32-bit FreeBSD are not modelled or tested"
);

#[cfg(target_os = "freebsd")]
const OS: Os = Os::FreeBsd;
#[cfg(target_os = "openbsd")]
const OS: Os = Os::OpenBsd;

/// The target's `struct bpf_hdr`, where the record walker reads it.
pub const BPF_HEADER_LAYOUT: HeaderLayout = HeaderLayout::of(OS);

// The walker's offsets are those of the target's own header (bindgen), and the fields
// have the widths it reads.
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(k::bpf_hdr, bh_caplen) == BPF_HEADER_LAYOUT.caplen);
    assert!(offset_of!(k::bpf_hdr, bh_datalen) == BPF_HEADER_LAYOUT.datalen);
    assert!(offset_of!(k::bpf_hdr, bh_hdrlen) == BPF_HEADER_LAYOUT.hdrlen);
    // No header longer than the walker accepts: FreeBSD's is cut at bh_hdrlen
    // (SIZEOF_BPF_HDR), OpenBSD's is whole; either padded to BPF_ALIGNMENT.
    #[cfg(target_os = "freebsd")]
    assert!(BPF_HEADER_LAYOUT.align == std::mem::size_of::<libc::c_long>());
    #[cfg(target_os = "openbsd")]
    assert!(
        std::mem::size_of::<k::bpf_hdr>() + BPF_HEADER_LAYOUT.align - 1
            <= BPF_HEADER_LAYOUT.max_hdrlen
    );
};
const _: fn(&k::bpf_hdr) -> (u32, u32, u16) = |h| (h.bh_caplen, h.bh_datalen, h.bh_hdrlen);

/// An open bpf device, bound to an interface, filtering, non-blocking.
#[derive(Debug)]
pub struct BpfDevice {
    /// The device.
    pub fd: OwnedFd,
    /// The interface's link type (`DLT_*`).
    pub dlt: u32,
    /// Bytes a read must be given (`BIOCGBLEN`).
    pub buffer_len: usize,
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r == -1 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("bpf {what}: {e}")))
    } else {
        Ok(())
    }
}

/// Opens `/dev/bpf` on `ifname` asking for `buffer_len` bytes of buffer; `program`
/// gives the filter for the interface's link type.
pub fn open_bpf(
    ifname: &str,
    buffer_len: u32,
    program: impl FnOnce(u32) -> io::Result<Vec<Insn>>,
) -> io::Result<BpfDevice> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open("/dev/bpf")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/bpf: {e}")))?;
    let fd = file.as_raw_fd();

    let mut blen: libc::c_uint = buffer_len;
    // SAFETY: BIOCSBLEN reads and writes one u_int, which `blen` is; `fd` is open.
    check(
        unsafe { libc::ioctl(fd, k::BIOCSBLEN as libc::c_ulong, &mut blen) },
        "BIOCSBLEN",
    )?;

    let mut ifr = k::ifreq::default();
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname}: interface name too long"),
        ));
    }
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = src as _;
    }
    // SAFETY: BIOCSETIF reads a `struct ifreq`, which `ifr` is (from the kernel's own
    // header), with a NUL-terminated name.
    check(
        unsafe { libc::ioctl(fd, k::BIOCSETIF as libc::c_ulong, &ifr) },
        "BIOCSETIF",
    )?;

    let mut on: libc::c_uint = 1;
    // SAFETY: BIOCIMMEDIATE reads one u_int.
    check(
        unsafe { libc::ioctl(fd, k::BIOCIMMEDIATE as libc::c_ulong, &mut on) },
        "BIOCIMMEDIATE",
    )?;

    // Only what arrives: our own packets leave by this interface too.
    #[cfg(target_os = "freebsd")]
    {
        let mut dir: libc::c_uint = k::BPF_D_IN as libc::c_uint;
        // SAFETY: BIOCSDIRECTION reads one u_int.
        check(
            unsafe { libc::ioctl(fd, k::BIOCSDIRECTION as libc::c_ulong, &mut dir) },
            "BIOCSDIRECTION",
        )?;
    }
    #[cfg(target_os = "openbsd")]
    {
        let mut filt: libc::c_uint = k::BPF_DIRECTION_OUT as libc::c_uint;
        // SAFETY: BIOCSDIRFILT reads one u_int.
        check(
            unsafe { libc::ioctl(fd, k::BIOCSDIRFILT as libc::c_ulong, &mut filt) },
            "BIOCSDIRFILT",
        )?;
    }

    let mut dlt: libc::c_uint = 0;
    // SAFETY: BIOCGDLT writes one u_int.
    check(
        unsafe { libc::ioctl(fd, k::BIOCGDLT as libc::c_ulong, &mut dlt) },
        "BIOCGDLT",
    )?;

    let program = program(dlt)?;
    let mut insns: Vec<k::bpf_insn> = program
        .iter()
        .map(|i| k::bpf_insn {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = k::bpf_program {
        bf_len: insns.len() as _,
        bf_insns: insns.as_mut_ptr(),
    };
    // SAFETY: BIOCSETF reads a `struct bpf_program` whose `bf_insns` points at
    // `bf_len` instructions in `insns`, alive until the call returns; the kernel copies
    // them.
    check(
        unsafe { libc::ioctl(fd, k::BIOCSETF as libc::c_ulong, &prog) },
        "BIOCSETF",
    )?;

    let mut got: libc::c_uint = 0;
    // SAFETY: BIOCGBLEN writes one u_int.
    check(
        unsafe { libc::ioctl(fd, k::BIOCGBLEN as libc::c_ulong, &mut got) },
        "BIOCGBLEN",
    )?;

    Ok(BpfDevice {
        fd: file.into(),
        dlt,
        buffer_len: got as usize,
    })
}
