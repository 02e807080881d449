//! The pause rules of the conformance suite: a paused type's entries wait (accepted, never
//! taken, their attempts not counted, none dead) and drain on resume; pausing everything; and
//! the record of recent actions.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;

use super::{Harness, STEP, delivery, take_one, unique};
use crate::audit::{Action, ActionKind};
use crate::backend::{Accepted, Backend, EntryState, ListQuery, PauseScope, RECENT_ACTIONS};

/// Takes until every id of `wanted` is leased (at most 20 takes, the time moved on between
/// them when nothing came), releasing what is not wanted; the leased entries by id.
async fn take_these(h: &impl Harness, wanted: &[&String]) -> HashMap<String, crate::Leased> {
    let b = h.backend();
    let mut got = HashMap::new();
    for _ in 0..20 {
        let taken = b.take(64, super::LEASE).await.expect("take");
        let none = taken.is_empty();
        for entry in taken {
            if wanted.contains(&&entry.id) {
                got.insert(entry.id.clone(), entry);
            } else {
                let _ = b.release(&entry.id, &entry.token).await;
            }
        }
        if got.len() == wanted.len() {
            return got;
        }
        if none {
            h.advance(STEP / 4).await;
        }
    }
    panic!(
        "only {:?} of {wanted:?} were taken",
        got.keys().collect::<Vec<_>>()
    );
}

/// The state of `id` now.
async fn state(b: &dyn Backend, id: &str) -> EntryState {
    b.entry(id)
        .await
        .expect("entry")
        .expect("an entry")
        .summary
        .state
}

