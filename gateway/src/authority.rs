//! Who may act: the one place every adapter write and every pod write asks first.
//!
//! A gateway acts only while it holds the leader lease (or runs without leader election),
//! is not in shadow mode, and is not shutting down with its work handed off. The lease
//! gives a deadline: a leader that could not renew stops writing when its *renew
//! deadline* passes, which is shorter than the lease itself, so a standby that takes the
//! lease over never overlaps with it ([`crate::lease`]).
//!
//! Pausing stops new work only: a drain or restore already under way finishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How this gateway was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only writer: no leader election configured.
    Sole,
    /// One of several replicas: writes only while it holds the lease.
    Elected,
    /// Watches, plans and reports what it would do; never writes.
    Shadow,
}

#[derive(Debug)]
pub struct Authority {
    role: Role,
    /// Writes are allowed until this instant (leader election only).
    lease_until: Mutex<Option<Instant>>,
    paused: AtomicBool,
    stopping: AtomicBool,
    /// Wakes what sleeps when the gateway starts shutting down.
    stop_signal: tokio::sync::watch::Sender<bool>,
}

impl Authority {
    pub fn new(role: Role, paused: bool) -> Authority {
        Authority {
            role,
            lease_until: Mutex::new(None),
            paused: AtomicBool::new(paused),
            stopping: AtomicBool::new(false),
            stop_signal: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this gateway may write to pods and backends now.
    pub fn may_write(&self) -> bool {
        match self.role {
            Role::Sole => true,
            Role::Shadow => false,
            Role::Elected => self
                .lease_until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|until| Instant::now() < until),
        }
    }

    /// How long writes remain allowed (`None`: no deadline — sole writer). A write is
    /// bounded by it, so one that could not finish in time is abandoned, not left to land
    /// after a standby took over.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        match self.role {
            Role::Sole => None,
            Role::Shadow => Some(std::time::Duration::ZERO),
            Role::Elected => Some(
                self.lease_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map(|u| u.saturating_duration_since(Instant::now()))
                    .unwrap_or_default(),
            ),
        }
    }

    /// Whether this replica holds the lease (or needs none): it runs the workers.
    pub fn leading(&self) -> bool {
        self.role != Role::Elected || self.may_write()
    }

    /// The lease was renewed: writes are allowed until `until`.
    pub fn renewed(&self, until: Instant) {
        *self.lease_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// The lease is lost or given up: no write from now on.
    pub fn revoke(&self) {
        *self.lease_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Returns whether it changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::SeqCst) != paused
    }

    /// Shutting down: no new work starts.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_signal.send_replace(true);
    }

    /// Sleeps `d`, or less if the gateway starts shutting down meanwhile.
    pub async fn sleep(&self, d: std::time::Duration) {
        let mut rx = self.stop_signal.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = rx.wait_for(|s| *s) => {}
        }
    }

    /// One line for `/healthz` and the logs.
    pub fn describe(&self) -> String {
        let role = match (self.role, self.may_write()) {
            (Role::Sole, _) => "sole writer",
            (Role::Shadow, _) => "shadow (writes nothing)",
            (Role::Elected, true) => "leader",
            (Role::Elected, false) => "standby",
        };
        let mut s = role.to_string();
        if self.paused() {
            s.push_str(", paused (no new drain or restore starts)");
        }
        if self.stopping() {
            s.push_str(", shutting down");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_elected_gateway_writes_only_before_its_renew_deadline() {
        let a = Authority::new(Role::Elected, false);
        assert!(!a.may_write(), "no lease yet");
        a.renewed(Instant::now() + Duration::from_secs(5));
        assert!(a.may_write() && a.leading());
        a.renewed(Instant::now() - Duration::from_millis(1));
        assert!(!a.may_write(), "past the deadline, even without a lost-lease event");
        a.renewed(Instant::now() + Duration::from_secs(5));
        a.revoke();
        assert!(!a.may_write());
        assert_eq!(a.describe(), "standby");
    }

    #[test]
    fn shadow_never_writes_and_sole_always_does() {
        assert!(!Authority::new(Role::Shadow, false).may_write());
        let sole = Authority::new(Role::Sole, true);
        assert!(sole.may_write());
        assert_eq!(sole.describe(), "sole writer, paused (no new drain or restore starts)");
    }
}
