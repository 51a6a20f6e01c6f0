//! A cluster of hosts on one machine: a "switch" namespace holding a bridge, and one
//! namespace per host joined to it by a veth pair (`eth0` in the host), each host with
//! an address in 198.18.0.0/24 and 2001:db8:4c::/64 (benchmark and documentation ranges
//! that exist nowhere else), running `pfsyncd` with a memory table.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::netns::{sweep_stale, Netns};
use super::LabError;
use crate::daemon::control::request;

/// The directory of the cluster's files the engine processes are chrooted to.
pub const EMPTY_DIR: &str = "empty";

/// The unprivileged user of the lab's engine processes: pfsyncd's own if the machine
/// has it, else `nobody`.
pub fn lab_user() -> &'static str {
    match nix::unistd::User::from_name(crate::daemon::privsep::DEFAULT_USER) {
        Ok(Some(_)) => crate::daemon::privsep::DEFAULT_USER,
        _ => "nobody",
    }
}

/// One host of the cluster.
#[derive(Debug)]
pub struct Host {
    /// Its namespace.
    pub ns: Netns,
    /// Its IPv4 address on `eth0`.
    pub addr: Ipv4Addr,
    /// Its IPv6 address on `eth0`.
    pub addr6: Ipv6Addr,
    /// Its daemon's control socket.
    pub control: PathBuf,
    /// Its daemon's log (standard error).
    pub log: PathBuf,
    /// Its daemon's creator id.
    pub creatorid: u32,
    daemon: Option<Child>,
}

impl Host {
    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

/// The switch and the hosts; everything is torn down on drop.
#[derive(Debug)]
pub struct Cluster {
    // Hosts before the switch: their veths go with them.
    hosts: Vec<Host>,
    switch: Netns,
    prefix: String,
    dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    /// A switch with `hosts` hosts, no daemon running yet. `prefix` names the namespaces
    /// (`{prefix}{pid}-sw`, `…-h1`, …); `bin` is the pfsyncd executable.
    pub fn new(bin: &Path, prefix: &str, hosts: usize) -> Result<Cluster, LabError> {
        super::netns::check_root_and_ip()?;
        sweep_stale(prefix);
        let switch = Netns::new(prefix, "sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        // Multicast must flood: no snooping querier exists in the lab.
        switch.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let dir = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| LabError::Tool(format!("{}: {e}", dir.display())))?;
        // The engine processes' chroot: empty, root-owned, mode 755.
        let empty = dir.join(EMPTY_DIR);
        fs::create_dir_all(&empty)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&empty, fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| LabError::Tool(format!("{}: {e}", empty.display())))?;
        let mut cluster = Cluster {
            hosts: Vec::new(),
            switch,
            prefix: prefix.to_string(),
            dir,
            bin: bin.to_path_buf(),
        };
        for _ in 0..hosts {
            cluster.add_host()?;
        }
        Ok(cluster)
    }

