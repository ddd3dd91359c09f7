//! Lost values, as the commands ask for them: the loss report's JSON shape (`lost --json`,
//! `watch --on-loss`) and `--since`.

use serde::Serialize;

use crate::store::incident::{Loss, Since};

/// The loss report: the JSON of `lost --json`, of `watch --on-loss` and of `export lost`'s source.
#[derive(Serialize)]
pub struct LossReport<'a> {
    pub losses: &'a [Loss],
    pub count: usize,
}

/// Reads `--since`: a snapshot id, an RFC 3339 time or a date (UTC midnight).
pub fn parse_since(s: &str) -> anyhow::Result<Since> {
    if let Ok(id) = s.parse::<i64>() {
        return Ok(Since::Snapshot(id));
    }
    let t = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&chrono::Utc)
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
    } else {
        anyhow::bail!(
            "--since {s:?} is neither a snapshot id, an RFC 3339 time nor a date (YYYY-MM-DD)"
        );
    };
    Ok(Since::Time(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}
