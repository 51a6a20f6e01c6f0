//! Privilege separation, shown on Linux with real daemons in network namespaces: the
//! engine process, which parses everything peers send, holds no root once started
//! (ids, capabilities, root directory, descriptors, read from /proc), while the parent
//! keeps root, the raw socket and the control socket; either process dying ends the other; a user or a
//! directory that would not confine it is refused at start.
//!
//! Needs root, iproute2 and the `nobody` user (or `_pfsyncd`); fails without them.

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

use pfsyncd::lab::{lab_user, wait_until, Cluster, EMPTY_DIR};

mod cluster;
use cluster::{cluster, serial};

/// `/proc/PID/status` as name → value.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn numbers(v: &str) -> Vec<u64> {
    v.split_whitespace().map(|n| n.parse().unwrap()).collect()
}

/// The inodes of the raw sockets open in `pid`'s network namespace.
fn raw_socket_inodes(pid: u32) -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["raw", "raw6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ...
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes
}

/// Where each descriptor of `pid` points.
fn descriptors(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            fs::read_link(e.unwrap().path())
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn socket_inode(target: &str) -> Option<&str> {
    target.strip_prefix("socket:[")?.strip_suffix(']')
}

fn engine_pid(c: &Cluster, i: usize) -> u32 {
    let st = c.ctl_json(i, "status").unwrap();
    st["engine"]["pid"]
        .as_u64()
        .expect("status names the engine process") as u32
}

#[test]
fn the_engine_process_holds_no_root() {
    let _g = serial();
    let mut c = cluster("priv", 2);
    c.start(0, &[]).unwrap();
    c.start(1, &[]).unwrap();
    // The separated daemons sync: host 0's states reach host 1 through both engines.
    c.ctl(0, "insert 200").unwrap();
    wait_until(Duration::from_secs(10), || {
        c.ctl_json(1, "status").unwrap()["states"] == 200
    })
    .expect("host 1 holds host 0's states");
    let parent = c.host(0).pid().unwrap();
    let engine = engine_pid(&c, 0);
    assert_ne!(engine, parent);
    let user = User::from_name(lab_user())
        .unwrap()
        .expect("the lab's user");
    let (uid, gid) = (u64::from(user.uid.as_raw()), u64::from(user.gid.as_raw()));
    assert_ne!(uid, 0);

    let e = proc_status(engine);
    assert_eq!(
        numbers(&e["PPid"]),
        vec![u64::from(parent)],
        "a child of the parent"
    );
    assert_eq!(e["Name"], "pfsyncd: engine");
    // Real, effective, saved and file-system ids: all unprivileged.
    assert_eq!(numbers(&e["Uid"]), vec![uid; 4], "{e:?}");
    assert_eq!(numbers(&e["Gid"]), vec![gid; 4], "{e:?}");
    assert_eq!(
        numbers(&e["Groups"]),
        vec![gid],
        "no supplementary group of root"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            u64::from_str_radix(&e[cap], 16).unwrap(),
            0,
            "{cap} {}",
            e[cap]
        );
    }
    assert_eq!(e["NoNewPrivs"], "1");
    // Its root is the empty directory.
    let root = fs::read_link(format!("/proc/{engine}/root")).unwrap();
    assert_eq!(root, c.dir().join(EMPTY_DIR));
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "the chroot is empty"
    );

    // The parent keeps root and the raw socket; the engine holds no raw socket and no
    // file but /dev/null and its log.
    let p = proc_status(parent);
    assert_eq!(numbers(&p["Uid"]), vec![0; 4]);
    let raw = raw_socket_inodes(parent);
    let parent_fds = descriptors(parent);
    assert!(
        parent_fds
            .iter()
            .filter_map(|t| socket_inode(t))
            .any(|i| raw.contains(i)),
        "the parent holds the raw socket: {parent_fds:?} vs raw {raw:?}"
    );
    // The engine holds its channels to the parent and nothing else but standard input,
    // output (/dev/null) and error (its log): no raw socket, no control socket, no file.
    let log = c.host(0).log.display().to_string();
    let mut sockets = 0;
    for target in descriptors(engine) {
        match socket_inode(&target) {
            Some(inode) => {
                assert!(!raw.contains(inode), "engine holds raw socket {inode}");
                sockets += 1;
            }
            None => assert!(
                target == "/dev/null" || target == log,
                "engine holds {target}"
            ),
        }
    }
    assert_eq!(sockets, 2, "its two channels to the parent only");
    // And it says so in the log, through the parent.
    let text = fs::read_to_string(&c.host(0).log).unwrap();
    assert!(
        text.contains(&format!(
            "engine process {engine} runs as {} in {}",
            lab_user(),
            root.display()
        )),
        "{text}"
    );
}

/// Waits until process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32, secs: u64) -> bool {
    wait_until(Duration::from_secs(secs), || {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    })
    .is_some()
}

