//! `pfsyncd lab`: a cluster of pfsyncd daemons on this machine, in network namespaces
//! joined by a bridge, with synthetic traffic, shown live. Everything it creates is
//! removed when it ends, on Ctrl-C too.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{SigSet, Signal};
use serde_json::Value;

use pfsyncd::lab::{compare, wait_until, Cluster};

/// Namespaces of the lab are called `pfsd-lab-PID-…`.
const PREFIX: &str = "pfsd-lab-";

/// Run a pfsync cluster on this machine (root, Linux).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of firewalls.
    #[arg(short = 'n', long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=32))]
    pub nodes: u8,
    /// States node 1 holds before the others start (they bulk-sync them).
    #[arg(long, default_value_t = 10_000)]
    pub states: usize,
    /// Changes per second made on node 1 (inserts, updates, deletes).
    #[arg(long, default_value_t = 2_000)]
    pub churn: u32,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Give each node another dialect in turn (openbsd, 1301, 1400, 1500): a mixed
    /// OpenBSD/FreeBSD cluster.
    #[arg(long)]
    pub mixed: bool,
    /// Drop this percentage of pfsync packets arriving at the last node (nftables).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub loss: u8,
}

const DIALECTS: [&str; 4] = ["openbsd", "1301", "1400", "1500"];

