//! The secure link's secrets, read by the root parent: this node's private key and the
//! peers' pre-shared keys, each file checked on its open descriptor (regular, no access
//! for group or others) before it is read, so a key others could read is never used.

use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};
use zeroize::Zeroizing;

use crate::daemon::config::SyncConfig;
use crate::daemon::privsep::ToEngine;
use crate::daemon::secure_config::SecureConfig;
use crate::net::Interface;
use crate::secure::{
    check_private_key_file, read_private_key, KeyError, PeerConfig, PresharedKey, PrivateKey,
};

/// Bytes of receive buffer asked for each secure link socket, as the plain link's raw
/// socket asks (the kernel may cap or double it).
const RECEIVE_BUFFER: usize = 32 << 20;

/// The longest pre-shared key file taken (a key is 44 characters and a newline).
const PSK_FILE_MAX: u64 = 256;

/// Why the secure link's keys cannot be loaded; one line each.
#[derive(Debug, thiserror::Error)]
pub enum SecureKeyError {
    /// `securepeer` words without `securekey`.
    #[error("securepeer given without securekey: the secure link needs this node's private key")]
    NoPrivateKey,
    /// The private key file is refused or unreadable.
    #[error("securekey {path}: {why}")]
    PrivateKey {
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the line says it once).
        why: KeyError,
    },
    /// A pre-shared key file is refused or unreadable.
    #[error("securepeer {peer} psk {path}: {why}")]
    PresharedKey {
        /// The peer's inner address.
        peer: IpAddr,
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the line says it once).
        why: KeyError,
    },
    /// No `secureaddr`, and the sync interface has no address to take instead.
    #[error("the secure link needs this node's inner address: give secureaddr, or a syncdev with an IPv4 address (IPv6 peers need secureaddr)")]
    NoInnerAddr,
}

/// The secure link's keys and peers, ready for `SecureLink`.
#[derive(Debug)]
pub struct SecureKeys {
    /// This node's private key.
    pub private_key: PrivateKey,
    /// The configured peers with their pre-shared keys read.
    pub peers: Vec<PeerConfig>,
}

/// Reads the keys the configuration names; `None` when it names no secure link.
pub fn load_secure_keys(secure: &SecureConfig) -> Result<Option<SecureKeys>, SecureKeyError> {
    let Some(key_path) = &secure.key_file else {
        if secure.peers.is_empty() {
            return Ok(None);
        }
        return Err(SecureKeyError::NoPrivateKey);
    };
    let private_key = open_checked(key_path)
        .and_then(|mut file| read_private_key(&mut file))
        .map_err(|why| SecureKeyError::PrivateKey {
            path: key_path.clone(),
            why,
        })?;
    let mut peers = Vec::with_capacity(secure.peers.len());
    for entry in &secure.peers {
        let preshared_key = match &entry.psk_file {
            None => None,
            Some(path) => {
                Some(
                    read_preshared_key(path).map_err(|why| SecureKeyError::PresharedKey {
                        peer: entry.inner_addr(),
                        path: path.clone(),
                        why,
                    })?,
                )
            }
        };
        peers.push(PeerConfig {
            public_key: entry.public_key,
            preshared_key,
            endpoint: entry.endpoint(secure.port),
            inner_addr: entry.inner_addr(),
        });
    }
    Ok(Some(SecureKeys { private_key, peers }))
}

/// The key files read again on SIGHUP. Each file stands alone: one that fails to read
/// leaves the running key of its kind in place (the error says which), the others are
/// taken.
#[derive(Debug)]
pub struct ReloadedKeys {
    /// This node's private key, or why the running one stays.
    pub private_key: Result<PrivateKey, SecureKeyError>,
    /// Per peer with a `psk` file, by inner address: its pre-shared key, or why its
    /// running one stays.
    pub preshared_keys: Vec<(IpAddr, Result<PresharedKey, SecureKeyError>)>,
}

