//! WireGuard keys in WireGuard's own text form: 32 bytes of X25519, base64, 44 characters,
//! so keys from `wg genkey` / `wg pubkey` and ours are interchangeable.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519::{PublicKey as X25519Public, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// Bytes in every WireGuard key.
pub const KEY_LEN: usize = 32;
/// Characters of a key in base64 (with its one `=`).
pub const KEY_TEXT_LEN: usize = 44;
/// A key file holds one key and a newline; anything much longer is not a key file.
const KEY_FILE_MAX: u64 = 256;

/// Why text or a file is not a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not 44 characters after trimming whitespace.
    #[error("a key is {KEY_TEXT_LEN} base64 characters, got {0}")]
    Length(usize),
    /// Not base64, or not 32 bytes once decoded.
    #[error("a key is base64 of {KEY_LEN} bytes")]
    Encoding,
    /// The key file is not a regular file.
    #[error("private key file is not a regular file")]
    NotRegularFile,
    /// The key file can be read by the group or by others.
    #[error("private key file has mode {mode:04o}: readable by others than its owner (chmod 600)")]
    TooOpen {
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is longer than any key file.
    #[error("private key file is {0} bytes, too long for a key")]
    FileTooLong(u64),
    /// Reading the file failed.
    #[error("reading private key file: {0}")]
    Io(#[from] io::Error),
}

/// Parses the 44-character base64 form into 32 bytes, wiping every intermediate copy.
fn decode_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let text = text.trim();
    if text.len() != KEY_TEXT_LEN {
        return Err(KeyError::Length(text.chars().count()));
    }
    let decoded = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyError::Encoding)?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err(KeyError::Encoding);
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// This node's X25519 private key. The secret is wiped when dropped (x25519-dalek's
/// `StaticSecret` zeroizes on drop); `Debug` never shows it.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A new key from the operating system's random source (/dev/urandom), clamped the
    /// way `wg genkey` prints it.
    pub fn generate() -> io::Result<PrivateKey> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        File::open("/dev/urandom")?.read_exact(&mut bytes[..])?;
        Ok(PrivateKey::from_bytes(*bytes))
    }

    /// From raw bytes, clamped as X25519 uses them (RFC 7748, section 5), so the text form
    /// matches `wg`'s.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> PrivateKey {
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        let key = PrivateKey(StaticSecret::from(bytes));
        bytes.zeroize();
        key
    }

    /// Parses WireGuard's text form.
    pub fn parse(text: &str) -> Result<PrivateKey, KeyError> {
        Ok(PrivateKey::from_bytes(*decode_key(text)?))
    }

    /// The text form, 44 characters; the caller holds a secret and should drop it soon.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(STANDARD.encode(&bytes[..]))
    }

    /// The raw bytes, for the channel to the engine process; wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key that goes with it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(X25519Public::from(&self.0))
    }

    /// The crate's secret type, for the tunnel.
    pub(crate) fn secret(&self) -> StaticSecret {
        self.0.clone()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A peer's X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(X25519Public);

impl PublicKey {
    /// Parses WireGuard's text form.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        Ok(PublicKey(X25519Public::from(*decode_key(text)?)))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }

    pub(crate) fn x25519(&self) -> X25519Public {
        self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An optional pre-shared key between two peers (`wg genpsk`), wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(Zeroizing<[u8; KEY_LEN]>);

impl PresharedKey {
    /// Parses WireGuard's text form.
    pub fn parse(text: &str) -> Result<PresharedKey, KeyError> {
        Ok(PresharedKey(decode_key(text)?))
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PresharedKey {
        PresharedKey(Zeroizing::new(bytes))
    }

    /// The bytes, for the tunnel (boringtun takes them by value).
    pub(crate) fn bytes(&self) -> [u8; KEY_LEN] {
        *self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

/// Refuses a private key file that is not a regular file or that its group or others
/// may read or write (what `wg` warns about, made an error: the key is the cluster's
/// trust). A plain function of the metadata, so the root parent can apply it to the
/// descriptor it opened (fstat) before reading.
pub fn check_private_key_file(metadata: &Metadata) -> Result<(), KeyError> {
    if !metadata.file_type().is_file() {
        return Err(KeyError::NotRegularFile);
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen { mode });
    }
    if metadata.size() > KEY_FILE_MAX {
        return Err(KeyError::FileTooLong(metadata.size()));
    }
    Ok(())
}

/// Reads a private key from an open file: checks the descriptor's metadata (not the
/// path's, which could be swapped between the check and the read), then parses.
pub fn read_private_key(file: &mut File) -> Result<PrivateKey, KeyError> {
    check_private_key_file(&file.metadata()?)?;
    let mut text = Zeroizing::new(String::new());
    file.take(KEY_FILE_MAX).read_to_string(&mut text)?;
    PrivateKey::parse(&text)
}

/// Opens and reads a private key file ([`read_private_key`]).
pub fn read_private_key_file(path: &Path) -> Result<PrivateKey, KeyError> {
    read_private_key(&mut File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::OpenOptionsExt;

    // RFC 7748 section 6.1: Alice's private key and its public key.
    const ALICE_PRIVATE: [u8; 32] = [
        0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66,
        0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9,
        0x2c, 0x2a,
    ];
    // 8520f009...eaa9b4e6a
    const ALICE_PUBLIC: [u8; 32] = [
        0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7,
        0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b,
        0x4e, 0x6a,
    ];

    #[test]
    fn the_rfc_7748_vector_gives_its_public_key() {
        let key = PrivateKey::from_bytes(ALICE_PRIVATE);
        assert_eq!(key.public_key().as_bytes(), &ALICE_PUBLIC);
        let text = key.to_base64();
        assert_eq!(text.len(), KEY_TEXT_LEN);
        let again = PrivateKey::parse(&text).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::parse(&key.public_key().to_string()).unwrap();
        assert_eq!(public, key.public_key());
    }

    #[test]
    fn generated_keys_are_clamped_and_differ() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let bytes = STANDARD.decode(a.to_base64().as_str()).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
    }

    #[test]
    fn malformed_text_is_refused() {
        assert!(matches!(PublicKey::parse(""), Err(KeyError::Length(0))));
        assert!(matches!(
            PublicKey::parse(&"A".repeat(43)),
            Err(KeyError::Length(43))
        ));
        assert!(matches!(
            PublicKey::parse(&"*".repeat(44)),
            Err(KeyError::Encoding)
        ));
        // 44 characters of base64 that decode to 33 bytes (no padding).
        assert!(matches!(
            PublicKey::parse(&"A".repeat(44)),
            Err(KeyError::Encoding)
        ));
        assert!(PresharedKey::parse(&format!("{}=\n", "A".repeat(43))).is_ok());
    }

    #[test]
    fn a_key_file_readable_by_others_or_not_a_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("pfsyncd-keys-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("private.key");
        let _ = fs::remove_file(&path);
        let text = PrivateKey::from_bytes(ALICE_PRIVATE).to_base64();
        {
            use std::io::Write;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            writeln!(f, "{}", text.as_str()).unwrap();
        }
        let key = read_private_key_file(&path).unwrap();
        assert_eq!(key.public_key().as_bytes(), &ALICE_PUBLIC);

        for mode in [0o640, 0o604, 0o660, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match read_private_key_file(&path) {
                Err(KeyError::TooOpen { mode: m }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        assert!(matches!(
            read_private_key_file(&dir),
            Err(KeyError::NotRegularFile)
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
