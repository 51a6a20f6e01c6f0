//! The pf device over any [`PfKernel`]: what to call on the running kernel, and what its
//! answers mean. This is the logic that used to sit in `crate::sys::pf` next to the
//! ioctls, where it could only be type-checked; here the kernel models of `tests/kernel`
//! run it.

use std::io;

use super::kernel::{KillRequest, OsFamily, PfKernel};
use super::netlink::{self, Transport};
use super::PfDevice;
use crate::wire::RecordFormat;

/// A `&mut dyn Transport` as a sized transport, for the netlink functions.
struct Nl<'a>(&'a mut dyn Transport);

impl Transport for Nl<'_> {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.0.send(request)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

/// pf's netlink family on this kernel.
#[derive(Debug, Clone, Copy)]
struct Family {
    id: u16,
}

/// The pf device: a kernel and what was found it offers.
pub struct KernelPf<K> {
    kernel: K,
    family: Option<Family>,
    seq: u32,
}

impl<K: PfKernel> KernelPf<K> {
    /// The device over `kernel`, after asking it what it offers.
    pub fn open(mut kernel: K) -> KernelPf<K> {
        let mut seq = 1;
        let family = kernel.netlink().and_then(|t| {
            netlink::resolve_family(&mut Nl(t), netlink::PF_FAMILY, seq)
                .ok()
                .map(|id| Family { id })
        });
        seq += 1;
        KernelPf {
            kernel,
            family,
            seq,
        }
    }

    /// The kernel.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The kernel, mutably (the tests move its clock and traffic).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn record_len(&self) -> usize {
        self.format().size()
    }

    /// States through pf's netlink family, as 1301 records like the ioctl's.
    fn list_netlink(&mut self, family: Family, out: &mut Vec<u8>) -> io::Result<()> {
        let seq = self.next_seq();
        let format = self.format();
        let len = self.record_len();
        let Some(t) = self.kernel.netlink() else {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        };
        let mut states = Vec::new();
        netlink::dump_states(&mut Nl(t), family.id, seq, &mut states)?;
        out.clear();
        out.resize(states.len() * len, 0);
        for (s, chunk) in states.iter().zip(out.chunks_exact_mut(len)) {
            s.to_record(format).0.emit_bytes(chunk);
        }
        Ok(())
    }

    fn list_ioctl(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let record = self.record_len();
        loop {
            let need = self.kernel.get_states(0, &mut [])?;
            // Room for states created meanwhile.
            let cap = (need + need / 8 + 64 * record) / record * record;
            out.clear();
            out.resize(cap, 0);
            let got = self.kernel.get_states(cap, out)?;
            if got < cap {
                out.truncate(got - got % record);
                return Ok(());
            }
            // Full: more states than room; list again.
        }
    }
}

impl<K: PfKernel> PfDevice for KernelPf<K> {
    fn format(&self) -> RecordFormat {
        match self.kernel.os() {
            OsFamily::FreeBsd => RecordFormat::FreeBsd1301,
            OsFamily::OpenBsd => RecordFormat::OpenBsd,
        }
    }

    fn list(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if let Some(family) = self.family {
            return self.list_netlink(family, out);
        }
        self.list_ioctl(out)
    }

    fn add(&mut self, record: &[u8]) -> io::Result<()> {
        self.kernel.add_state(record)
    }

    fn kill(&mut self, creatorid: u32, id: u64) -> io::Result<u32> {
        self.kernel
            .kill_states(KillRequest::for_state(creatorid, id))
    }

    fn checksum(&mut self) -> io::Result<[u8; 16]> {
        match self.kernel.os() {
            OsFamily::OpenBsd => Ok(self.kernel.get_status()?.checksum),
            OsFamily::FreeBsd => {
                let Some(family) = self.family else {
                    return Ok([0; 16]);
                };
                let seq = self.next_seq();
                match self.kernel.netlink() {
                    Some(t) => netlink::read_checksum(&mut Nl(t), family.id, seq),
                    None => Ok([0; 16]),
                }
            }
        }
    }
}