/// A paused event type: its pending and scheduled entries are held at once, and so are those
/// accepted, retried, released or replayed while it is paused, and one whose lease ran out
/// (its worker died): no take returns them, no attempt is counted, none dies. Listed and counted
/// as paused; other types go on. Resumed, each drains as the attempt it would have been.
pub async fn a_paused_type_waits_until_resumed(h: &impl Harness) {
    let b = h.backend();
    let event_type = unique("paused.type");
    let scope = PauseScope::event_type(&event_type);
    let base = unique("evt_pause");
    let id = |name: &str| format!("{base}_{name}");
    let [
        first,
        second,
        scheduled,
        dead,
        crashed,
        retried,
        released,
        late,
    ] = [
        "first",
        "second",
        "scheduled",
        "dead",
        "crashed",
        "retried",
        "released",
        "late",
    ]
    .map(id);
    let other = id("other");
    for each in [
        &first, &second, &scheduled, &dead, &crashed, &retried, &released,
    ] {
        assert_eq!(
            b.accept(&delivery(each, &event_type))
                .await
                .expect("accept"),
            Accepted::Stored
        );
    }
    // Before the pause: a retry scheduled later, a dead letter, three entries being processed.
    let leased = take_one(h, &scheduled).await.expect("taken");
    let later = h.now() + STEP / 2;
    assert!(
        b.retry(&scheduled, &leased.token, "e", later)
            .await
            .expect("retry")
    );
    let leased = take_one(h, &dead).await.expect("taken");
    assert!(b.bury(&dead, &leased.token, "e").await.expect("bury"));
    let crashed_lease = take_one(h, &crashed).await.expect("taken");
    let retried_lease = take_one(h, &retried).await.expect("taken");
    let released_lease = take_one(h, &released).await.expect("taken");
    let before = b.stats().await.expect("stats");

    let since = h.now();
    assert_eq!(
        b.pause(&scope).await.expect("pause"),
        3,
        "the two pending entries and the scheduled retry are held"
    );
    assert_eq!(b.pause(&scope).await.expect("pause"), 0, "paused already");
    let pauses: Vec<_> = b
        .paused()
        .await
        .expect("paused")
        .into_iter()
        .filter(|p| p.scope == scope)
        .collect();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    let skew = std::time::Duration::from_secs(5);
    assert!(
        pauses[0].since >= since - skew && pauses[0].since <= h.now() + skew,
        "{pauses:?}"
    );

    // Accepts go on; what a worker or an operator puts back is held too.
    assert_eq!(
        b.accept(&delivery(&late, &event_type))
            .await
            .expect("accept"),
        Accepted::Stored
    );
    assert_eq!(
        b.accept(&delivery(&late, &event_type))
            .await
            .expect("accept"),
        Accepted::Duplicate
    );
    assert_eq!(
        b.accept(&delivery(&other, "test")).await.expect("accept"),
        Accepted::Stored
    );
    assert!(
        b.retry(&retried, &retried_lease.token, "downstream down", h.now())
            .await
            .expect("retry")
    );
    assert!(
        b.release(&released, &released_lease.token)
            .await
            .expect("release")
    );
    b.replay(&dead).await.expect("replay of a dead letter");
    for each in [
        &first, &second, &scheduled, &dead, &retried, &released, &late,
    ] {
        assert_eq!(state(b, each).await, EntryState::Paused, "{each}");
    }
    b.replay(&first).await.expect("replay of a paused entry");
    assert_eq!(state(b, &first).await, EntryState::Paused, "stays paused");
    let stats = b.stats().await.expect("stats");
    assert_eq!(stats.paused, before.paused + 7, "{stats:?}");
    assert_eq!(
        stats.processing,
        before.processing - 2,
        "the retried and the released"
    );

    // Listed as paused, with their attempts as they were.
    let listed = super::list_all(
        b,
        ListQuery::new(EntryState::Paused).event_type(&event_type),
    )
    .await;
    let attempts: HashMap<&str, u32> = listed
        .iter()
        .map(|e| {
            assert_eq!(e.state, EntryState::Paused);
            assert!(e.next_attempt_at.is_some(), "{e:?}");
            (e.id.as_str(), e.attempts)
        })
        .collect();
    let expected: HashMap<&str, u32> = [
        (first.as_str(), 0),
        (second.as_str(), 0),
        (scheduled.as_str(), 1),
        (dead.as_str(), 0),
        (retried.as_str(), 1),
        (released.as_str(), 0),
        (late.as_str(), 0),
    ]
    .into();
    assert_eq!(attempts, expected);
    let shown = b.entry(&late).await.expect("entry").expect("an entry");
    let late_listed = listed.iter().find(|e| e.id == late).expect("listed");
    assert_eq!(
        &shown.summary, late_listed,
        "the listing and the entry agree"
    );

    // Time passes: the scheduled retry is due, the crashed worker's lease runs out. Nothing of
    // the paused type is taken; the other type is.
    h.advance(STEP).await;
    let mut others = HashSet::new();
    for _ in 0..3 {
        for entry in b.take(512, super::LEASE).await.expect("take") {
            assert_ne!(
                entry.event_type, event_type,
                "taken while paused: {entry:?}"
            );
            if entry.id == other {
                assert!(b.complete(&entry.id, &entry.token).await.expect("complete"));
                others.insert(entry.id);
            } else {
                let _ = b.release(&entry.id, &entry.token).await;
            }
        }
    }
    assert!(others.contains(&other), "the other type is handled");
    assert!(
        !b.complete(&crashed, &crashed_lease.token)
            .await
            .expect("complete"),
        "the crashed worker's lease is gone"
    );
    let crashed_entry = b.entry(&crashed).await.expect("entry").expect("an entry");
    assert_eq!(crashed_entry.summary.state, EntryState::Paused);
    assert_eq!(crashed_entry.summary.attempts, 1, "no takeover counted");
    assert_eq!(
        b.stats().await.expect("stats").paused,
        before.paused + 8,
        "the crashed one held too"
    );

    // Resumed: every one drains, each as the attempt it would have been.
    assert_eq!(b.resume(&scope).await.expect("resume"), 8);
    assert_eq!(
        b.resume(&scope).await.expect("resume"),
        0,
        "resumed already"
    );
    assert!(
        b.paused()
            .await
            .expect("paused")
            .iter()
            .all(|p| p.scope != scope)
    );
    let all = [
        &first, &second, &scheduled, &dead, &crashed, &retried, &released, &late,
    ];
    let taken = take_these(h, &all).await;
    let attempt = |id: &String| taken[id].attempt;
    for each in [&first, &second, &dead, &released, &late] {
        assert_eq!(attempt(each), 1, "{each}");
    }
    for each in [&scheduled, &crashed, &retried] {
        assert_eq!(attempt(each), 2, "{each}");
    }
    for (id, entry) in &taken {
        assert!(b.complete(id, &entry.token).await.expect("complete"));
    }
}

