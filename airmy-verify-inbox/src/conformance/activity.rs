//! The conformance rule of [`Admin::activity`](crate::Admin::activity): what the console's
//! chart shows.

use super::{Harness, LEASE, delivery};
use crate::backend::{ACTIVITY_MINUTES, Accepted};

/// Every stored accept, completion, retry and burial is counted once (a duplicate and a
/// release are not), in the last hour of minute-by-minute counts: sixty consecutive minutes,
/// oldest first.
pub async fn activity_counts_accepts_handlings_and_failures(h: &impl Harness) {
    let b = h.backend();
    let before = b.activity().await.expect("activity");
    assert_eq!(before.minutes.len(), ACTIVITY_MINUTES, "an hour of minutes");
    for pair in before.minutes.windows(2) {
        assert_eq!(
            pair[1].start - pair[0].start,
            time::Duration::minutes(1),
            "consecutive minutes, oldest first"
        );
    }
    let ids: Vec<String> = (0..5).map(|i| format!("evt_activity_{i}")).collect();
    for id in &ids {
        assert_eq!(
            b.accept(&delivery(id, "activity.test"))
                .await
                .expect("accept"),
            Accepted::Stored
        );
    }
    assert_eq!(
        b.accept(&delivery(&ids[0], "activity.test"))
            .await
            .expect("accept"),
        Accepted::Duplicate,
        "a duplicate is not an accept"
    );
    let mut ours = Vec::new();
    for _ in 0..10 {
        for leased in b.take(20, LEASE * 10).await.expect("take") {
            if ids.contains(&leased.id) {
                ours.push(leased);
            } else {
                b.release(&leased.id, &leased.token).await.expect("release");
            }
        }
        if ours.len() == ids.len() {
            break;
        }
    }
    assert_eq!(ours.len(), ids.len(), "the five taken");
    ours.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(
        b.complete(&ours[0].id, &ours[0].token)
            .await
            .expect("complete")
    );
    assert!(
        b.complete(&ours[1].id, &ours[1].token)
            .await
            .expect("complete")
    );
    let later = h.now() + time::Duration::hours(1);
    assert!(
        b.retry(&ours[2].id, &ours[2].token, "downstream 503", later)
            .await
            .expect("retry")
    );
    assert!(
        b.bury(&ours[3].id, &ours[3].token, "bad payload")
            .await
            .expect("bury")
    );
    assert!(
        b.release(&ours[4].id, &ours[4].token)
            .await
            .expect("release")
    );
    // A second completion of a completed entry changes nothing and counts nothing.
    assert!(
        !b.complete(&ours[0].id, &ours[0].token)
            .await
            .expect("complete")
    );
    let after = b.activity().await.expect("activity");
    assert_eq!(after.minutes.len(), ACTIVITY_MINUTES);
    let (a0, h0, f0) = before.totals();
    let (a1, h1, f1) = after.totals();
    assert_eq!(
        (a1 - a0, h1 - h0, f1 - f0),
        (5, 2, 2),
        "five accepted, two handled, two failed (a retry, a dead letter)"
    );
    let last = after.minutes.last().expect("a minute");
    assert!(
        last.accepted + last.handled + last.failed > 0
            || after.minutes[ACTIVITY_MINUTES - 2].accepted > 0,
        "counted in the current minute (or the one before, when it just turned)"
    );
}
