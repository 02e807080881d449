//! The listing rules of the conformance suite: pages, orders, filters, cursors, one entry in
//! each state, and `replay` agreeing with `replay_check`.

use std::time::Duration;

use super::{Harness, delivery, take_one, unique};
use crate::backend::{Accepted, Backend, EntryState, ListQuery, Order};

/// Follows a listing's cursors to its end (at most 100 pages), every page within its limit.
pub(super) async fn list_all(b: &dyn Backend, query: ListQuery) -> Vec<crate::EntrySummary> {
    let mut query = query;
    let mut all = Vec::new();
    for _ in 0..100 {
        let page = b.list(&query).await.expect("list");
        assert!(page.entries.len() <= query.page_size(), "{page:?}");
        all.extend(page.entries);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return all,
        }
    }
    panic!("a listing of a few entries did not end within 100 pages");
}

/// Listings: each state's entries page by page through cursors (none twice, none left out),
/// oldest or newest first, filtered by type and id prefix; one entry in full with its body;
/// a cursor from elsewhere refused; and a listing changes nothing.
pub async fn entries_are_listed_by_state_page_by_page(h: &impl Harness) {
    let b = h.backend();
    let prefix = format!("{}_", unique("evt_list"));
    let ids: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
    let types = [
        "run.completed",
        "alert.triggered",
        "run.completed",
        "alert.triggered",
        "run.completed",
    ];
    let mut bodies = Vec::new();
    for (id, event_type) in ids.iter().zip(types) {
        let d = delivery(id, event_type);
        bodies.push(d.bytes().clone());
        assert_eq!(b.accept(&d).await.expect("accepted"), Accepted::Stored);
    }
    let pending = ListQuery::new(EntryState::Pending).limit(2);
    let mine = |listed: Vec<crate::EntrySummary>| -> Vec<String> {
        listed
            .into_iter()
            .filter(|e| e.id.starts_with(&prefix))
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(
        mine(list_all(b, pending.clone()).await),
        ids,
        "oldest first, in pages of 2"
    );
    let reversed: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        mine(list_all(b, pending.clone().order(Order::Newest)).await),
        reversed,
        "newest first"
    );
    let filtered = list_all(
        b,
        pending
            .clone()
            .id_prefix(&prefix)
            .event_type("alert.triggered"),
    )
    .await;
    assert_eq!(
        filtered.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [ids[1].as_str(), ids[3].as_str()],
        "by type and id prefix"
    );
    assert!(
        filtered
            .iter()
            .all(|e| e.state == EntryState::Pending && e.attempts == 0)
    );
    assert!(matches!(
        b.list(&pending.clone().after("not-a-cursor")).await,
        Err(e) if e.kind() == crate::ErrorKind::Invalid
    ));

    // One entry in each state.
    let before = b.stats().await.expect("stats");
    let processing = take_one(h, &ids[0]).await.expect("taken");
    let scheduled = take_one(h, &ids[1]).await.expect("taken");
    let retry_at = h.now() + Duration::from_secs(3600);
    assert!(
        b.retry(&ids[1], &scheduled.token, "database down", retry_at)
            .await
            .expect("retry")
    );
    let dead = take_one(h, &ids[2]).await.expect("taken");
    assert!(
        b.bury(&ids[2], &dead.token, "pager returned 500")
            .await
            .expect("bury")
    );
    let done = take_one(h, &ids[3]).await.expect("taken");
    assert!(b.complete(&ids[3], &done.token).await.expect("complete"));
    let stats = b.stats().await.expect("stats");
    for (state, id) in [
        (EntryState::Processing, &ids[0]),
        (EntryState::Scheduled, &ids[1]),
        (EntryState::Dead, &ids[2]),
        (EntryState::Done, &ids[3]),
        (EntryState::Pending, &ids[4]),
    ] {
        let listed = list_all(b, ListQuery::new(state).id_prefix(&prefix).limit(1)).await;
        assert_eq!(
            listed.iter().map(|e| &e.id).collect::<Vec<_>>(),
            [id],
            "{state}: {listed:?}"
        );
        let entry = b.entry(id).await.expect("entry").expect("found");
        assert_eq!(
            entry.summary, listed[0],
            "{state}: the listing and the entry agree"
        );
        assert_eq!(entry.summary.state, state);
        let i = ids.iter().position(|x| x == id).expect("one of ours");
        assert_eq!(entry.body, bodies[i], "the body as received");
        assert_eq!(entry.summary.event_type, types[i]);
        match state {
            EntryState::Scheduled => {
                let at = entry.summary.next_attempt_at.expect("a retry time");
                assert!(
                    (at - retry_at).abs() < time::Duration::seconds(1),
                    "{at} ~ {retry_at}"
                );
                assert_eq!(entry.summary.last_error.as_deref(), Some("database down"));
                assert_eq!(entry.summary.attempts, 1);
            }
            EntryState::Dead => {
                assert!(entry.summary.finished_at.is_some());
                assert_eq!(
                    entry.summary.last_error.as_deref(),
                    Some("pager returned 500")
                );
            }
            EntryState::Done => assert!(entry.summary.finished_at.is_some()),
            EntryState::Processing => assert!(entry.summary.next_attempt_at.is_some()),
            EntryState::Pending => {
                assert_eq!(entry.summary.attempts, 0);
                assert!(entry.summary.next_attempt_at.is_some());
            }
            EntryState::Paused => unreachable!("pauses have checks of their own"),
        }
    }
    assert_eq!(b.entry("evt_never_seen").await.expect("entry"), None);
    let without_age = |mut s: crate::Stats| {
        s.oldest_pending_age_secs = None;
        s
    };
    assert_eq!(
        without_age(b.stats().await.expect("stats")),
        without_age(stats),
        "listing changes nothing"
    );
    assert_eq!(stats.processing, before.processing + 1);

    // What `replay --dry-run` says, read from the entry, is what `replay` then does, in every
    // state and for an unknown id.
    for id in [
        "evt_never_seen",
        &ids[0],
        &ids[1],
        &ids[2],
        &ids[3],
        &ids[4],
    ] {
        let entry = b.entry(id).await.expect("entry");
        let predicted = crate::replay_check(id, entry.as_ref()).map_err(|e| e.kind());
        let replayed = b.replay(id).await.map_err(|e| e.kind());
        assert_eq!(
            predicted.map(|_| ()),
            replayed,
            "{id} ({:?})",
            entry.map(|e| e.summary.state)
        );
    }
    assert_eq!(
        crate::replay_check(&ids[0], b.entry(&ids[0]).await.expect("entry").as_ref())
            .map_err(|e| e.kind()),
        Err(crate::ErrorKind::Busy),
        "a processing entry is not replayed"
    );

    // Leave nothing due behind: the replayed ones, and the one still leased.
    assert!(
        b.complete(&ids[0], &processing.token)
            .await
            .expect("complete")
    );
    for (i, id) in ids.iter().enumerate().skip(1) {
        let leased = take_one(h, id).await.expect("due again after its replay");
        // A dead or done entry starts its attempts again; a scheduled one is only due now.
        let attempt = if i == 1 { 2 } else { 1 };
        assert_eq!(
            leased.attempt, attempt,
            "{id}: its attempts after the replay"
        );
        assert!(b.complete(id, &leased.token).await.expect("complete"));
    }
}
