//! The ledger's domain values as types: what a run is, how it ended, how a snapshot ended, what
//! became of a re-pin, who changed a pin. Each has the same text in the database, in JSON and on the
//! terminal (`tag`, `done`, `applied`, …), so the schema's CHECK constraints and scripts reading
//! `--json` see the words they always saw.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Implements `ToSql` through the enum's text (strum's `AsRefStr`).
macro_rules! to_sql_text {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(<$t as AsRef<str>>::as_ref(self)))
            }
        }
    )*};
}

/// Implements `FromSql` through the enum's text (strum's `EnumString`).
macro_rules! from_sql_text {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                text.parse().map_err(|_| {
                    FromSqlError::Other(format!("{text:?} is not a {}", stringify!($t)).into())
                })
            }
        }
    )*};
}

/// A domain enum: copyable, ordered, and written as its variant in kebab-case — by serde (JSON),
/// strum (`Display`, `AsRef<str>`, `FromStr`) and [`FromSql`] (reading the database).
macro_rules! domain_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[derive(strum::AsRefStr, strum::Display, strum::EnumString, strum::EnumIter)]
        #[serde(rename_all = "kebab-case")]
        #[strum(serialize_all = "kebab-case")]
        pub enum $name { $($body)* }
        from_sql_text!($name);
    };
}

domain_enum! {
    /// What a run does (`runs.kind`).
    pub enum RunKind {
        Tag,
        Repin,
        Restore,
        Add,
    }
}

domain_enum! {
    /// How a run stands or ended (`runs.state`).
    pub enum RunState {
        /// Begun, not yet ended (or its process died: the next run marks it interrupted).
        Running,
        /// Ended with nothing left to look at.
        Done,
        /// Ended, with something a person must look at: conflicts, stragglers, failed re-pins.
        Attention,
        /// Ended by an error.
        Failed,
        /// Stopped by a signal, or found `running` after its process died.
        Interrupted,
    }
}

domain_enum! {
    /// How a snapshot stands or ended (`snapshots.state`).
    pub enum SnapshotState {
        Running,
        /// The stream ended with an empty `X-Stream-Error` trailer: a record of every pin.
        Complete,
        /// The stream broke: a partial observation, never evidence that a pin vanished.
        Incomplete,
    }
}

domain_enum! {
    /// What became of one re-pin (`repins.outcome`, and the reports).
    pub enum Outcome {
        /// Sent, and the pin as read back is the intended one.
        Applied,
        /// Sent, answered, but the pin as read back differs from the intended one.
        Mismatch,
        /// Left pending by a process that stopped; reconciled by reading the pin, which lacks the change.
        NotApplied,
        /// Not sent: the request could not be built (a bad key, an expired pin, too long).
        Refused,
        /// Not sent, or sent and not applied: the cluster or the network failed.
        Failed,
        /// Not sent: the pin already is as asked. Never stored (there is no request to record).
        Unchanged,
        /// Not sent: the pin as read now belongs to someone else. Stored as `refused`, with its reason.
        Conflict,
    }
}

impl Outcome {
    /// Whether the pin ended as asked.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Unchanged)
    }

    /// The outcome as the `repins` table records it (`None`: not recorded).
    pub fn stored(self) -> Option<Outcome> {
        match self {
            Outcome::Unchanged => None,
            Outcome::Conflict => Some(Outcome::Refused),
            o => Some(o),
        }
    }
}

domain_enum! {
    /// A re-pin's place in its life (`repins.status`).
    pub enum RepinStatus {
        /// The intent is recorded and nothing else: the request may or may not have gone out (a
        /// request with no row in `repin_answers`).
        Pending,
        Sent,
        Failed,
        Refused,
    }
}

domain_enum! {
    /// How a tag or restore plan classed a pin (`run_targets.class`).
    pub enum PlanClass {
        Target,
        Already,
        Conflict,
    }
}

domain_enum! {
    /// Who changed a pin that lost values (`lost_metadata.attribution`).
    pub enum Attribution {
        /// A re-pin of one of ledger's runs.
        Ours,
        /// Someone else: the pin's timestamp moved with no re-pin of ours to explain it.
        Outside,
        /// The cluster itself: the values changed with the same timestamp.
        Cluster,
        /// The pin was unpinned.
        Unpinned,
    }
}

to_sql_text!(RunKind, RunState, SnapshotState, RepinStatus, PlanClass, Attribution);

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self.stored() {
            Some(o) => Ok(ToSqlOutput::from(<Outcome as AsRef<str>>::as_ref(&o).to_string())),
            None => Err(rusqlite::Error::ToSqlConversionFailure(
                format!("the outcome {self} is never stored").into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the schema's CHECK constraints allow, and no other, round-trips through SQLite.
    #[test]
    fn the_database_sees_the_same_words() {
        let store = crate::store::Store::open_in_memory().unwrap();
        let c = &store.conn;
        let check = |sql: &str| -> String {
            c.query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [sql],
                |r| r.get(0),
            )
            .unwrap()
        };
        let runs = check("runs");
        for k in [RunKind::Tag, RunKind::Repin, RunKind::Restore, RunKind::Add] {
            assert!(runs.contains(&format!("'{k}'")), "{k}");
        }
        for s in [
            RunState::Running,
            RunState::Done,
            RunState::Attention,
            RunState::Failed,
            RunState::Interrupted,
        ] {
            assert!(runs.contains(&format!("'{s}'")), "{s}");
        }
        let repins = check("repin_answers");
        for st in [RepinStatus::Sent, RepinStatus::Failed, RepinStatus::Refused] {
            assert!(repins.contains(&format!("'{st}'")), "{st}");
        }
        for o in [
            Outcome::Applied,
            Outcome::Mismatch,
            Outcome::NotApplied,
            Outcome::Refused,
            Outcome::Failed,
        ] {
            assert!(repins.contains(&format!("'{o}'")), "{o}");
            let back: Outcome = c.query_row("SELECT ?1", [o], |r| r.get(0)).unwrap();
            assert_eq!(back, o);
        }
        // The two outcomes that exist only in reports: one is stored as `refused`, one never.
        let stored: String = c.query_row("SELECT ?1", [Outcome::Conflict], |r| r.get(0)).unwrap();
        assert_eq!(stored, "refused");
        assert!(c.query_row("SELECT ?1", [Outcome::Unchanged], |r| r.get::<_, String>(0)).is_err());
        let snaps = check("snapshots");
        for s in [SnapshotState::Running, SnapshotState::Complete, SnapshotState::Incomplete] {
            assert!(snaps.contains(&format!("'{s}'")), "{s}");
        }
        let bad: rusqlite::Result<RunState> = c.query_row("SELECT 'finished'", [], |r| r.get(0));
        assert!(bad.is_err());
    }

    #[test]
    fn json_uses_the_same_words() {
        assert_eq!(serde_json::to_string(&Outcome::NotApplied).unwrap(), "\"not-applied\"");
        assert_eq!(serde_json::to_string(&RunState::Attention).unwrap(), "\"attention\"");
        assert_eq!(Attribution::Outside.to_string(), "outside");
        assert_eq!("conflict".parse::<PlanClass>().unwrap(), PlanClass::Conflict);
    }
}
