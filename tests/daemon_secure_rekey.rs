//! Re-keying the secure link by SIGHUP between real daemons: the parent reads the key
//! files again and hands them to the confined engine process, which re-keys the link
//! (a new private key: every peer; a new pre-shared key: that peer alone).
//!
//! Each host's secure words are in a file (`-f`), so a SIGHUP reads them again. The
//! plain link points at an address nobody holds: only the secure link carries states.
//!
//! Needs root, iproute2 and the lab's namespaces, as tests/daemon_cluster.rs.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pfsyncd::lab::{wait_until, Cluster};
use serde_json::Value;

mod cluster;
use cluster::keys::{key_file, keypair};
use cluster::{cluster, serial};

/// Two hosts, each with its key file and a configuration file naming the other as its
/// secure peer; the plain link goes nowhere.
struct Pair {
    c: Cluster,
    key: [PathBuf; 2],
    conf: [PathBuf; 2],
    psk: Option<PathBuf>,
}

impl Pair {
    fn start(tag: &str, keys: &[(String, String); 2], psk: bool) -> Pair {
        let c = cluster(tag, 2);
        let dir = c.dir().to_path_buf();
        let psk = psk.then(|| {
            let path = dir.join("psk");
            key_file(&path, &keypair().0);
            path
        });
        let mut pair = Pair {
            c,
            key: [dir.join("key0"), dir.join("key1")],
            conf: [dir.join("h0.conf"), dir.join("h1.conf")],
            psk,
        };
        for i in 0..2 {
            key_file(&pair.key[i], &keys[i].0);
            pair.write_conf(i, &keys[1 - i].1);
            let conf = pair.conf[i].display().to_string();
            pair.c
                .start(
                    i,
                    &[
                        "-f",
                        &conf,
                        "syncdev",
                        "eth0",
                        "syncpeer",
                        "192.0.2.250",
                        "up",
                    ],
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
        pair
    }

    /// Host `i`'s secure words, believing its peer's public key is `peer_key`.
    fn write_conf(&self, i: usize, peer_key: &str) {
        let mut words = format!(
            "securekey {}\nsecurepeer {} pubkey {peer_key}",
            self.key[i].display(),
            self.c.addr(1 - i, false)
        );
        if let Some(psk) = &self.psk {
            words.push_str(&format!(" psk {}", psk.display()));
        }
        words.push('\n');
        fs::write(&self.conf[i], words).unwrap();
    }

    fn sighup(&self, i: usize) {
        self.c.signal(i, Signal::SIGHUP).unwrap();
    }

    fn states(&self, i: usize) -> usize {
        self.c.synced_states(i).map_or(0, |s| s.len())
    }

    fn peer(&self, i: usize) -> Value {
        self.c.ctl_json(i, "stats").unwrap()["secure"]["peers"][0].clone()
    }

    /// Waits until both hosts hold `n` states; the failure says what each holds.
    fn wait_states(&self, n: usize, what: &str) {
        let synced = wait_until(Duration::from_secs(15), || {
            self.states(0) == n && self.states(1) == n
        });
        assert!(
            synced.is_some(),
            "{what}: host 1 {} host 2 {} states, {n} wanted\nstats 2: {}\nlog 1: {}\nlog 2: {}",
            self.states(0),
            self.states(1),
            self.c.ctl(1, "stats").unwrap_or_default(),
            self.c.log_tail(0, 12),
            self.c.log_tail(1, 12)
        );
    }

    fn log_has(&self, i: usize, text: &str) -> bool {
        wait_until(Duration::from_secs(5), || {
            fs::read_to_string(&self.c.host(i).log)
                .unwrap_or_default()
                .contains(text)
        })
        .is_some()
    }
}

/// Host 1 takes a new private key (its key file rewritten, SIGHUP), host 2 learns the
/// new public key (its configuration, SIGHUP): the link comes back with the new key.
/// Then a new pre-shared key for both, and a key file that others can read, which
/// leaves the running key in place.
#[test]
fn sighup_rekeys_the_link_and_its_preshared_key() {
    let _serial = serial();
    let keys = [keypair(), keypair()];
    let p = Pair::start("srk", &keys, true);
    p.c.ctl(0, "insert 10").unwrap();
    p.wait_states(10, "before any re-key");

    let rotated = keypair();
    key_file(&p.key[0], &rotated.0);
    p.sighup(0);
    assert!(
        p.log_has(0, "secure link: new private key"),
        "host 1 took no new key: {}",
        p.c.log_tail(0, 8)
    );
    p.write_conf(1, &rotated.1);
    p.sighup(1);
    p.c.ctl(0, "insert 20").unwrap();
    p.c.ctl(1, "insert 15").unwrap();
    p.wait_states(45, "after host 1's new private key");
    let peer = p.peer(1);
    assert_eq!(peer["public_key"], rotated.1.as_str(), "{peer}");
    assert_eq!(peer["handshake"], "established", "{peer}");

    // A new pre-shared key, read by both on their SIGHUP.
    key_file(p.psk.as_ref().unwrap(), &keypair().0);
    p.sighup(0);
    p.sighup(1);
    assert!(p.log_has(0, "new pre-shared key"), "{}", p.c.log_tail(0, 8));
    assert!(p.log_has(1, "new pre-shared key"), "{}", p.c.log_tail(1, 8));
    p.c.ctl(0, "insert 5").unwrap();
    p.wait_states(50, "after the new pre-shared key");

    // A key file others can read is refused as at start; the running key stays.
    fs::set_permissions(&p.key[0], fs::Permissions::from_mode(0o644)).unwrap();
    p.sighup(0);
    assert!(
        p.log_has(0, "the running private key stays"),
        "{}",
        p.c.log_tail(0, 8)
    );
    p.c.ctl(0, "insert 5").unwrap();
    p.wait_states(55, "after a refused key file");
}

/// The churn's changes made so far (inserts, updates, deletes).
fn churn_made(c: &Cluster, i: usize) -> u64 {
    c.ctl_json(i, "stats").unwrap()["churn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// Host `i`'s states that live 5 s or more, keyed, with what pfsync synchronises.
fn table(c: &Cluster, i: usize) -> BTreeMap<(String, String), Value> {
    c.synced_states_lasting(i, 5)
        .unwrap()
        .into_iter()
        .map(|(creator, id, sync)| ((creator, id), pfsyncd::lab::compare::whole(&sync)))
        .collect()
}

/// Host 1 churns; its key is rotated (host 1 first, then host 2 learns the new public
/// key); the churn stops; host 2's table must equal host 1's: the packets made while
/// the link was down waited in the tunnel for the new session, none lost.
#[test]
fn a_key_rotation_under_churn_loses_nothing() {
    let _serial = serial();
    let keys = [keypair(), keypair()];
    let p = Pair::start("srkc", &keys, false);
    p.c.ctl(0, "churn 1000 600").unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let rotated = keypair();
    let made_before = churn_made(&p.c, 0);
    let packets_before = p.peer(1)["packets_in"].as_u64().unwrap();
    key_file(&p.key[0], &rotated.0);
    let down = Instant::now();
    p.sighup(0);
    // An admin's pace: host 2 learns the new key a little later.
    std::thread::sleep(Duration::from_millis(300));
    p.write_conf(1, &rotated.1);
    p.sighup(1);
    let up = wait_until(Duration::from_secs(15), || {
        let peer = p.peer(1);
        peer["public_key"] == rotated.1.as_str()
            && peer["handshake"] == "established"
            && peer["packets_in"].as_u64() > Some(packets_before)
    })
    .map(|_| down.elapsed());
    let made_during = churn_made(&p.c, 0) - made_before;
    let Some(gap) = up else {
        panic!(
            "the link did not come back: {}\nlog 1: {}\nlog 2: {}",
            p.peer(1),
            p.c.log_tail(0, 10),
            p.c.log_tail(1, 10)
        );
    };
    std::thread::sleep(Duration::from_secs(1));
    p.c.ctl(0, "churn 0").unwrap();
    let made = churn_made(&p.c, 0);
    let agreed = wait_until(Duration::from_secs(15), || table(&p.c, 0) == table(&p.c, 1));
    let (a, b) = (table(&p.c, 0), table(&p.c, 1));
    let differing = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count()
        + b.keys().filter(|k| !a.contains_key(*k)).count();
    eprintln!(
        "rotation under churn: {made} changes in all, {made_during} from host 1's SIGHUP until \
         host 2 had packets on the new session ({} ms, host 2's SIGHUP 300 ms after host 1's); \
         {} states on host 1, {differing} differing",
        gap.as_millis(),
        a.len()
    );
    assert!(
        agreed.is_some(),
        "host 2's table differs from host 1's in {differing} states of {}",
        a.len()
    );
    assert!(a.len() > 100, "the churn made too few states: {}", a.len());
}