/// Reads the key files a reloaded configuration names, as [`load_secure_keys`] does at
/// start (a file others can read is refused the same way).
pub fn reload_secure_keys(secure: &SecureConfig) -> ReloadedKeys {
    let private_key = match &secure.key_file {
        None => Err(SecureKeyError::NoPrivateKey),
        Some(path) => open_checked(path)
            .and_then(|mut file| read_private_key(&mut file))
            .map_err(|why| SecureKeyError::PrivateKey {
                path: path.clone(),
                why,
            }),
    };
    let preshared_keys = secure
        .peers
        .iter()
        .filter_map(|entry| {
            let path = entry.psk_file.as_ref()?;
            let peer = entry.inner_addr();
            let key = read_preshared_key(path).map_err(|why| SecureKeyError::PresharedKey {
                peer,
                path: path.clone(),
                why,
            });
            Some((peer, key))
        })
        .collect();
    ReloadedKeys {
        private_key,
        preshared_keys,
    }
}

/// This node's inner address, the source of the pfsync packets it wraps: `secureaddr`,
/// else the sync interface's IPv4 address (what the plain link would send from).
pub fn our_inner_addr(config: &SyncConfig) -> Result<IpAddr, SecureKeyError> {
    if let Some(addr) = config.secure.inner_addr {
        return Ok(addr);
    }
    config
        .syncdev
        .and_then(|dev| Interface::lookup(&dev.to_string()).ok())
        .and_then(|iface| iface.ipv4())
        .map(IpAddr::from)
        .ok_or(SecureKeyError::NoInnerAddr)
}

fn open_checked(path: &Path) -> Result<File, KeyError> {
    Ok(File::open(path)?)
}

/// A pre-shared key is as secret as the private key: the same file rules apply.
fn read_preshared_key(path: &Path) -> Result<PresharedKey, KeyError> {
    let mut file = open_checked(path)?;
    check_private_key_file(&file.metadata()?)?;
    let mut text = Zeroizing::new(String::new());
    (&mut file).take(PSK_FILE_MAX).read_to_string(&mut text)?;
    PresharedKey::parse(&text)
}

/// The secure link's UDP sockets, one per address family its peers use, each bound to
/// `secureport` on the family's any-address (an IPv6 socket takes IPv6 only: OpenBSD
/// has no dual-stack sockets, so both systems get the same two). Non-blocking: the
/// parent's loop polls them and forwards each datagram unparsed.
#[derive(Debug)]
pub struct SecureSockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl SecureSockets {
    /// Opens the sockets the configured peers need (none without peers).
    pub fn open(secure: &SecureConfig) -> io::Result<SecureSockets> {
        let wants = |v6: bool| secure.peers.iter().any(|p| p.addr.is_ipv6() == v6);
        let open = |v6: bool| -> io::Result<Option<UdpSocket>> {
            if !wants(v6) {
                return Ok(None);
            }
            let (domain, any) = if v6 {
                (Domain::IPV6, IpAddr::from(Ipv6Addr::UNSPECIFIED))
            } else {
                (Domain::IPV4, IpAddr::from(Ipv4Addr::UNSPECIFIED))
            };
            let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            if v6 {
                socket.set_only_v6(true)?;
            }
            socket.set_nonblocking(true)?;
            enlarge_receive_buffer(&socket);
            socket.bind(&SocketAddr::new(any, secure.port).into())?;
            Ok(Some(socket.into()))
        };
        Ok(SecureSockets {
            v4: open(false)?,
            v6: open(true)?,
        })
    }

    /// The open sockets, for the poll.
    pub fn sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// Reads what waits on the sockets, at most `batch` datagrams each, and queues each
    /// unparsed for the engine process, which alone holds the keys; the count read.
    pub fn receive(&self, buf: &mut [u8], batch: usize, out: &mut Vec<u8>) -> usize {
        let mut read = 0;
        for socket in self.sockets() {
            for _ in 0..batch {
                match socket.recv_from(buf) {
                    Ok((n, from)) => {
                        ToEngine::SecureDatagram {
                            from,
                            datagram: &buf[..n],
                        }
                        .encode(out);
                        read += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // An ICMP error of an earlier send shows here; the next read goes on.
                        crate::log_debug!("secure link socket: {e}");
                        break;
                    }
                }
            }
        }
        read
    }

