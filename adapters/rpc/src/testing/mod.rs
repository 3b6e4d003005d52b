//! Real-server harnesses for tests and benchmarks (cargo feature `testing`): a fresh
//! `etcd` ([`EtcdServer`]) and a fresh ZooKeeper ([`ZooKeeperServer`]) started as child
//! processes on 127.0.0.1 with free high ports and their own temporary directories, ready
//! only after a real request succeeds, and killed (by PID) when dropped.
//!
//! A missing binary is an error whose message says what to install
//! (`apt-get install -y --no-install-recommends etcd-server etcd-client zookeeper`, Java);
//! tests turn it into a failure, never a skip.

mod etcd;
mod zookeeper;

pub use self::etcd::EtcdServer;
pub use self::zookeeper::ZooKeeperServer;

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A port free on 127.0.0.1, below the kernel's ephemeral range (an ephemeral port can be
/// taken by any outgoing connection at any moment) and never handed out twice per process.
pub fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // 20000.. keeps clear of the sibling SLB tests' range (10000..).
    let (low, high) = (20_000u32, ephemeral_low.max(22_000));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut candidate = low + (std::process::id().wrapping_mul(7919) ^ nanos) % (high - low);
    for _ in 0..5_000 {
        candidate = if candidate + 1 >= high { low } else { candidate + 1 };
        let port = candidate as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && taken.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
        {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 below the ephemeral range");
}

/// A fresh, empty temporary directory for one server.
pub(crate) fn temp_dir(kind: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-rpc-{kind}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// The last lines of a log file, for error messages.
pub(crate) fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}
