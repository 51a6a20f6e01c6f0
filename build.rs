//! Generates Rust declarations of the kernel structures pfsyncd shares with pf(4) and
//! pfsync(4), from the real headers, with bindgen.
//!
//! - Building for FreeBSD or OpenBSD: `$OUT_DIR/bindings.rs` for the target OS, from
//!   the system headers (or from `PFSYNCD_HEADER_ROOT` when cross-checking from another
//!   OS), and `cfg(pfsyncd_bindings)`.
//! - Everywhere (Linux above all): the test oracle, `$OUT_DIR/oracle_freebsd.rs` and
//!   `$OUT_DIR/oracle_openbsd.rs`, from the FreeBSD 15 and OpenBSD header copies in the
//!   PyPI package ziglang, and `cfg(pfsyncd_oracle)`. Without the headers the crate still
//!   builds, with a warning, and `tests/oracle.rs` fails saying how to get them.
//!
//! The header root is the directory that holds `generic-freebsd/`, `generic-openbsd/`
//! and the per-architecture directories such as `x86_64-freebsd-none/`; in the ziglang
//! package it is `ziglang/lib/libc/include`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the header root.
const ROOT_ENV: &str = "PFSYNCD_HEADER_ROOT";
/// Environment variable naming a header root for the target's bindings only (the
/// oracle keeps `ROOT_ENV`'s): to check a build against another release's headers,
/// e.g. scripts/check-older-freebsd-headers.sh.
const TARGET_ROOT_ENV: &str = "PFSYNCD_TARGET_HEADER_ROOT";
/// What to tell a user who has no header root.
const HOW_TO_GET: &str = "`pip install ziglang==0.17.1` (the FreeBSD 15 and OpenBSD headers \
     are in ziglang/lib/libc/include), or set PFSYNCD_HEADER_ROOT to such a directory";

/// The two operating systems whose headers are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Os {
    FreeBsd,
    OpenBsd,
}

impl Os {
    fn name(self) -> &'static str {
        match self {
            Os::FreeBsd => "freebsd",
            Os::OpenBsd => "openbsd",
        }
    }

    /// The clang target for an architecture (`x86_64`, `aarch64`).
    fn clang_target(self, arch: &str) -> String {
        match self {
            Os::FreeBsd => format!("{arch}-unknown-freebsd15"),
            Os::OpenBsd => format!("{arch}-unknown-openbsd"),
        }
    }

    /// A file whose presence says a header root holds this OS.
    fn probe(self, root: &Path) -> PathBuf {
        root.join(format!("generic-{}", self.name()))
            .join("net")
            .join("if_pfsync.h")
    }

    /// The clang arguments that read this OS's headers from a header root instead of
    /// the system's.
    fn cross_args(self, root: &Path, arch: &str) -> Vec<String> {
        let mut args = vec![
            format!("--target={}", self.clang_target(arch)),
            "-nostdinc".to_owned(),
            "-isystem".to_owned(),
            root.join(format!("{arch}-{}-none", self.name()))
                .display()
                .to_string(),
            "-isystem".to_owned(),
            root.join(format!("generic-{}", self.name()))
                .display()
                .to_string(),
        ];
        if self == Os::FreeBsd {
            // FreeBSD's own compiler gets this from sys/param.h; the ziglang copy expects
            // the compiler to define it.
            args.push("-D__FreeBSD_version=1500000".to_owned());
        }
        args
    }
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pfsyncd_oracle)");
    println!("cargo::rustc-check-cfg=cfg(pfsyncd_bindings)");
    for cfg in FREEBSD_HEADER_CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    println!("cargo::rerun-if-env-changed={ROOT_ENV}");
    println!("cargo::rerun-if-env-changed={TARGET_ROOT_ENV}");
    println!("cargo::rerun-if-changed=wrapper.h");
    println!("cargo::rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();

    match target_os.as_str() {
        "freebsd" => target_bindings(Os::FreeBsd, &target_arch, &out_dir),
        "openbsd" => target_bindings(Os::OpenBsd, &target_arch, &out_dir),
        _ => {}
    }
    // The oracle is built wherever its headers are, so that `cargo test` checks the
    // codec on a BSD too (with ziglang installed there).
    oracle(&target_arch, &out_dir);
}

