//! Parsers for the runtime API's tabular answers, as HAProxy 2.6 prints them.
//!
//! - `show stat`: CSV whose header line starts with `# pxname,svname,...` and ends with a
//!   trailing comma; string fields that contain a comma are double-quoted.
//! - `show servers state BE`: a format version line (`1`), a `# be_id be_name srv_id ...`
//!   header, then one space-separated row per server.
//! - `show servers conn BE`: a `# bkname/svname bkid/svid addr port - purge_delay used_cur
//!   used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[N]` header. The
//!   last column expands to one value per thread — and is missing altogether for dynamic
//!   servers (no idle pool) — so columns are matched by position only up to `idle_cur`.
//!
//! Rows keep every column, read by name, so callers can read columns this crate has no
//! typed accessor for. A row is two allocations (its values in one string, and where each
//! ends) and shares its answer's header: a backend of thousands of servers is parsed at
//! every poll, and a map of ~80 strings per `show stat` row made that poll's cost
//! allocation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The columns of one answer, shared by its rows.
#[derive(Debug, Default, PartialEq, Eq)]
struct Columns {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Columns {
    fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Arc<Columns> {
        let names: Vec<String> = names.into_iter().map(String::from).collect();
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            // The first of a repeated name wins, as a map built in order would not: HAProxy
            // repeats none.
            index.entry(n.clone()).or_insert(i);
        }
        Arc::new(Columns { names, index })
    }
}

/// One row of a tabular answer: every column's raw value, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    columns: Arc<Columns>,
    /// The values one after the other.
    text: String,
    /// Where each value ends in `text` (value `i` is `ends[i-1]..ends[i]`).
    ends: Vec<u32>,
}

impl Row {
    fn new(columns: Arc<Columns>) -> Row {
        let n = columns.names.len();
        Row {
            columns,
            text: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len() as u32);
    }

    /// The value of column `i`, if the row has one.
    fn at(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }

    /// A column's raw value (`None`: no such column, or the row is shorter).
    pub fn get(&self, column: &str) -> Option<&str> {
        self.at(*self.columns.index.get(column)?)
    }

    /// Every column with a name, and its value.
    pub fn fields(&self) -> BTreeMap<String, String> {
        self.columns
            .names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .filter_map(|(i, n)| Some((n.clone(), self.at(i)?.to_string())))
            .collect()
    }
}

/// One `show stat` row, read by column name (`pxname`, `svname`, `scur`, `status`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatRow {
    row: Row,
}

impl StatRow {
    /// A column's raw value (empty when HAProxy left the field empty).
    pub fn get(&self, column: &str) -> Option<&str> {
        self.row.get(column)
    }

    /// Every column by name.
    pub fn fields(&self) -> BTreeMap<String, String> {
        self.row.fields()
    }

    /// The proxy (backend/frontend) name.
    pub fn pxname(&self) -> &str {
        self.get("pxname").unwrap_or_default()
    }

    /// The server name, or `FRONTEND` / `BACKEND`.
    pub fn svname(&self) -> &str {
        self.get("svname").unwrap_or_default()
    }

    /// The `status` column: `UP`, `DOWN`, `DOWN 1/2`, `DRAIN`, `MAINT`, `MAINT (via ...)`, `no check`, ...
    pub fn status(&self) -> &str {
        self.get("status").unwrap_or_default()
    }

    /// Current sessions (`scur`); 0 when empty.
    pub fn scur(&self) -> u64 {
        self.get("scur").and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// Parses `show stat` CSV output.
pub fn parse_stat_csv(text: &str) -> Result<Vec<StatRow>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or("empty answer")?;
    let header = header
        .strip_prefix("# ")
        .ok_or_else(|| format!("no `# ` CSV header in {header:?}"))?;
    let mut header_row = Row::new(Arc::new(Columns::default()));
    split_csv(header, &mut header_row);
    let names: Vec<&str> = (0..header_row.ends.len()).filter_map(|i| header_row.at(i)).collect();
    if names.first().copied() != Some("pxname") {
        return Err(format!("unexpected CSV header {header:?}"));
    }
    let columns = Columns::new(names);
    Ok(lines
        .map(|line| {
            let mut row = Row::new(columns.clone());
            split_csv(line, &mut row);
            StatRow { row }
        })
        .collect())
}

/// Splits one CSV line into `row`, honouring double quotes (`""` inside quotes is a quote).
fn split_csv(line: &str, row: &mut Row) {
    row.text.reserve(line.len());
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                row.text.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => row.ends.push(row.text.len() as u32),
            c => row.text.push(c),
        }
    }
    row.ends.push(row.text.len() as u32);
}