/// Pausing everything holds every type (nothing is taken at all, new accepts included); a type
/// paused besides stays held when everything is resumed, until it is resumed itself.
pub async fn pausing_everything_holds_every_type(h: &impl Harness) {
    let b = h.backend();
    let base = unique("evt_pause_all");
    let (one, two, three) = (
        format!("{base}_1"),
        format!("{base}_2"),
        format!("{base}_3"),
    );
    let kept_type = unique("paused.kept");
    b.accept(&delivery(&one, &kept_type)).await.expect("accept");
    b.accept(&delivery(&two, "run.completed"))
        .await
        .expect("accept");
    assert!(b.pause(&PauseScope::All).await.expect("pause") >= 2);
    assert!(
        b.take(512, super::LEASE).await.expect("take").is_empty(),
        "nothing is taken while everything is paused"
    );
    b.accept(&delivery(&three, "alert.triggered"))
        .await
        .expect("accept");
    for each in [&one, &two, &three] {
        assert_eq!(state(b, each).await, EntryState::Paused, "{each}");
    }
    let stats = b.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.scheduled), (0, 0), "{stats:?}");
    assert!(stats.paused >= 3, "{stats:?}");

    let kept = PauseScope::event_type(&kept_type);
    assert_eq!(
        b.pause(&kept).await.expect("pause"),
        0,
        "held already by the pause of everything"
    );
    assert!(b.resume(&PauseScope::All).await.expect("resume") >= 2);
    assert_eq!(
        state(b, &one).await,
        EntryState::Paused,
        "its type is paused"
    );
    assert_eq!(state(b, &two).await, EntryState::Pending);
    assert_eq!(state(b, &three).await, EntryState::Pending);
    let scopes: Vec<PauseScope> = b
        .paused()
        .await
        .expect("paused")
        .into_iter()
        .map(|p| p.scope)
        .collect();
    assert!(
        scopes.contains(&kept) && !scopes.contains(&PauseScope::All),
        "{scopes:?}"
    );
    assert_eq!(b.resume(&kept).await.expect("resume"), 1);
    let taken = take_these(h, &[&one, &two, &three]).await;
    for (id, entry) in &taken {
        assert_eq!(entry.attempt, 1);
        assert!(b.complete(id, &entry.token).await.expect("complete"));
    }
}

/// `now` to the millisecond: what every backend keeps of a time.
fn to_ms(now: OffsetDateTime) -> OffsetDateTime {
    let nanos = now.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1_000_000))
        .expect("a time in range")
}

/// Recorded actions come back as recorded, newest first, the oldest forgotten past
/// [`RECENT_ACTIONS`].
pub async fn recent_actions_are_kept_newest_first_and_bounded(h: &impl Harness) {
    let b = h.backend();
    let start = to_ms(h.now());
    let actions: Vec<Action> = (0..RECENT_ACTIONS + 5)
        .map(|i| {
            let kind = ActionKind::ALL[i % ActionKind::ALL.len()];
            Action::new(format!("operator {i}"), kind, format!("subject {i}"))
                .ids((0..i % 3).map(|n| format!("evt_{i}_{n}")))
                .at(start + std::time::Duration::from_millis(i as u64))
        })
        .collect();
    for action in &actions {
        b.record_action(action).await.expect("record");
    }
    let recent = b.recent_actions(1000).await.expect("recent");
    assert_eq!(recent.len(), RECENT_ACTIONS, "bounded");
    let newest_first: Vec<Action> = actions.iter().rev().take(RECENT_ACTIONS).cloned().collect();
    assert_eq!(recent, newest_first);
    let three = b.recent_actions(3).await.expect("recent");
    assert_eq!(three, newest_first[..3]);
    let with_count = Action::new("ops", ActionKind::Purge, "done entries").count(4321);
    let with_count = with_count.clone().at(to_ms(with_count.at));
    b.record_action(&with_count).await.expect("record");
    assert_eq!(
        b.recent_actions(1).await.expect("recent"),
        [with_count],
        "a count without ids"
    );
}