/// A BSD target: bindings for the daemon's kernel edge. They are required, so a failure
/// stops the build.
fn target_bindings(os: Os, arch: &str, out_dir: &Path) {
    let host = env::var("HOST").unwrap_or_default();
    let target_root = env::var_os(TARGET_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (args, from) = if let Some(root) = target_root.or_else(env_root) {
        if !os.probe(&root).is_file() {
            panic!(
                "{ROOT_ENV}={} has no {}: it must be a header root holding generic-{}/ \
                 (ziglang/lib/libc/include)",
                root.display(),
                os.probe(&root).display(),
                os.name()
            );
        }
        (os.cross_args(&root, arch), root.display().to_string())
    } else if host.contains(os.name()) {
        // Native build: the compiler's own view of /usr/include.
        (Vec::new(), "/usr/include".to_owned())
    } else if let Some(root) = ziglang_root() {
        (os.cross_args(&root, arch), root.display().to_string())
    } else {
        panic!(
            "building for {} on {host}: no {} headers. Set {ROOT_ENV} to a header root; \
             to get one, {HOW_TO_GET}",
            os.name(),
            os.name()
        );
    };
    let out = out_dir.join("bindings.rs");
    generate(os, &args, &from, &out, true);
    if os == Os::FreeBsd {
        freebsd_header_features(&out);
    }
    println!("cargo::rustc-cfg=pfsyncd_bindings");
}

/// The cfgs [`freebsd_header_features`] may set.
const FREEBSD_HEADER_CFGS: &[&str] = &[
    "pfsyncd_freebsd_1400",
    "pfsyncd_freebsd_1500",
    "pfsyncd_freebsd_no_1301",
];

/// What the FreeBSD headers bindgen read have, as cfgs, so that the crate builds on
/// the headers of 13 and 14 as well as 15 (kernel-edge-review F6): 15 alone has
/// `pfsync_state_1500` and installs `netpfil/pf/pf_nl.h` (wrapper.h includes it only
/// where it is); 13 has no `pfsync_state_1301` (its `pfsync_state` is the same 242
/// bytes) and, before 13.2, no netlink headers at all. pfsyncd needs nothing from
/// pf_nl.h (its numbers are in `table::pf::netlink`); what the generic netlink socket
/// needs is supplied here when the headers lack it, with FreeBSD's values.
fn freebsd_header_features(bindings: &Path) {
    let mut text = std::fs::read_to_string(bindings)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", bindings.display()));
    let has = |text: &str, item: &str| text.contains(item);
    if has(&text, "pub struct pfsync_state_1400 ") {
        println!("cargo::rustc-cfg=pfsyncd_freebsd_1400");
    }
    if has(&text, "pub struct pfsync_state_1500 ") {
        println!("cargo::rustc-cfg=pfsyncd_freebsd_1500");
    }
    if !has(&text, "pub struct pfsync_state_1301 ") {
        println!("cargo::rustc-cfg=pfsyncd_freebsd_no_1301");
    }
    let mut added = String::new();
    if !has(&text, "pub const AF_NETLINK:") {
        // sys/socket.h of 13.2 and later.
        added.push_str("pub const AF_NETLINK: u32 = 38;\n");
    }
    if !has(&text, "pub struct sockaddr_nl ") {
        // netlink/netlink.h of 13.2 and later.
        added.push_str(
            "#[repr(C)]\n#[derive(Debug, Default, Copy, Clone)]\npub struct sockaddr_nl {\n    \
             pub nl_len: u8,\n    pub nl_family: u8,\n    pub nl_pad: u16,\n    \
             pub nl_pid: u32,\n    pub nl_groups: u32,\n}\n",
        );
    }
    if !added.is_empty() {
        text.push_str("\n// Supplied by build.rs: the headers read lack them.\n");
        text.push_str(&added);
        std::fs::write(bindings, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", bindings.display()));
    }
}

/// The header oracle for the tests, when the headers are here (a warning otherwise).
fn oracle(target_arch: &str, out_dir: &Path) {
    let root = match env::var_os(ROOT_ENV) {
        Some(v) if !v.is_empty() => {
            let root = PathBuf::from(v);
            if !has_both(&root) {
                println!(
                    "cargo::warning={ROOT_ENV}={} does not hold the FreeBSD and OpenBSD \
                     headers (generic-freebsd/net/if_pfsync.h, generic-openbsd/net/if_pfsync.h); \
                     building without the header oracle. To get them, {HOW_TO_GET}",
                    root.display()
                );
                return;
            }
            root
        }
        _ => match ziglang_root() {
            Some(root) => root,
            None => {
                println!(
                    "cargo::warning=no FreeBSD/OpenBSD headers found: building without the \
                     header oracle, so `cargo test --test oracle` will fail. To get them, \
                     {HOW_TO_GET} (then `touch build.rs` or set {ROOT_ENV} to rebuild)"
                );
                return;
            }
        },
    };
    // The layouts bindgen computes must be those of the architecture the tests run on,
    // so that the generated layout assertions and the tests hold.
    let arch = match target_arch {
        "x86_64" | "aarch64" => target_arch,
        other => {
            println!(
                "cargo::warning=the header oracle needs an x86_64 or aarch64 target, not \
                 {other}; building without it"
            );
            return;
        }
    };
    for os in [Os::FreeBsd, Os::OpenBsd] {
        let arch_dir = root.join(format!("{arch}-{}-none", os.name()));
        if !arch_dir.is_dir() {
            println!(
                "cargo::warning=header root {} has no {}; building without the header oracle",
                root.display(),
                arch_dir.display()
            );
            return;
        }
    }
    for os in [Os::FreeBsd, Os::OpenBsd] {
        let generic = root.join(format!("generic-{}", os.name()));
        for header in ["net/pfvar.h", "net/if_pfsync.h"] {
            println!("cargo::rerun-if-changed={}", generic.join(header).display());
        }
        let out = out_dir.join(format!("oracle_{}.rs", os.name()));
        generate(
            os,
            &os.cross_args(&root, arch),
            &root.display().to_string(),
            &out,
            false,
        );
    }
    println!("cargo::rustc-cfg=pfsyncd_oracle");
}

/// The header root from the environment, if set and not empty.
fn env_root() -> Option<PathBuf> {
    env::var_os(ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// True when a header root holds both OSes.
fn has_both(root: &Path) -> bool {
    Os::FreeBsd.probe(root).is_file() && Os::OpenBsd.probe(root).is_file()
}

/// The header root inside an installed ziglang package, found by asking python3. Any
/// failure (no python3, no package, unexpected output) means "not found".
fn ziglang_root() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import ziglang, os; print(os.path.dirname(ziglang.__file__))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let root = Path::new(dir.trim())
        .join("lib")
        .join("libc")
        .join("include");
    has_both(&root).then_some(root)
}

/// Runs bindgen on wrapper.h for one OS and writes the result to `out`. Any failure,
/// including a panic inside bindgen, becomes one panic that names the header root.
fn generate(os: Os, clang_args: &[String], from: &str, out: &Path, kernel_edge: bool) {
    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(clang_args)
        .use_core()
        .ctypes_prefix("::core::ffi")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(false)
        .generate_comments(false)
        .layout_tests(true)
        .allowlist_recursively(true)
        // The two unions inside wire structures become plain structures of 32-bit words
        // with the same size and alignment, so that no byte of a wire structure can be
        // left uninitialised by a union literal of a smaller member (src/sys relies on
        // it to view the structures as bytes). bindgen's own opaque blobs carry
        // `repr(align)`, which Rust refuses inside packed structures.
        .blocklist_type("pf_addr")
        .blocklist_type("sockaddr_union")
        .raw_line(OPAQUE_UNIONS)
        .parse_callbacks(Box::new(OpaqueUnions));
    for item in ALLOWLIST {
        builder = builder.allowlist_item(item);
    }
    if kernel_edge {
        // The ioctl numbers are function-like macros (`_IOWR('D', 4, struct ...)`) that
        // only clang itself can evaluate. Slower, so only for the daemon's own bindings.
        builder = builder
            .allowlist_item("DIOC.*")
            .allowlist_item("BIOC.*")
            .allowlist_item("SIOC[SG]IFGATTR")
            .clang_macro_fallback()
            .clang_macro_fallback_build_dir(out.parent().expect("OUT_DIR/file"));
    }
    // The builder is not used again after a panic, so unwind safety is not a concern.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    let what = if kernel_edge {
        "the target's kernel bindings"
    } else {
        "the header oracle"
    };
    let hint = if kernel_edge {
        format!(
            "{ROOT_ENV} must name a header root holding generic-{os}/ and <arch>-{os}-none/ \
             (ziglang/lib/libc/include), or be unset on a native {os} build",
            os = os.name()
        )
    } else {
        format!(
            "Check the header root (generic-{os}/ and <arch>-{os}-none/ from ziglang 0.17.1), \
             or build without the oracle with {ROOT_ENV}=/nonexistent",
            os = os.name()
        )
    };
    let bindings = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => panic!(
            "bindgen could not read the {} headers under {from} (wrapper.h) for {what}:\n{}\n{hint}",
            os.name(),
            e.to_string().trim_end()
        ),
        Err(_) => panic!(
            "bindgen panicked on the {} headers under {from} (wrapper.h) for {what}; see the \
             message above. Is libclang installed (Debian: libclang-dev)? Otherwise {hint}",
            os.name()
        ),
    };
    bindings
        .write_to_file(out)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// Replacements for the unions blocklisted above, prepended to every generated file.
const OPAQUE_UNIONS: &str = "
/// `struct pf_addr`, a union of addresses (16 bytes: IPv4 in the first 4, or IPv6),
/// as four 32-bit words in memory order.
#[repr(C)]
#[derive(Default, Copy, Clone, PartialEq, Eq)]
pub struct pf_addr {
    pub addr32: [u32; 4],
}

/// `union sockaddr_union` (the largest member is `struct sockaddr_in6`, 28 bytes), as
/// seven 32-bit words in memory order.
#[repr(C)]
#[derive(Default, Copy, Clone, PartialEq, Eq)]
pub struct sockaddr_union {
    pub words: [u32; 7],
}
";

/// Tells bindgen what the replacements in [`OPAQUE_UNIONS`] derive, so that the
/// structures containing them still derive `Copy`, `Default` and `PartialEq`.
#[derive(Debug)]
struct OpaqueUnions;

impl bindgen::callbacks::ParseCallbacks for OpaqueUnions {
    fn blocklisted_type_implements_trait(
        &self,
        name: &str,
        derive_trait: bindgen::callbacks::DeriveTrait,
    ) -> Option<bindgen::callbacks::ImplementsTrait> {
        use bindgen::callbacks::{DeriveTrait, ImplementsTrait};
        // bindgen gives the C spelling: "struct pf_addr", "union sockaddr_union".
        let bare = name.rsplit(' ').next().unwrap_or(name);
        if bare != "pf_addr" && bare != "sockaddr_union" {
            return None;
        }
        Some(match derive_trait {
            DeriveTrait::Copy | DeriveTrait::Default | DeriveTrait::PartialEqOrPartialOrd => {
                ImplementsTrait::Yes
            }
            DeriveTrait::Debug | DeriveTrait::Hash => ImplementsTrait::No,
        })
    }
}

/// The kernel items pfsyncd needs; bindgen follows their dependencies. Kept narrow so
/// the build stays fast.
const ALLOWLIST: &[&str] = &[
    // pfsync wire structures and constants
    "pfsync_.*",
    "pf_state_peer_export",
    "pf_state_key_export",
    "pf_state_scrub_export",
    "pfsyncstats",
    // pfsync0's configuration (SIOCGETPFSYNC), to refuse a kernel syncdev
    "pfsyncreq",
    "PFSYNC_.*",
    "PF_SCRUB_FLAG_VALID",
    "PF_MD5_DIGEST_LENGTH",
    "PF_TAG_NAME_SIZE",
    "IFNAMSIZ",
    "IPPROTO_PFSYNC",
    "AF_INET",
    "AF_INET6",
    // enumerations carried in state records
    "PFTM_.*",
    "PF_NOPFROUTE",
    "PF_FASTROUTE",
    "PF_ROUTETO",
    "PF_DUPTO",
    "PF_REPLYTO",
    "PFSTATE_.*",
    "PF_INOUT",
    "PF_IN",
    "PF_OUT",
    // the state ioctls and bpf, for the kernel edge
    "pfioc_state.*",
    "pfioc_tm",
    "pf_state_export",
    "bpf_.*",
    "DLT_(NULL|EN10MB|LOOP|RAW)",
    "BPF_D_IN",
    "BPF_DIRECTION_OUT",
    "ifreq",
    "ifgroupreq",
    // FreeBSD's pf netlink family
    "PFNL_CMD_GETSTATES",
    "PFNL_CMD_GET_STATUS",
    "pf_get_status_types_t",
    "pf_status",
    "pfstate_type_t",
    "pfstate_key_type_t",
    "pfstate_peer_type_t",
    "NLM_F_DUMP",
    "NLMSG_DONE",
    "NLA_F_NESTED",
    "CTRL_ATTR_.*",
    "pf_clear_states_type_t",
    "CTRL_CMD_GETFAMILY",
    "GENL_ID_CTRL",
    "nlmsghdr",
    "genlmsghdr",
    "nlattr",
    "sockaddr_nl",
    "AF_NETLINK",
];