#[test]
fn either_process_dying_ends_the_other() {
    let _g = serial();
    let mut c = cluster("die", 1);
    // The engine process killed: the daemon exits with an error, saying so, and
    // leaves no control socket behind.
    c.start(0, &[]).unwrap();
    let engine = engine_pid(&c, 0);
    kill(Pid::from_raw(engine as i32), Signal::SIGKILL).unwrap();
    let status = wait_until(Duration::from_secs(5), || c.exited(0).is_some());
    assert!(status.is_some(), "the parent outlived its engine");
    let said = c.log_tail(0, 3);
    assert!(
        said.contains(&format!(
            "engine process {engine} was killed by SIGKILL; exiting"
        )),
        "{said}"
    );
    assert!(!c.host(0).control.exists(), "control socket left behind");

    // The parent killed: the engine finds its channel closed and exits.
    c.start(0, &[]).unwrap();
    let engine = engine_pid(&c, 0);
    c.crash(0);
    assert!(
        gone(engine, 5),
        "engine process {engine} outlived its parent"
    );
}

#[test]
fn an_orderly_stop_takes_both_processes() {
    let _g = serial();
    let mut c = cluster("stop", 1);
    c.start(0, &[]).unwrap();
    let parent = c.host(0).pid().unwrap();
    let engine = engine_pid(&c, 0);
    assert!(c.stop(0));
    assert!(gone(engine, 5));
    assert!(gone(parent, 1));
    let said = c.log_tail(0, 4);
    assert!(
        said.contains("SIGTERM: engine sends what it holds and stops"),
        "{said}"
    );
    assert!(!c.host(0).control.exists());
}

/// Runs the daemon in the foreground in host 0 with `args`; its exit code and stderr.
fn start_with(c: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    let out = c
        .host(0)
        .ns
        .command(env!("CARGO_BIN_EXE_pfsyncd").as_ref())
        .arg("-d")
        .arg("-c")
        .arg(c.dir().join("e.sock"))
        .args(["--table", "memory"])
        .args(args)
        .args(["syncdev", "eth0", "up"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn a_user_or_directory_that_would_not_confine_is_refused() {
    let _g = serial();
    let c = cluster("conf", 1);
    let empty = c.dir().join(EMPTY_DIR).display().to_string();
    let writable: PathBuf = c.dir().join("writable");
    fs::create_dir_all(&writable).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&writable, fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let file = c.dir().join("a-file");
    fs::write(&file, b"").unwrap();
    let writable = writable.display().to_string();
    let file = file.display().to_string();
    for (args, says) in [
        (
            vec!["--user", "no-such-user-0", "--chroot", empty.as_str()],
            "user no-such-user-0 does not exist",
        ),
        (
            vec!["--user", "root", "--chroot", empty.as_str()],
            "user root has uid 0",
        ),
        (
            vec!["--user", lab_user(), "--chroot", writable.as_str()],
            "writable by group or others",
        ),
        (
            vec!["--user", lab_user(), "--chroot", "/no/such/dir"],
            "does not exist; create it",
        ),
        (
            vec!["--user", lab_user(), "--chroot", file.as_str()],
            "not a directory",
        ),
    ] {
        let (code, err) = start_with(&c, &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!Path::new(&c.dir().join("e.sock")).exists());
}

/// Runs `cmd` to its end (at most `secs`), with its output; `None` on timeout.
fn finish(mut cmd: std::process::Command, secs: u64) -> Option<std::process::Output> {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()?.ok()
}

/// Kills the daemon a pidfile names when dropped: a detached daemon is nobody's child,
/// and a failed test must not leave it running.
struct Reap(PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn a_detached_start_returns_once_the_engine_runs() {
    let _g = serial();
    let c = cluster("bg", 1);
    let pidfile = c.dir().join("bg.pid");
    let sock = c.dir().join("bg.sock");
    let daemon = |extra: &[&str]| {
        let mut cmd = c.host(0).ns.command(env!("CARGO_BIN_EXE_pfsyncd").as_ref());
        cmd.arg("--pidfile")
            .arg(&pidfile)
            .arg("-c")
            .arg(&sock)
            .args(["--table", "memory", "--user", lab_user(), "--chroot"])
            .arg(c.dir().join(EMPTY_DIR))
            .args(extra)
            .args(["syncdev", "eth0", "up"]);
        cmd
    };
    // The started process exits 0 only once the daemon runs, and leaves nothing of
    // the terminal behind (finish would wait on a pipe a daemon kept).
    let out = finish(daemon(&[]), 10).expect("the start returned");
    let _reap = Reap(pidfile.clone());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let parent: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let request = |line: &str| pfsyncd::daemon::control::request(&sock, line).unwrap();
    let status: serde_json::Value = serde_json::from_str(&request("status --json")).unwrap();
    let engine = status["engine"]["pid"].as_u64().unwrap() as u32;
    // A session of its own; the engine under it; neither holds the terminal's pipes.
    let stat = fs::read_to_string(format!("/proc/{parent}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], parent.to_string(), "session id");
    assert_eq!(
        numbers(&proc_status(engine)["PPid"]),
        vec![u64::from(parent)]
    );
    for pid in [parent, engine] {
        for fd in 0..3 {
            let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
            assert_eq!(target, Path::new("/dev/null"), "pid {pid} fd {fd}");
        }
    }
    // A second daemon on the same pidfile says so, on the terminal, and exits 1.
    let out = finish(daemon(&[]), 10).expect("returned");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("already running (pid {parent}")),
        "{err}"
    );
    // SIGTERM to the pid of the pidfile stops both and removes the files.
    kill(Pid::from_raw(parent as i32), Signal::SIGTERM).unwrap();
    assert!(gone(parent, 5) && gone(engine, 5));
    assert!(wait_until(Duration::from_secs(2), || !pidfile.exists()
        && !sock.exists())
    .is_some());
}