/// A row of space-separated values.
fn split_words(line: &str, columns: &Arc<Columns>) -> Row {
    let mut row = Row::new(columns.clone());
    for v in line.split_whitespace().take(columns.names.len()) {
        row.push(v);
    }
    row
}

/// Administrative flags (`srv_admin_state`, HAProxy's `SRV_ADMF_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminFlags(pub u32);

impl AdminFlags {
    /// Forced maintenance (`set server ... state maint`, or dynamic servers as added).
    pub const FMAINT: u32 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub const IMAINT: u32 = 0x02;
    /// The server was `disabled` in the configuration. It comes with FMAINT, and it stays
    /// set after `state ready` lifts that (measured on HAProxy 2.6: admin state 5, then 4
    /// with the server UP), so on its own it is not maintenance — HAProxy's own
    /// `SRV_ADMF_MAINT` mask (0x23) leaves it out too.
    pub const CMAINT: u32 = 0x04;
    /// Forced drain (`set server ... state drain`).
    pub const FDRAIN: u32 = 0x08;
    /// Drain inherited from a tracked server.
    pub const IDRAIN: u32 = 0x10;
    /// Maintenance because the server's name did not resolve.
    pub const RMAINT: u32 = 0x20;

    /// Any kind of maintenance: the server takes no traffic at all (HAProxy's
    /// `SRV_ADMF_MAINT`).
    pub fn is_maint(self) -> bool {
        self.0 & (Self::FMAINT | Self::IMAINT | Self::RMAINT) != 0
    }

    /// Any kind of drain: only persistent (sticky) traffic still reaches the server.
    pub fn is_drain(self) -> bool {
        self.0 & (Self::FDRAIN | Self::IDRAIN) != 0
    }

    /// Neither maintenance nor drain.
    pub fn is_ready(self) -> bool {
        !self.is_maint() && !self.is_drain()
    }
}

/// Operational state (`srv_op_state`, HAProxy's `SRV_ST_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    /// Down (health check failing, or forced down).
    Stopped,
    /// Up, in slow start.
    Starting,
    /// Up.
    Running,
    /// Up but soft-stopping (agent/`health stopping`): no new traffic.
    Stopping,
    /// A value this crate does not know.
    Other(u32),
}

impl OpState {
    fn from_code(code: u32) -> Self {
        match code {
            0 => OpState::Stopped,
            1 => OpState::Starting,
            2 => OpState::Running,
            3 => OpState::Stopping,
            n => OpState::Other(n),
        }
    }

    /// Up and taking new traffic.
    pub fn is_up(self) -> bool {
        matches!(self, OpState::Starting | OpState::Running)
    }
}

/// One `show servers state BE` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `be_name`.
    pub backend: String,
    /// `srv_name`.
    pub name: String,
    /// `srv_addr` as printed (`127.0.0.11`, `::1`, `-` when unresolved).
    pub addr: String,
    /// `srv_port`.
    pub port: u16,
    /// `srv_op_state`.
    pub op_state: OpState,
    /// `srv_admin_state`.
    pub admin: AdminFlags,
    /// `srv_check_state` (`CHK_ST_*` bits).
    pub check_state: u32,
    /// Every column.
    pub row: Row,
}

impl ServerState {
    /// A health check is configured and administratively enabled (`CHK_ST_CONFIGURED | CHK_ST_ENABLED`).
    pub fn check_enabled(&self) -> bool {
        self.check_state & 0x6 == 0x6
    }

    /// A health check is configured (possibly disabled, as on a freshly added dynamic server).
    pub fn check_configured(&self) -> bool {
        self.check_state & 0x2 != 0
    }
}

/// Parses `show servers state BE` (format version 1).
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some("1") => {}
        other => return Err(format!("expected format version line `1`, got {other:?}")),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("missing `# be_id ...` header")?;
    let columns = Columns::new(header.split_whitespace());
    lines
        .map(|line| {
            let row = split_words(line, &columns);
            let text = |c: &str| {
                row.get(c)
                    .map(String::from)
                    .ok_or_else(|| format!("row lacks `{c}`: {line:?}"))
            };
            let num = |c: &str| {
                text(c)?
                    .parse::<u32>()
                    .map_err(|e| format!("bad `{c}` in {line:?}: {e}"))
            };
            Ok(ServerState {
                backend: text("be_name")?,
                name: text("srv_name")?,
                addr: text("srv_addr")?,
                port: text("srv_port")?
                    .parse()
                    .map_err(|e| format!("bad `srv_port` in {line:?}: {e}"))?,
                op_state: OpState::from_code(num("srv_op_state")?),
                admin: AdminFlags(num("srv_admin_state")?),
                check_state: num("srv_check_state")?,
                row: row.clone(),
            })
        })
        .collect()
}