/// Runs the lab.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    let bin: PathBuf = std::env::current_exe().context("finding the pfsyncd executable")?;
    let n = usize::from(args.nodes);
    println!("pfsyncd lab: {n} firewalls in network namespaces {PREFIX}{}-*, bridged; Ctrl-C ends it and cleans up", std::process::id());
    let mut cluster = Cluster::new(&bin, PREFIX, n)?;
    let dialect = |i: usize| {
        if args.mixed {
            DIALECTS[i % DIALECTS.len()]
        } else {
            "1400"
        }
    };
    cluster.start(0, &["version", dialect(0), "syncdev", "eth0", "up"])?;
    if args.states > 0 {
        let mut left = args.states;
        while left > 0 {
            let chunk = left.min(100_000);
            cluster.ctl(0, &format!("insert {chunk}"))?;
            left -= chunk;
        }
        println!("node 1: {} states", args.states);
    }
    if args.loss > 0 {
        add_loss(&cluster, n - 1, args.loss)?;
        println!(
            "node {n}: dropping {} % of arriving pfsync packets",
            args.loss
        );
    }
    let started = Instant::now();
    for i in 1..n {
        cluster.start(i, &["version", dialect(i), "syncdev", "eth0", "up"])?;
    }
    let synced = wait_until(Duration::from_secs(60), || {
        stop.load(Ordering::Relaxed)
            || (1..n).all(|i| {
                cluster
                    .ctl_json(i, "status")
                    .is_ok_and(|s| s["bulk"] == "done")
            })
    });
    if stop.load(Ordering::Relaxed) {
        println!("interrupted; removing namespaces");
        return Ok(ExitCode::SUCCESS);
    }
    match synced {
        Some(t) => {
            let counts: Vec<String> = (1..n)
                .map(|i| {
                    cluster
                        .ctl_json(i, "status")
                        .map(|s| s["states"].to_string())
                        .unwrap_or_else(|_| "?".into())
                })
                .collect();
            println!(
                "nodes 2-{n} finished their bulk update in {:.2} s, holding {} states (node 1: {})",
                t.as_secs_f64(),
                counts.join(", "),
                args.states
            );
        }
        None => println!(
            "nodes 2-{n}: bulk update not finished after 60 s{}",
            if dialect(0) == "openbsd" {
                // OpenBSD's bulk pace, kept by a daemon speaking its dialect.
                " (node 1 speaks OpenBSD's dialect and sends at its pace: 50 packets/s of about 5 states; fewer --states end it sooner)"
            } else {
                ""
            }
        ),
    }
    if args.churn > 0 {
        cluster.ctl(
            0,
            &format!("churn {} {}", args.churn, args.states.max(1000)),
        )?;
    }
    let view = View::new(n, std::io::stdout().is_terminal());
    let mut last = view.sample(&cluster)?;
    let mut probe = Probe::default();
    let mut tick = Instant::now();
    while !stop.load(Ordering::Relaxed)
        && (args.duration == 0 || started.elapsed() < Duration::from_secs(args.duration))
    {
        probe.step(&cluster, n)?;
        if tick.elapsed() >= Duration::from_secs(1) {
            let now = view.sample(&cluster)?;
            view.show(&now, &last, &probe, started.elapsed(), args);
            last = now;
            tick = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for i in 0..n {
            if let Some(status) = cluster.exited(i) {
                bail!(
                    "node {} daemon exited ({status}): {}",
                    i + 1,
                    cluster.log_tail(i, 5)
                );
            }
        }
    }
    if stop.load(Ordering::Relaxed) {
        println!("interrupted; removing namespaces");
        return Ok(ExitCode::SUCCESS);
    }
    let _ = cluster.ctl(0, "churn 0");
    println!("churn stopped; checking that every node holds the same states...");
    // Each node expires states by its own clock, and the nodes are read one after the
    // other: a state about to expire may be gone on one and not yet on another. So
    // node 1's states with 10 s or more to live must be on every node, the same, and
    // no node may hold a state with 15 s or more to live that node 1 lacks.
    let project = agreement(args);
    let converged = wait_until(Duration::from_secs(15), || {
        let keyed = |i: usize, secs: u64| {
            cluster.synced_states_lasting(i, secs).map(|v| {
                v.into_iter()
                    .map(|(c, id, s)| ((c, id), project(&s)))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
        };
        let (Ok(first), Ok(first_all)) = (keyed(0, 10), keyed(0, 0)) else {
            return false;
        };
        (1..n).all(|i| {
            let (Ok(near), Ok(far)) = (keyed(i, 0), keyed(i, 15)) else {
                return false;
            };
            first.iter().all(|(k, v)| near.get(k) == Some(v))
                && far.keys().all(|k| first_all.contains_key(k))
        })
    });
    match converged {
        Some(t) => println!(
            "converged: {} states {} on {n} nodes ({:.2} s after churn stopped; states expiring within 10 s not compared)",
            cluster.synced_states_lasting(0, 10).map(|s| s.len()).unwrap_or(0),
            if args.mixed {
                "agreeing in what every dialect carries"
            } else {
                "identical"
            },
            t.as_secs_f64()
        ),
        None => {
            for i in 0..n {
                println!(
                    "node {}: {} states",
                    i + 1,
                    cluster.synced_states(i).map(|s| s.len()).unwrap_or(0)
                );
            }
            for i in 1..n {
                if let Some(diff) = differences(&cluster, i, project) {
                    println!("node {} against node 1: {diff}", i + 1);
                }
            }
            println!("not converged: pfsync never retransmits; lost updates heal on the state's next change (or `pfsyncd ctl bulk`)");
        }
    }
    print_counters(&cluster, n);
    println!(
        "logs were in {}; removing namespaces",
        cluster.dir().display()
    );
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

/// How node `i`'s states differ from node 1's: how many it lacks, has in excess or holds
/// otherwise, with one example of each (its key, protocol, timeout class and time left
/// on both nodes), so a divergence can be told from a state about to expire.
fn differences(cluster: &Cluster, i: usize, project: fn(&Value) -> Value) -> Option<String> {
    let all =
        |n: usize| -> Option<std::collections::BTreeMap<(String, String), serde_json::Value>> {
            let v = cluster.ctl_json(n, "states").ok()?;
            Some(
                v.as_array()?
                    .iter()
                    .map(|s| {
                        let key = (
                            s["creatorid"].as_str().unwrap_or("").to_string(),
                            s["id"].as_str().unwrap_or("").to_string(),
                        );
                        (key, s.clone())
                    })
                    .collect(),
            )
        };
    let (first, other) = (all(0)?, all(i)?);
    let show = |s: &serde_json::Value, twin: Option<&serde_json::Value>| {
        format!(
            "{}/{} proto {} timeout {} expire {} s{}",
            s["creatorid"].as_str().unwrap_or("?"),
            s["id"].as_str().unwrap_or("?"),
            s["sync"]["wire"]["proto"],
            s["sync"]["timeout"],
            s["local"]["expire"],
            twin.map_or(String::new(), |t| format!(
                " (here {} s)",
                t["local"]["expire"]
            ))
        )
    };
    let lacks: Vec<_> = first
        .iter()
        .filter(|(k, _)| !other.contains_key(*k))
        .collect();
    let extra: Vec<_> = other
        .iter()
        .filter(|(k, _)| !first.contains_key(*k))
        .collect();
    let differ: Vec<_> = first
        .iter()
        .filter_map(|(k, s)| {
            other
                .get(k)
                .filter(|o| project(&o["sync"]) != project(&s["sync"]))
                .map(|o| (s, o))
        })
        .collect();
    if lacks.is_empty() && extra.is_empty() && differ.is_empty() {
        return None;
    }
    let mut out = format!(
        "lacks {}, has {} more, {} differ",
        lacks.len(),
        extra.len(),
        differ.len()
    );
    if let Some((_, s)) = lacks.first() {
        out += &format!("; lacks e.g. {}", show(s, None));
    }
    if let Some((_, s)) = extra.first() {
        out += &format!("; has e.g. {}", show(s, None));
    }
    if let Some((s, o)) = differ.first() {
        out += &format!("; differs e.g. {}", show(s, Some(o)));
    }
    Some(out)
}

/// The counters a reader of the table above asks about at the end, per node: `stale`
/// (a peer's copy older than ours came in, and ours went back at once) and `badstate`
/// (mostly the DEL_C of a state this node had already expired by its own clock: every
/// node sends one when a state expires, as the kernels do).
fn print_counters(cluster: &Cluster, n: usize) {
    let counters: Vec<String> = (0..n)
        .map(|i| {
            let stats = cluster.ctl_json(i, "stats").unwrap_or(Value::Null);
            let get = |name: &str| stats["pfsync"][name].as_u64().unwrap_or(0);
            format!(
                "node {}: stale {}, badstate {}",
                i + 1,
                get("stale"),
                get("badstate")
            )
        })
        .collect();
    println!("counters: {}", counters.join("; "));
}

/// What the nodes' copies of a state must agree on: all of it in a cluster of one
/// dialect, what every dialect carries in a mixed one.
fn agreement(args: &Args) -> fn(&Value) -> Value {
    if args.mixed {
        compare::carried_by_every_dialect
    } else {
        compare::whole
    }
}

/// SIGINT/SIGTERM/SIGHUP set `stop` (the daemons, in our process group, get Ctrl-C's
/// SIGINT too and stop themselves; the cluster's drop cleans up what is left).
fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if mask.wait().is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .context("signal thread")?;
    Ok(())
}

fn add_loss(cluster: &Cluster, i: usize, percent: u8) -> anyhow::Result<()> {
    let rules = format!(
        "table inet pfsyncd_lab {{\n chain input {{\n  type filter hook input priority 0;\n  meta l4proto 240 numgen random mod 100 < {percent} drop\n }}\n}}\n"
    );
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", cluster.host(i).ns.name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).context("nft")?;
    }
    let out = child.wait_with_output().context("nft")?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// How long a state inserted on node 1 takes to reach the others: one probe at a time.
#[derive(Default)]
struct Probe {
    current: Option<(String, String, Instant, Vec<Option<Duration>>)>,
    /// The last completed probe's slowest arrival.
    last: Option<Duration>,
    next: Option<Instant>,
}

impl Probe {
    fn step(&mut self, cluster: &Cluster, n: usize) -> anyhow::Result<()> {
        match &mut self.current {
            None => {
                if self.next.is_some_and(|t| Instant::now() < t) {
                    return Ok(());
                }
                let answer = cluster.ctl(0, "insert 1")?;
                // "inserted 1: creatorid C ids A to A"
                let words: Vec<&str> = answer.split_whitespace().collect();
                let (Some(c), Some(id)) = (words.get(3), words.get(5)) else {
                    bail!("unexpected answer to insert: {answer}");
                };
                self.current = Some((c.to_string(), id.to_string(), Instant::now(), vec![None; n]));
            }
            Some((c, id, at, seen)) => {
                for (i, s) in seen.iter_mut().enumerate().skip(1) {
                    if s.is_none() && cluster.ctl(i, &format!("get {c} {id}")).is_ok() {
                        *s = Some(at.elapsed());
                    }
                }
                if seen.iter().skip(1).all(Option::is_some) || at.elapsed() > Duration::from_secs(5)
                {
                    self.last = seen
                        .iter()
                        .skip(1)
                        .map(|s| s.unwrap_or(Duration::from_secs(5)))
                        .max();
                    self.current = None;
                    self.next = Some(Instant::now() + Duration::from_millis(500));
                }
            }
        }
        Ok(())
    }
}

/// One second's figures per node.
struct Sample {
    at: Instant,
    status: Vec<Value>,
    stats: Vec<Value>,
}

struct View {
    nodes: usize,
    tty: bool,
}

impl View {
    fn new(nodes: usize, tty: bool) -> View {
        View { nodes, tty }
    }

    fn sample(&self, cluster: &Cluster) -> anyhow::Result<Sample> {
        let mut status = Vec::new();
        let mut stats = Vec::new();
        for i in 0..self.nodes {
            status.push(cluster.ctl_json(i, "status")?);
            stats.push(cluster.ctl_json(i, "stats")?);
        }
        Ok(Sample {
            at: Instant::now(),
            status,
            stats,
        })
    }

    fn show(&self, now: &Sample, last: &Sample, probe: &Probe, elapsed: Duration, args: &Args) {
        let mut out = String::new();
        if self.tty {
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&format!(
            "pfsyncd lab: {} nodes, churn {}/s on node 1, {:.0} s{}\n",
            self.nodes,
            args.churn,
            elapsed.as_secs_f64(),
            if args.loss > 0 {
                format!(", {} % loss into node {}", args.loss, self.nodes)
            } else {
                String::new()
            }
        ));
        let dt = now.at.duration_since(last.at).as_secs_f64().max(0.001);
        let rate = |i: usize, counter: &str| {
            let get = |s: &Sample| s.stats[i]["pfsync"][counter].as_u64().unwrap_or(0);
            (get(now).saturating_sub(get(last))) as f64 / dt
        };
        out.push_str(
            "node  version  states   cached   in pkt/s  out pkt/s  stale  badval  syncok  bulk\n",
        );
        let reference = now.status[0]["states"].as_u64().unwrap_or(0);
        for i in 0..self.nodes {
            let s = &now.status[i];
            let st = &now.stats[i];
            let states = s["states"].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "{:<5} {:<8} {:<8} {:<8} {:<9.0} {:<10.0} {:<6} {:<7} {:<7} {}{}\n",
                i + 1,
                s["version"].as_str().unwrap_or("?"),
                states,
                s["cached"].as_u64().unwrap_or(0),
                rate(i, "ipackets"),
                rate(i, "opackets"),
                st["pfsync"]["stale"].as_u64().unwrap_or(0),
                st["pfsync"]["badval"].as_u64().unwrap_or(0),
                if s["syncok"] == true { "1" } else { "0" },
                s["bulk"].as_str().unwrap_or("?"),
                if i > 0 && states != reference {
                    format!("  ({:+} vs node 1)", states as i64 - reference as i64)
                } else {
                    String::new()
                }
            ));
        }
        match probe.last {
            Some(lag) => out.push_str(&format!(
                "lag: a state inserted on node 1 reached every node in {:.0} ms (pfsync sends a change at the latest 1 s after it)\n",
                lag.as_secs_f64() * 1000.0
            )),
            None => out.push_str("lag: measuring...\n"),
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}
