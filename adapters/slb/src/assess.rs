//! The evidence rules, as a pure function: what HAProxy shows for one server → where the
//! target's traffic stands, and which runtime-API step (if any) the drain needs next.
//! `observe` reports the state and sets `advance` when the step is not "–"; only
//! `deregister` takes the step (the engine calls it again at once on `advance`).
//!
//! | admin state | sessions (`scur`, `used_cur`) | state | next step (`deregister`) |
//! |---|---|---|---|
//! | (server absent) | – | `Drained` ("server absent") | – |
//! | maint | any > 0 | `Draining` | – (`maint` does not cut sessions) |
//! | maint | 0 and 0, static | `Drained` | – |
//! | maint | 0 and 0, dynamic | `Draining` | `del server` (then absent: `Drained`) |
//! | drain | 0 and 0 | `Draining` | `set ... state maint`, then re-read (dynamic, still idle: `del server`) |
//! | drain | any > 0, younger than `escalate_after` | `Draining` (`remaining`: time to escalation) | – |
//! | drain | any > 0, older than `escalate_after` | `Draining` | escalate: `maint` (+ `shutdown sessions`) |
//! | ready | op state UP | `Serving` | (`deregister`: `set ... state drain`) |
//! | ready | op state DOWN | `Registered` | (`deregister`: `set ... state drain`) |
//!
//! Idle pooled connections (`idle_cur`) carry no work and are ignored. `Drained` is only
//! ever reported for a server in `maint` (or absent): once in `maint` HAProxy sends it
//! nothing, not even sticky clients, so a zero reading there cannot be undone by a
//! request that slipped in between reading the counters and acting on them. Whether a
//! `Drained` target was reached by cutting sessions (escalation with `shutdown sessions`)
//! is not visible in HAProxy's counters: the adapter remembers it and reports it as
//! `forced` (see [`crate::adapter`]).

use std::time::Duration;

use sluice_adapter::TrafficState;

use crate::parse::ServerState;

/// What HAProxy shows for one server, gathered from three runtime-API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    /// From `show servers state`: name, address, admin/op/check state.
    pub state: ServerState,
    /// `show stat` `status` column (`UP`, `DOWN 1/2`, `DRAIN`, `MAINT`, `no check`, ...).
    pub status: String,
    /// `show stat` `check_status` column (`L4OK`, `L4CON`, `INI`, empty without a check).
    pub check_status: String,
    /// `show stat` `scur`: current sessions on the server.
    pub scur: u64,
    /// `show servers conn` `used_cur`: connections in use.
    pub used_cur: u64,
    /// `show servers conn` `idle_cur`: idle pooled connections (reported, ignored).
    pub idle_cur: u64,
}

impl ServerView {
    /// Whether any work is still on the server.
    pub fn busy(&self) -> bool {
        self.scur > 0 || self.used_cur > 0
    }

    /// `server=web/s1 status=DRAIN scur=3 used_cur=1`.
    pub fn evidence(&self) -> String {
        let mut s = format!(
            "server={}/{} status={} scur={} used_cur={}",
            self.state.backend, self.state.name, self.status, self.scur, self.used_cur
        );
        if self.idle_cur > 0 {
            s.push_str(&format!(" idle_cur={} (ignored)", self.idle_cur));
        }
        if self.state.admin.is_ready() {
            if self.state.check_enabled() {
                s.push_str(&format!(
                    " check={}",
                    if self.check_status.is_empty() {
                        "-"
                    } else {
                        &self.check_status
                    }
                ));
            } else {
                s.push_str(" check=none (no health check: UP is not verified)");
            }
        }
        s
    }
}

/// The next runtime-API step a drain needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// Drain verified (no sessions): `set server ... state maint`, then verify again.
    Maint,
    /// The drain outlived `escalate_after` with sessions left: `maint`, plus
    /// `shutdown sessions server` when `shutdown` is set.
    Escalate {
        /// Also cut the remaining sessions.
        shutdown: bool,
    },
    /// Dynamic server idle in `maint`: `del server` (reported `Draining` until it is gone).
    Delete,
}

/// An assessment: the state to report and the step to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    /// Where the traffic stands now.
    pub state: TrafficState,
    /// What to do next.
    pub step: Step,
    /// Time left before escalation, while draining with sessions.
    pub remaining: Option<Duration>,
}

/// Escalation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Escalation {
    /// Escalate after this long in drain with sessions left; `None` never.
    pub after: Option<Duration>,
    /// Cut sessions when escalating.
    pub shutdown_sessions: bool,
}

