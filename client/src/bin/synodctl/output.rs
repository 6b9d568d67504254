//! synodctl's output: znode Stats as zkCli prints them (or as JSON), data, JSON lines, and the
//! admin commands' membership table.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;
use synod_client::Stat;

use crate::{CmdResult, Failure, EXIT_USAGE};

/// A znode's Stat as `--json` prints it (field names as zkCli prints them).
#[derive(Debug, Serialize)]
pub struct StatJson {
    /// Zxid of the change that created the znode.
    #[serde(rename = "cZxid")]
    czxid: i64,
    /// Creation time, ms since the epoch.
    ctime: i64,
    /// Zxid of the last change to the data.
    #[serde(rename = "mZxid")]
    mzxid: i64,
    /// Time of the last data change, ms since the epoch.
    mtime: i64,
    /// Zxid of the last change to the children.
    #[serde(rename = "pZxid")]
    pzxid: i64,
    /// Number of changes to the children.
    cversion: i32,
    /// Number of changes to the data.
    #[serde(rename = "dataVersion")]
    data_version: i32,
    /// Number of changes to the ACL.
    #[serde(rename = "aclVersion")]
    acl_version: i32,
    /// Session id owning the znode if it is ephemeral, else 0.
    #[serde(rename = "ephemeralOwner")]
    ephemeral_owner: i64,
    /// Length of the data in bytes.
    #[serde(rename = "dataLength")]
    data_length: i32,
    /// Number of children.
    #[serde(rename = "numChildren")]
    num_children: i32,
}

impl From<&Stat> for StatJson {
    fn from(s: &Stat) -> Self {
        StatJson {
            czxid: s.czxid,
            ctime: s.ctime,
            mzxid: s.mzxid,
            mtime: s.mtime,
            pzxid: s.pzxid,
            cversion: s.cversion,
            data_version: s.version,
            acl_version: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}

/// The Stat as a JSON object (see [`StatJson`]).
pub fn stat_json(s: &Stat) -> Value {
    serde_json::to_value(StatJson::from(s)).unwrap_or(Value::Null)
}

/// The Stat as zkCli's `stat` prints it (times in UTC).
pub fn stat_text(s: &Stat) -> String {
    format!(
        "cZxid = {:#x}\nctime = {}\nmZxid = {:#x}\nmtime = {}\npZxid = {:#x}\ncversion = {}\ndataVersion = {}\n\
         aclVersion = {}\nephemeralOwner = {:#x}\ndataLength = {}\nnumChildren = {}\n",
        s.czxid,
        java_date(s.ctime),
        s.mzxid,
        java_date(s.mtime),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children
    )
}

/// Milliseconds since the epoch formatted like Java's `Date.toString()`, in UTC:
/// `Thu Jan 01 00:00:00 UTC 1970`.
pub fn java_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[weekday as usize],
        MONTHS[(month - 1) as usize],
        day,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        year
    )
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes `bytes` to stdout and flushes; a closed stdout (e.g. `| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure {
            name: "IoError".into(),
            path: None,
            detail: Some(format!("writing to stdout: {e}")),
            exit: EXIT_USAGE,
        }),
    }
}

/// Prints one JSON value and a newline on stdout.
pub fn print_json(v: &Value) -> CmdResult {
    write_stdout(format!("{v}\n").as_bytes())
}

/// Whether `get` adds a newline after `data`: only on a terminal (so that the next prompt or
/// command output does not start glued to the data, as zkCli and etcdctl print it), and only
/// when the data does not already end with one. Piped or redirected output is the exact bytes.
pub fn get_adds_newline(data: &[u8], terminal: bool) -> bool {
    terminal && data.last() != Some(&b'\n')
}

/// `get`'s text output: the data byte for byte, plus a newline on a terminal (see
/// [`get_adds_newline`]).
pub fn write_data(data: &[u8]) -> CmdResult {
    use std::io::IsTerminal;
    if get_adds_newline(data, std::io::stdout().is_terminal()) {
        let mut line = Vec::with_capacity(data.len() + 1);
        line.extend_from_slice(data);
        line.push(b'\n');
        return write_stdout(&line);
    }
    write_stdout(data)
}

/// Prints a membership reply (`GET /membership`, or a change's answer): the JSON as is with
/// `--json`, else a table with the leader starred and a note when a joint configuration is in
/// effect.
pub fn print_membership(v: &Value, json_out: bool) {
    if json_out {
        println!("{v}");
        return;
    }
    let leader = v.get("leader").and_then(Value::as_u64);
    println!(
        "{:<6} {:<22} {:<8} {:<8} {:>10} {:>8}",
        "ID", "PEER ADDRESS", "ROLE", "LEADER", "MATCHED", "LAG"
    );
    let empty = Vec::new();
    for m in v.get("members").and_then(Value::as_array).unwrap_or(&empty) {
        let id = m.get("id").and_then(Value::as_u64).unwrap_or(0);
        let num = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<6} {:<22} {:<8} {:<8} {:>10} {:>8}",
            id,
            m.get("peer_addr").and_then(Value::as_str).unwrap_or("?"),
            match m.get("voter").and_then(Value::as_bool) {
                Some(true) => "voter",
                Some(false) => "learner",
                None => "?",
            },
            if leader == Some(id) { "*" } else { "" },
            num("matched_index"),
            num("lag"),
        );
    }
    if v.get("joint").and_then(Value::as_bool) == Some(true) {
        println!("(a joint configuration is in effect: a change is in progress)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_java() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
        assert_eq!(java_date(1_700_000_000_123), "Tue Nov 14 22:13:20 UTC 2023");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn get_ends_with_a_newline_on_a_terminal_only() {
        assert!(get_adds_newline(b"hospital-a", true));
        assert!(get_adds_newline(b"", true));
        assert!(!get_adds_newline(b"line\n", true));
        assert!(!get_adds_newline(b"hospital-a", false));
        assert!(!get_adds_newline(b"", false));
    }
}
