//! Linux network namespaces driven through iproute2's `ip`: the hosts of the lab and of
//! the cluster tests. Every namespace is deleted when its value is dropped (also on a
//! panic), and [`sweep_stale`] deletes those of processes that died before cleaning up.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use nix::sched::{setns, CloneFlags};

use super::LabError;

/// Runs `ip args…`.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| LabError::Tool(format!("cannot run ip(8): {e} (apt-get install iproute2)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Tool(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Fails unless the lab can work here: root, and `ip`.
pub fn check_root_and_ip() -> Result<(), LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    ip(&["-V"])
}

/// A network namespace named `{prefix}{pid}-{role}`.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn new(prefix: &str, role: &str) -> Result<Netns, LabError> {
        let name = format!("{prefix}{}-{role}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns exec` takes it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> Result<(), LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this namespace; sockets opened there stay in
    /// it wherever they are used later.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .map_err(|e| LabError::Tool(format!("/run/netns/{}: {e}", self.name)))?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| LabError::Tool(format!("setns: {e}")))?;
                Ok(f())
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Deletes the namespaces `{prefix}{pid}-…` whose process is gone.
pub fn sweep_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