    /// Sends one datagram the engine process asked for; a destination of a family no
    /// socket is open for is refused (the engine only names configured peers).
    pub fn send_to(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<usize> {
        let socket = if to.is_ipv6() { &self.v6 } else { &self.v4 };
        match socket {
            Some(socket) => socket.send_to(datagram, to),
            None => Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("no secure link socket for {to}"),
            )),
        }
    }
}

/// A peer's bulk update arrives as a burst of thousands of datagrams while the engine
/// imports, and pfsync never retransmits: the default buffer would drop most of it.
/// Root may go past Linux's net.core.rmem_max; the BSDs refuse more than
/// kern.ipc.maxsockbuf, so the largest size taken is kept.
fn enlarge_receive_buffer(socket: &Socket) {
    #[cfg(target_os = "linux")]
    if nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::RcvBufForce,
        &RECEIVE_BUFFER,
    )
    .is_ok()
    {
        return;
    }
    let mut size = RECEIVE_BUFFER;
    while size >= 256 << 10 && socket.set_recv_buffer_size(size).is_err() {
        size /= 2;
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    fn write_key(dir: &Path, name: &str, mode: u32, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .unwrap();
        writeln!(file, "{text}").unwrap();
        // The umask may have narrowed the mode; the tests want it exactly.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        path
    }

    /// A directory of this test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "pfsyncd-parent-secure-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(words: &[String]) -> SyncConfig {
        SyncConfig::from_words(words).unwrap()
    }

    #[test]
    fn keys_are_read_and_peers_built() {
        let dir = Scratch::new("read");
        let ours = PrivateKey::generate().unwrap();
        let theirs = PrivateKey::generate().unwrap().public_key();
        let psk = PrivateKey::generate().unwrap().to_base64();
        let key = write_key(dir.path(), "key", 0o600, ours.to_base64().as_str());
        let psk_path = write_key(dir.path(), "psk", 0o400, psk.as_str());
        let c = config(&[
            "securekey".into(),
            key.display().to_string(),
            "securepeer".into(),
            "[2001:db8::7]:6000".into(),
            "pubkey".into(),
            theirs.to_string(),
            "psk".into(),
            psk_path.display().to_string(),
        ]);
        let keys = load_secure_keys(&c.secure).unwrap().unwrap();
        assert_eq!(keys.private_key.public_key(), ours.public_key());
        assert_eq!(keys.peers.len(), 1);
        let peer = &keys.peers[0];
        assert_eq!(peer.public_key, theirs);
        assert_eq!(peer.endpoint, "[2001:db8::7]:6000".parse().unwrap());
        assert_eq!(peer.inner_addr, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(
            peer.preshared_key,
            Some(PresharedKey::parse(psk.as_str()).unwrap())
        );
        assert!(load_secure_keys(&SyncConfig::default().secure)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_key_others_can_read_is_refused_in_one_line() {
        let dir = Scratch::new("open");
        let ours = PrivateKey::generate().unwrap();
        let key = write_key(dir.path(), "key", 0o644, ours.to_base64().as_str());
        let c = config(&["securekey".into(), key.display().to_string()]);
        let err = load_secure_keys(&c.secure).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("securekey"),
            "{err}"
        );
        assert!(!err.contains('\n'));

        let good = write_key(dir.path(), "good", 0o600, ours.to_base64().as_str());
        let psk = write_key(dir.path(), "psk", 0o640, ours.to_base64().as_str());
        let c = config(&[
            "securekey".into(),
            good.display().to_string(),
            "securepeer".into(),
            "192.0.2.7".into(),
            "pubkey".into(),
            ours.public_key().to_string(),
            "psk".into(),
            psk.display().to_string(),
        ]);
        let err = load_secure_keys(&c.secure).unwrap_err().to_string();
        assert!(err.contains("psk") && err.contains("mode 0640"), "{err}");
    }

    #[test]
    fn a_reload_reads_each_key_file_on_its_own() {
        let dir = Scratch::new("reload");
        let ours = PrivateKey::generate().unwrap();
        let theirs = PrivateKey::generate().unwrap().public_key();
        let psk = PrivateKey::generate().unwrap().to_base64();
        let key_path = write_key(dir.path(), "key", 0o600, ours.to_base64().as_str());
        let good_psk = write_key(dir.path(), "psk", 0o600, psk.as_str());
        let open_psk = write_key(dir.path(), "psk-open", 0o604, psk.as_str());
        let c = config(&[
            "securekey".into(),
            key_path.display().to_string(),
            "securepeer".into(),
            "192.0.2.7".into(),
            "pubkey".into(),
            theirs.to_string(),
            "psk".into(),
            good_psk.display().to_string(),
            "securepeer".into(),
            "192.0.2.8".into(),
            "pubkey".into(),
            ours.public_key().to_string(),
            "psk".into(),
            open_psk.display().to_string(),
            "securepeer".into(),
            "192.0.2.9".into(),
            "pubkey".into(),
            PrivateKey::generate().unwrap().public_key().to_string(),
        ]);
        let reloaded = reload_secure_keys(&c.secure);
        assert_eq!(
            reloaded.private_key.unwrap().public_key(),
            ours.public_key()
        );
        assert_eq!(
            reloaded.preshared_keys.len(),
            2,
            "only peers with a psk file"
        );
        let (peer, key) = &reloaded.preshared_keys[0];
        assert_eq!(*peer, IpAddr::from([192, 0, 2, 7]));
        assert_eq!(
            key.as_ref().unwrap(),
            &PresharedKey::parse(psk.as_str()).unwrap()
        );
        let (peer, key) = &reloaded.preshared_keys[1];
        assert_eq!(*peer, IpAddr::from([192, 0, 2, 8]));
        let err = key.as_ref().unwrap_err().to_string();
        assert!(err.contains("mode 0604"), "{err}");

        fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let err = reload_secure_keys(&c.secure)
            .private_key
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("securekey") && err.contains("mode 0640"),
            "{err}"
        );
    }

    #[test]
    fn peers_without_a_private_key_are_refused() {
        let theirs = PrivateKey::generate().unwrap().public_key();
        let c = config(&[
            "securepeer".into(),
            "192.0.2.7".into(),
            "pubkey".into(),
            theirs.to_string(),
        ]);
        let err = load_secure_keys(&c.secure).unwrap_err();
        assert!(matches!(err, SecureKeyError::NoPrivateKey), "{err}");
    }

    #[test]
    fn sockets_for_the_families_of_the_peers_send_and_receive() {
        let key = PrivateKey::generate().unwrap().public_key().to_string();
        // Port 0 is refused as a word; the test binds its own free port through the
        // struct, which the words cannot.
        let mut c = config(&[
            "securepeer".into(),
            "127.0.0.1".into(),
            "pubkey".into(),
            key.clone(),
        ]);
        c.secure.port = free_port();
        let sockets = SecureSockets::open(&c.secure).unwrap();
        assert_eq!(sockets.sockets().count(), 1, "IPv4 peers only: one socket");
        let here = SocketAddr::from(([127, 0, 0, 1], c.secure.port));
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            sockets
                .send_to(peer.local_addr().unwrap(), &[1, 2, 3])
                .unwrap(),
            3
        );
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&[1u8, 2, 3][..], here));
        peer.send_to(&[4, 5], here).unwrap();
        let socket = sockets.sockets().next().unwrap();
        socket.set_nonblocking(false).unwrap();
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[4, 5]);
        assert!(sockets.send_to("[::1]:9".parse().unwrap(), &[1]).is_err());
    }

    /// A peer's bulk update comes as a burst of thousands of datagrams and pfsync never
    /// retransmits: the default buffer (about 200 KB) lost 40 % of a 100 000-state
    /// burst in benches/secure.rs. As root the lab's sockets get the plain link's size.
    #[test]
    fn sockets_hold_a_bulk_burst() {
        let key = PrivateKey::generate().unwrap().public_key().to_string();
        let mut c = config(&[
            "securepeer".into(),
            "127.0.0.1".into(),
            "pubkey".into(),
            key,
        ]);
        c.secure.port = free_port();
        let sockets = SecureSockets::open(&c.secure).unwrap();
        let socket = socket2::SockRef::from(sockets.sockets().next().unwrap());
        let size = socket.recv_buffer_size().unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(size >= RECEIVE_BUFFER, "receive buffer {size} bytes");
        } else {
            assert!(size >= 200 << 10, "receive buffer {size} bytes");
        }
    }

    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