    /// Adds a host (no daemon yet); returns its index.
    pub fn add_host(&mut self) -> Result<usize, LabError> {
        let i = self.hosts.len();
        let n = i + 1;
        if n > 250 {
            return Err(LabError::Tool("at most 250 hosts".into()));
        }
        let role = format!("h{n}");
        let ns = Netns::new(&self.prefix, &role)?;
        let port = format!("p{n}");
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        let addr = Ipv4Addr::new(198, 18, 0, n as u8);
        let addr6: Ipv6Addr = format!("2001:db8:4c::{n:x}").parse().expect("an address");
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{addr6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        self.hosts.push(Host {
            control: self.dir.join(format!("{role}.sock")),
            log: self.dir.join(format!("{role}.log")),
            creatorid: 0x0c0c_0000 + n as u32,
            ns,
            addr,
            addr6,
            daemon: None,
        });
        Ok(i)
    }

    /// Sets the MTU of every link of the lab (jumbo frames on a dedicated sync link).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), LabError> {
        let mtu = mtu.to_string();
        for (n, h) in self.hosts.iter().enumerate() {
            self.switch
                .ip(&["link", "set", &format!("p{}", n + 1), "mtu", &mtu])?;
            h.ns.ip(&["link", "set", "eth0", "mtu", &mtu])?;
        }
        self.switch.ip(&["link", "set", "br0", "mtu", &mtu])
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// One host.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The switch namespace (to capture, or to send from a hostile port).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The directory of control sockets and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts host `i`'s daemon in the foreground with a memory table, its control
    /// socket and creator id, then `args` (options, then `ifconfig` words; without
    /// words, `syncdev eth0 up`). Waits until it answers on its control socket.
    pub fn start(&mut self, i: usize, args: &[&str]) -> Result<(), LabError> {
        self.stop(i);
        let h = &mut self.hosts[i];
        let _ = fs::remove_file(&h.control);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&h.log)
            .map_err(|e| LabError::Tool(format!("{}: {e}", h.log.display())))?;
        let mut cmd = h.ns.command(&self.bin);
        cmd.arg("-d")
            .arg("-c")
            .arg(&h.control)
            .args(["--table", "memory", "--creatorid"])
            .arg(format!("{:08x}", h.creatorid));
        if !args.contains(&"--user") {
            cmd.args(["--user", lab_user()]);
        }
        if !args.contains(&"--chroot") {
            cmd.arg("--chroot").arg(self.dir.join(EMPTY_DIR));
        }
        cmd.args(args);
        let has_words = args.iter().any(|a| matches!(*a, "syncdev" | "up" | "down"));
        if !has_words {
            cmd.args(["syncdev", "eth0", "up"]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| LabError::Tool(format!("{}: {e}", self.bin.display())))?;
        h.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if request(&self.hosts[i].control, "status").is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.hosts[i].daemon.as_mut().map(Child::try_wait) {
                self.hosts[i].daemon = None;
                return Err(LabError::Daemon(format!(
                    "host {} daemon exited ({status}): {}",
                    i + 1,
                    self.log_tail(i, 5)
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError::Daemon(format!(
                    "host {} daemon does not answer: {}",
                    i + 1,
                    self.log_tail(i, 5)
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Stops host `i`'s daemon with SIGTERM (SIGKILL after 5 s); true if one ran.
    pub fn stop(&mut self, i: usize) -> bool {
        let Some(mut child) = self.hosts[i].daemon.take() else {
            return false;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Kills host `i`'s daemon with SIGKILL, as a crash would.
    pub fn crash(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to host `i`'s daemon.
    pub fn signal(&self, i: usize, signal: Signal) -> Result<(), LabError> {
        let pid = self.hosts[i]
            .pid()
            .ok_or_else(|| LabError::Daemon(format!("host {} runs no daemon", i + 1)))?;
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| LabError::Daemon(format!("kill {pid}: {e}")))
    }

    /// The daemon's exit status, if it has exited (then it no longer counts as running).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.hosts[i].daemon.as_mut()?.try_wait().ok()??;
        self.hosts[i].daemon = None;
        Some(status)
    }

    /// Sends a control request to host `i`'s daemon; an `error:` answer is an error.
    pub fn ctl(&self, i: usize, line: &str) -> Result<String, LabError> {
        let answer = request(&self.hosts[i].control, line).map_err(|e| {
            LabError::Daemon(format!(
                "host {}: {line}: {e}; its log ends: {}",
                i + 1,
                self.log_tail(i, 5)
            ))
        })?;
        if answer.starts_with("error:") {
            return Err(LabError::Daemon(format!(
                "host {}: {line}: {}",
                i + 1,
                answer.trim()
            )));
        }
        Ok(answer)
    }

    /// A `--json` request, parsed.
    pub fn ctl_json(&self, i: usize, line: &str) -> Result<Value, LabError> {
        let text = self.ctl(i, &format!("{line} --json"))?;
        serde_json::from_str(&text)
            .map_err(|e| LabError::Daemon(format!("host {}: {line}: bad JSON: {e}", i + 1)))
    }

    /// Host `i`'s states, by (creatorid, id), with what pfsync synchronises of each.
    pub fn synced_states(&self, i: usize) -> Result<Vec<(String, String, Value)>, LabError> {
        self.synced_states_lasting(i, 0)
    }

    /// Like [`synced_states`](Self::synced_states), without the states that expire in
    /// less than `secs` seconds: hosts expire states by their own clocks, so a state
    /// about to go may be gone on one host and not yet on another.
    pub fn synced_states_lasting(
        &self,
        i: usize,
        secs: u64,
    ) -> Result<Vec<(String, String, Value)>, LabError> {
        let v = self.ctl_json(i, "states")?;
        let mut out: Vec<(String, String, Value)> = v
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|s| s["local"]["expire"].as_u64().unwrap_or(0) >= secs)
            .map(|s| {
                (
                    s["creatorid"].as_str().unwrap_or("").to_string(),
                    s["id"].as_str().unwrap_or("").to_string(),
                    s["sync"].clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    /// The last `lines` lines of host `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.hosts[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join(" | ")
    }

    /// Host `i`'s address of family `v6`.
    pub fn addr(&self, i: usize, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.hosts[i].addr6)
        } else {
            IpAddr::V4(self.hosts[i].addr)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.stop(i);
        }
        self.hosts.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns how long
/// it took, or `None` on timeout.
pub fn wait_until(timeout: Duration, check: impl FnMut() -> bool) -> Option<Duration> {
    wait_until_every(timeout, Duration::from_millis(20), check)
}

/// [`wait_until`] polling every `period`: a benchmark's finer clock (each poll a
/// request the daemon answers, so not finer than the figure needs).
pub fn wait_until_every(
    timeout: Duration,
    period: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        sleep(period);
    }
}