/// Applies the rules in the module table. `drain_age` is how long the server has been in
/// drain (as far as this process knows); `dynamic` enables the `del server` step.
pub fn assess(view: &ServerView, dynamic: bool, drain_age: Duration, escalation: Escalation) -> Assessment {
    let plain = |state| Assessment {
        state,
        step: Step::Nothing,
        remaining: None,
    };
    let admin = view.state.admin;
    if admin.is_maint() {
        return match (view.busy(), dynamic) {
            (true, _) => plain(TrafficState::Draining),
            (false, false) => plain(TrafficState::Drained),
            (false, true) => Assessment {
                state: TrafficState::Draining,
                step: Step::Delete,
                remaining: None,
            },
        };
    }
    if admin.is_drain() {
        if !view.busy() {
            return Assessment {
                state: TrafficState::Draining,
                step: Step::Maint,
                remaining: None,
            };
        }
        return match escalation.after {
            Some(after) if drain_age >= after => Assessment {
                state: TrafficState::Draining,
                step: Step::Escalate {
                    shutdown: escalation.shutdown_sessions,
                },
                remaining: None,
            },
            Some(after) => Assessment {
                state: TrafficState::Draining,
                step: Step::Nothing,
                remaining: Some(after - drain_age),
            },
            None => plain(TrafficState::Draining),
        };
    }
    if view.state.op_state.is_up() {
        plain(TrafficState::Serving)
    } else {
        plain(TrafficState::Registered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{AdminFlags, OpState};

    fn view(admin: u32, op: OpState, scur: u64, used_cur: u64) -> ServerView {
        ServerView {
            state: ServerState {
                backend: "web".into(),
                name: "s1".into(),
                addr: "127.0.0.11".into(),
                port: 8080,
                op_state: op,
                admin: AdminFlags(admin),
                check_state: 6,
                row: Default::default(),
            },
            status: "X".into(),
            check_status: "L4OK".into(),
            scur,
            used_cur,
            idle_cur: 2,
        }
    }

    const NEVER: Escalation = Escalation {
        after: None,
        shutdown_sessions: false,
    };
    const SOON: Escalation = Escalation {
        after: Some(Duration::from_millis(300)),
        shutdown_sessions: true,
    };
    const MAINT: u32 = AdminFlags::FMAINT;
    const DRAIN: u32 = AdminFlags::FDRAIN;

    #[test]
    fn table() {
        use OpState::*;
        use TrafficState::*;
        let zero = Duration::ZERO;
        let cases = [
            (view(MAINT, Stopped, 0, 0), false, zero, NEVER, Drained, Step::Nothing),
            (view(MAINT, Stopped, 0, 0), true, zero, NEVER, Draining, Step::Delete),
            (view(MAINT, Stopped, 1, 0), true, zero, SOON, Draining, Step::Nothing),
            (
                view(MAINT | DRAIN, Stopped, 0, 0),
                false,
                zero,
                NEVER,
                Drained,
                Step::Nothing,
            ),
            (view(DRAIN, Running, 0, 0), false, zero, NEVER, Draining, Step::Maint),
            (view(DRAIN, Stopped, 0, 0), true, zero, NEVER, Draining, Step::Maint),
            (view(DRAIN, Running, 0, 1), false, zero, NEVER, Draining, Step::Nothing),
            (
                view(DRAIN, Running, 3, 1),
                false,
                Duration::from_secs(99),
                NEVER,
                Draining,
                Step::Nothing,
            ),
            (view(DRAIN, Running, 3, 0), false, zero, SOON, Draining, Step::Nothing),
            (
                view(DRAIN, Running, 3, 0),
                false,
                Duration::from_millis(300),
                SOON,
                Draining,
                Step::Escalate { shutdown: true },
            ),
            (view(0, Running, 5, 5), false, zero, SOON, Serving, Step::Nothing),
            (view(0, Starting, 0, 0), false, zero, SOON, Serving, Step::Nothing),
            (view(0, Stopped, 0, 0), false, zero, SOON, Registered, Step::Nothing),
            (view(0, Stopping, 0, 0), false, zero, SOON, Registered, Step::Nothing),
        ];
        for (i, (v, dynamic, age, esc, state, step)) in cases.into_iter().enumerate() {
            let a = assess(&v, dynamic, age, esc);
            assert_eq!((a.state, a.step), (state, step), "case {i}");
        }
        let a = assess(&view(DRAIN, Running, 1, 0), false, Duration::from_millis(100), SOON);
        assert_eq!(a.remaining, Some(Duration::from_millis(200)));
    }

    #[test]
    fn evidence_text() {
        let mut v = view(DRAIN, OpState::Running, 3, 1);
        v.status = "DRAIN".into();
        assert_eq!(
            v.evidence(),
            "server=web/s1 status=DRAIN scur=3 used_cur=1 idle_cur=2 (ignored)"
        );
        let mut v = view(0, OpState::Running, 0, 0);
        v.status = "UP".into();
        v.idle_cur = 0;
        assert_eq!(v.evidence(), "server=web/s1 status=UP scur=0 used_cur=0 check=L4OK");
    }
}