/// One `show servers conn BE` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConn {
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
    /// Connections in use right now (`used_cur`).
    pub used_cur: u64,
    /// Idle pooled connections (`idle_cur`) — not traffic, ignored by drain evidence.
    pub idle_cur: u64,
    /// Every column up to `idle_cur`.
    pub row: Row,
}

/// Parses `show servers conn BE`.
pub fn parse_servers_conn(text: &str) -> Result<Vec<ServerConn>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("missing `# bkname/svname ...` header")?;
    let names: Vec<&str> = header
        .split_whitespace()
        .take_while(|c| !c.starts_with("idle_per_thr"))
        .collect();
    if names.first() != Some(&"bkname/svname") {
        return Err(format!("unexpected header {header:?}"));
    }
    let columns = Columns::new(names);
    lines
        .map(|line| {
            let row = split_words(line, &columns);
            let id = row.get("bkname/svname").ok_or_else(|| format!("empty row {line:?}"))?;
            let (backend, server) = id
                .split_once('/')
                .ok_or_else(|| format!("bad `bkname/svname` in {line:?}"))?;
            let num = |c: &str| -> Result<u64, String> {
                let v = row.get(c).ok_or_else(|| format!("row lacks `{c}`: {line:?}"))?;
                v.parse().map_err(|e| format!("bad `{c}` in {line:?}: {e}"))
            };
            Ok(ServerConn {
                backend: backend.to_string(),
                server: server.to_string(),
                used_cur: num("used_cur")?,
                idle_cur: num("idle_cur")?,
                row: row.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim HAProxy 2.6.12 answers (2 threads).
    const CONN: &str = "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb \
                        safe_nb idle_lim idle_cur idle_per_thr[2]\n\
                        web/s1 3/1 127.0.0.11 18081 - 5000 0 2 2 1 0 -1 1 0 1\n\
                        dyn/sluice-127-0-0-13-18081 4/1 127.0.0.13 18081 - 0 3 0 0 0 0 0 0\n\n";
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight \
                         srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health \
                         srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord \
                         srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
                         3 web 1 s1 127.0.0.11 2 8 1 1 1 6 3 1 6 0 0 0 - 18081 - 0 0 - - 0\n\
                         4 dyn 1 sluice-127-0-0-13-18081 127.0.0.13 0 1 1 1 0 1 0 0 2 0 0 0 - 18081 - 0 0 - - 0\n\n";

    #[test]
    fn servers_conn_with_and_without_per_thread_idle() {
        let rows = parse_servers_conn(CONN).unwrap();
        assert_eq!((rows[0].backend.as_str(), rows[0].server.as_str()), ("web", "s1"));
        assert_eq!((rows[0].used_cur, rows[0].idle_cur), (0, 1));
        assert_eq!(
            (rows[1].server.as_str(), rows[1].used_cur, rows[1].idle_cur),
            ("sluice-127-0-0-13-18081", 3, 0)
        );
    }

    #[test]
    fn servers_state_rows() {
        let rows = parse_servers_state(STATE).unwrap();
        assert_eq!(rows[0].name, "s1");
        assert_eq!((rows[0].addr.as_str(), rows[0].port), ("127.0.0.11", 18081));
        assert_eq!(rows[0].op_state, OpState::Running);
        assert!(rows[0].admin.is_drain() && !rows[0].admin.is_maint());
        assert!(rows[0].check_enabled());
        assert!(rows[1].admin.is_maint() && rows[1].check_configured() && !rows[1].check_enabled());
        assert!(parse_servers_state("1\n# be_id be_name\n\n").unwrap().is_empty());
        assert!(parse_servers_state("Can't find backend.\n").is_err());
    }

    #[test]
    fn stat_csv_with_quotes_and_trailing_comma() {
        let text = "# pxname,svname,scur,status,check_desc,\nweb,s1,3,DRAIN,\"a, \"\"b\"\"\",\nweb,BACKEND,3,UP,,\n\n";
        let rows = parse_stat_csv(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].pxname(), rows[0].svname(), rows[0].scur()), ("web", "s1", 3));
        assert_eq!(rows[0].status(), "DRAIN");
        assert_eq!(rows[0].get("check_desc"), Some("a, \"b\""));
        assert!(!rows[0].fields().contains_key(""));
        assert_eq!(rows[0].fields().len(), 5);
        assert_eq!(rows[1].get("check_desc"), Some(""));
        assert_eq!(rows[1].get("nope"), None);
        assert!(parse_stat_csv("No such proxy.\n").is_err());
    }
}
