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

/// A port free on 127.0.0.1, below the kernel's ephemeral range (an ephemeral port can be
/// taken by any outgoing connection at any moment) and never handed out twice per process.
pub use sluice_adapter::testing::free_port;
pub(crate) use sluice_adapter::testing::temp_dir;
