//! The audit trail of operators' actions: each action (a replay, a replay of every dead
//! letter, a purge, a pause, a resume) is one structured `tracing` event at target
//! [`TARGET`], one count in `airmy_webhook_inbox_admin_actions_total{action=…}`
//! ([`airmy_verify::observe`]), and, kept by the backend, one of the last
//! [`RECENT_ACTIONS`](crate::RECENT_ACTIONS) ([`Admin::recent_actions`]).
//!
//! [`record`] does all three: `airmy-webhook inbox` calls it for every action it takes, and a
//! console or a tool of your own calls the same function, so every action is logged, counted
//! and kept the same way. The event's fields:
//!
//! | field | value |
//! |---|---|
//! | `actor` | who, as the application names them (the tool: `--actor`, or `$USER`) |
//! | `action` | what: [`ActionKind::as_str`] (`replay`, `replay_dead`, `purge`, `pause`, `resume`) |
//! | `subject` | what it acted on: an event id, `every dead letter`, `event type run.failed`, … |
//! | `count` | how many entries it changed |
//! | `ids` | the ids it changed, the first [`MAX_IDS`] of them, space-separated |
//! | `at` | when, RFC 3339 |
//!
//! # Example
//!
//! ```
//! use airmy_verify_inbox::audit::{self, Action, ActionKind};
//! use airmy_verify_inbox::{Inbox, PauseScope, SqliteBackend, SqliteOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("inbox-audit-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let inbox = Inbox::new(SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default())?);
//! let scope = PauseScope::event_type("run.completed");
//! let held = inbox.admin().pause(&scope).await?;
//! let action = Action::new("alice", ActionKind::Pause, scope.to_string()).count(held);
//! audit::record(inbox.admin(), &action).await?;
//! assert_eq!(inbox.admin().recent_actions(10).await?[0].actor, "alice");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use time::OffsetDateTime;

use crate::backend::{Admin, InboxError};

/// The `tracing` target of the audit events: `airmy_verify_inbox::audit` (a subscriber's
/// filter `airmy_verify_inbox::audit=info` keeps them, and only them).
pub const TARGET: &str = "airmy_verify_inbox::audit";

/// The most ids an [`Action`] keeps (its [`count`](Action::count) says how many there were).
pub const MAX_IDS: usize = 10;

/// The longest actor, subject or id an [`Action`] keeps, in characters (longer ones are cut).
const MAX_TEXT: usize = 200;

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionKind {
    /// One entry replayed ([`Admin::replay`]).
    Replay,
    /// Dead letters replayed together ([`Admin::replay_dead`]).
    ReplayDead,
    /// Processed entries purged ([`Admin::purge_done`]).
    Purge,
    /// Handling paused ([`Admin::pause`]).
    Pause,
    /// Handling resumed ([`Admin::resume`]).
    Resume,
}

impl ActionKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Replay,
        Self::ReplayDead,
        Self::Purge,
        Self::Pause,
        Self::Resume,
    ];

    /// The kind's name, as in the event's `action` field and the metric's label: `replay`,
    /// `replay_dead`, `purge`, `pause` or `resume`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::ReplayDead => "replay_dead",
            Self::Purge => "purge",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an action this version knows"))
    }
}

/// One operator's action, as [`record`] logs it and [`Admin::record_action`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Action {
    /// When it was done.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it, as the application names them.
    pub actor: String,
    /// What was done.
    pub kind: ActionKind,
    /// What it acted on, in words: an event id, `every dead letter`, `event type run.failed`.
    pub subject: String,
    /// How many entries it changed.
    pub count: u64,
    /// The ids of the entries it changed, the first [`MAX_IDS`].
    pub ids: Vec<String>,
}

/// `text` cut to [`MAX_TEXT`] characters.
fn bounded(text: impl Into<String>) -> String {
    let text = text.into();
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => text[..end].to_owned(),
        None => text,
    }
}

impl Action {
    /// `actor` did `kind` on `subject`, now; no entries counted and no ids until
    /// [`count`](Self::count) or [`ids`](Self::ids). Texts longer than 200 characters are cut.
    #[must_use]
    pub fn new(actor: impl Into<String>, kind: ActionKind, subject: impl Into<String>) -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            actor: bounded(actor),
            kind,
            subject: bounded(subject),
            count: 0,
            ids: Vec::new(),
        }
    }

    /// It changed `count` entries. Defaults to 0 (or the number of [`ids`](Self::ids)).
    #[must_use]
    pub fn count(mut self, count: u64) -> Self {
        self.count = count;
        self
    }

    /// It changed the entries `ids`: their number becomes the [`count`](Self::count), the
    /// first [`MAX_IDS`] are kept. Defaults to none.
    #[must_use]
    pub fn ids<I>(mut self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut count = 0;
        self.ids.clear();
        for id in ids {
            count += 1;
            if self.ids.len() < MAX_IDS {
                self.ids.push(bounded(id));
            }
        }
        self.count = count;
        self
    }

    /// It was done at `at` (an action read back from a backend). Defaults to when
    /// [`new`](Self::new) was called.
    #[must_use]
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }
}

/// Logs `action` (one `tracing` event at target [`TARGET`], level INFO, with the fields of the
/// [module docs](self)) and counts it in `airmy_webhook_inbox_admin_actions_total`. [`record`]
/// also keeps it in the backend; call this alone where there is no backend to keep it in.
pub fn emit(action: &Action) {
    airmy_verify::observe::metrics::inbox_admin_action(action.kind.as_str());
    let at = action
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        actor = action.actor.as_str(),
        action = action.kind.as_str(),
        subject = action.subject.as_str(),
        count = action.count,
        ids = action.ids.join(" ").as_str(),
        at = at.as_str(),
        "inbox action"
    );
}

/// Logs and counts `action` ([`emit`]), then keeps it among the backend's recent actions
/// ([`Admin::record_action`]). The one call for every operator's action, wherever it is taken.
///
/// # Errors
///
/// The backend could not keep it (it was logged and counted all the same): an
/// [`InboxError`] of kind [`Unavailable`](crate::ErrorKind::Unavailable).
pub async fn record(admin: &dyn Admin, action: &Action) -> Result<(), InboxError> {
    emit(action);
    admin.record_action(action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_counted_all_and_kept_to_the_first_ten() {
        let action = Action::new("ops", ActionKind::ReplayDead, "every dead letter")
            .ids((0..25).map(|i| format!("evt_{i}")));
        assert_eq!(action.count, 25);
        assert_eq!(action.ids.len(), MAX_IDS);
        assert_eq!(action.ids[0], "evt_0");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let action = Action::new("é".repeat(300), ActionKind::Pause, "x".repeat(500));
        assert_eq!(action.actor.chars().count(), 200);
        assert_eq!(action.subject.len(), 200);
    }

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in ActionKind::ALL {
            assert_eq!(kind.as_str().parse::<ActionKind>(), Ok(kind));
        }
        assert!("login".parse::<ActionKind>().is_err());
    }
}
