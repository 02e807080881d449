//! The Verifier's rules: rotation, size limit, freshness window, order of checks, payloads.

use std::time::Duration;

use airmy_verify::event::{AlertTriggered, RunCompleted};
use airmy_verify::testing::{self, Delivery, FixedClock};
use airmy_verify::{Bytes, Error, Event, MalformedReason, Secret, Signature, Verifier};

fn secret(s: &str) -> Secret {
    Secret::new(s).expect("non-empty")
}

fn sig(d: &Delivery) -> Signature {
    Signature::parse(&d.signature).expect("well-formed")
}

#[test]
fn accepts_every_configured_secret_during_a_rotation() {
    let verifier = Verifier::builder(secret("whsec_new"))
        .previous_secret(secret("whsec_old"))
        .previous_secret(secret("whsec_older"))
        .clock(FixedClock::default())
        .build();
    let event = testing::sample_event("run.completed");
    for s in ["whsec_new", "whsec_old", "whsec_older"] {
        let d = event.signed(s);
        assert!(
            verifier.verify_event::<Event>(&sig(&d), &d.body).is_ok(),
            "{s}"
        );
    }
    let d = event.signed("whsec_retired");
    assert_eq!(
        verifier
            .verify_event::<Event>(&sig(&d), &d.body)
            .unwrap_err(),
        Error::SignatureMismatch
    );
}

#[test]
fn the_body_limit_is_inclusive() {
    let verifier = Verifier::builder(secret("s"))
        .max_body_size(1000)
        .clock(FixedClock::default())
        .build();
    let at = testing::sample_event("test").padded_to(1000).signed("s");
    assert!(verifier.verify_event::<Event>(&sig(&at), &at.body).is_ok());
    let over = testing::sample_event("test").padded_to(1001).signed("s");
    assert_eq!(
        verifier
            .verify_event::<Event>(&sig(&over), &over.body)
            .unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );
    assert_eq!(verifier.check_content_length(1000), Ok(()));
    assert_eq!(
        verifier.check_content_length(1001),
        Err(Error::BodyTooLarge { limit: 1000 })
    );
    assert_eq!(
        verifier.check_content_length(u64::MAX),
        Err(Error::BodyTooLarge { limit: 1000 })
    );
}

#[test]
fn defaults_are_2_mib_and_5_minutes() {
    let verifier = Verifier::new(secret("s"));
    assert_eq!(verifier.max_body_size(), 2_097_152);
    assert_eq!(verifier.tolerance(), Some(Duration::from_secs(300)));
}

#[test]
fn the_freshness_window_includes_its_bounds_in_both_directions() {
    let verifier = testing::conformance_verifier();
    let now = testing::fixed_now();
    let check = |offset_ms: i64| {
        let d = testing::sample_event("test")
            .created_at(now + time::Duration::milliseconds(offset_ms))
            .signed(testing::SECRET);
        verifier
            .verify_event::<Event>(&sig(&d), &d.body)
            .map(|_| ())
    };
    assert_eq!(check(0), Ok(()));
    assert_eq!(check(-300_000), Ok(()));
    assert_eq!(check(300_000), Ok(()));
    assert_eq!(
        check(-301_000),
        Err(Error::Stale {
            event_id: "evt_test_test".into(),
            age: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        })
    );
    assert_eq!(
        check(301_000),
        Err(Error::FromFuture {
            event_id: "evt_test_test".into(),
            ahead: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        })
    );
    // One millisecond past the bound is already outside.
    assert!(matches!(check(-300_001), Err(Error::Stale { .. })));
    assert!(matches!(check(300_001), Err(Error::FromFuture { .. })));
}

#[test]
fn freshness_can_be_tuned_or_turned_off() {
    let old = testing::sample_event("test")
        .created_at(time::macros::datetime!(2020-01-01 00:00 UTC))
        .signed("s");
    let strict = Verifier::builder(secret("s"))
        .tolerance(Duration::from_secs(10))
        .clock(FixedClock::default())
        .build();
    assert!(matches!(
        strict.verify_event::<Event>(&sig(&old), &old.body),
        Err(Error::Stale { .. })
    ));
    let off = Verifier::builder(secret("s"))
        .without_freshness_check()
        .build();
    assert_eq!(off.tolerance(), None);
    assert!(off.verify_event::<Event>(&sig(&old), &old.body).is_ok());
}

#[test]
fn checks_run_in_the_documented_order() {
    let verifier = Verifier::builder(secret("s"))
        .max_body_size(10)
        .clock(FixedClock::default())
        .build();
    // Header before Content-Length.
    let none: [&[u8]; 0] = [];
    assert_eq!(
        verifier.check_headers(none, Some(1_000_000)).unwrap_err(),
        Error::MissingSignature
    );
    assert_eq!(
        verifier
            .check_headers([&b"nope"[..]], Some(1_000_000))
            .unwrap_err(),
        Error::MalformedSignature(MalformedReason::WrongLength(4))
    );
    let good = "ab".repeat(32);
    assert_eq!(
        verifier
            .check_headers([good.as_bytes()], Some(11))
            .unwrap_err(),
        Error::BodyTooLarge { limit: 10 }
    );
    assert!(verifier.check_headers([good.as_bytes()], None).is_ok());
    // Size before signature; signature before JSON; JSON before freshness.
    let big = Delivery::sign(vec![b' '; 11], "wrong");
    assert_eq!(
        verifier.verify_signature(&sig(&big), &big.body),
        Err(Error::BodyTooLarge { limit: 10 })
    );
    let garbage = Delivery::sign(&b"{garbage"[..], "wrong");
    assert_eq!(
        verifier
            .verify_event::<Event>(&sig(&garbage), &garbage.body)
            .unwrap_err(),
        Error::SignatureMismatch
    );
    let lax = Verifier::builder(secret("s"))
        .clock(FixedClock::default())
        .build();
    let stale_and_wrong_type = testing::sample_event("alert.triggered")
        .created_at(time::macros::datetime!(2020-01-01 00:00 UTC))
        .signed("s");
    assert!(matches!(
        lax.verify_event::<RunCompleted>(&sig(&stale_and_wrong_type), &stale_and_wrong_type.body),
        Err(Error::Stale { .. })
    ));
}

#[test]
fn a_typed_verification_of_another_type_is_422() {
    let verifier = testing::conformance_verifier();
    let d = testing::sample_event("alert.triggered").signed(testing::SECRET);
    let err = verifier
        .verify_event::<RunCompleted>(&sig(&d), &d.body)
        .unwrap_err();
    assert_eq!(
        err,
        Error::UnexpectedEventType {
            event_id: "evt_test_alert_triggered".into(),
            expected: "run.completed",
            found: "alert.triggered".into()
        }
    );
    assert_eq!(err.status(), 422);
    assert_eq!(err.code(), "unexpected_event_type");
    let alert = verifier
        .verify_event::<AlertTriggered>(&sig(&d), &d.body)
        .expect("alert");
    assert_eq!(alert.data.status.as_deref(), Some("firing"));
}

#[test]
fn verified_payloads_keep_the_same_bytes_and_parse_later() {
    let verifier = testing::conformance_verifier();
    let d = testing::sample_event("run.completed").signed(testing::SECRET);
    let both = verifier.verify(&sig(&d), d.body.clone()).expect("verifies");
    assert_eq!(both.bytes.as_ptr(), d.body.as_ptr(), "no copy");
    let id = both.envelope.id.clone();
    let as_payload = both.into_payload();
    assert_eq!(as_payload.bytes().as_ptr(), d.body.as_ptr(), "no copy");
    assert_eq!(as_payload.id(), id);
    assert_eq!(as_payload.event_type(), "run.completed");
    let body: Bytes = d.body.clone();
    let payload = verifier
        .verify_payload(&sig(&d), body.clone())
        .expect("verifies");
    assert_eq!(payload.bytes().as_ptr(), body.as_ptr(), "no copy");
    assert_eq!(payload.id(), "evt_test_run_completed");
    assert_eq!(payload.event_type(), "run.completed");
    assert_eq!(payload.created_at(), testing::fixed_now());
    let run = payload.parse::<RunCompleted>().expect("parses");
    assert_eq!(run.data.tokens_used, Some(1247));
    assert!(matches!(
        payload.parse::<AlertTriggered>(),
        Err(Error::UnexpectedEventType { .. })
    ));
    assert!(format!("{payload:?}").contains("len"));
    assert_eq!(payload.into_bytes(), d.body);
}

#[test]
fn verified_payloads_check_everything_but_data() {
    let verifier = testing::conformance_verifier();
    for case in testing::conformance_cases() {
        let expected = match testing::check_case_with_core(&verifier, &case) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.code()),
        };
        let got = verifier
            .check_headers(case.signatures.iter().map(Vec::as_slice), None)
            .and_then(|s| verifier.verify_payload(&s, case.body.clone()))
            .map(|_| ())
            .map_err(|e| e.code());
        if case.name == "documented_type_with_non_object_data" {
            // Skipping `data` cannot see that it is not an object; parse() will.
            assert_eq!(got, Ok(()));
        } else {
            assert_eq!(got, expected, "{}", case.name);
        }
    }
}

#[test]
fn debug_output_never_shows_secrets_or_signatures() {
    let verifier = Verifier::builder(secret("whsec_TOPSECRET"))
        .previous_secret(secret("whsec_OLDSECRET"))
        .build();
    let shown = format!("{verifier:?}");
    assert!(
        !shown.contains("TOPSECRET") && !shown.contains("OLDSECRET"),
        "{shown}"
    );
    assert!(shown.contains("secrets: 2"), "{shown}");
    let builder = format!("{:?}", Verifier::builder(secret("whsec_TOPSECRET")));
    assert!(!builder.contains("TOPSECRET"));
    let d = Delivery::sign(&b"x"[..], "whsec_TOPSECRET");
    let sig_debug = format!("{:?}", sig(&d));
    assert!(!sig_debug.contains(&d.signature[..8]), "{sig_debug}");
    for case in testing::conformance_cases() {
        if let Err(e) = testing::check_case_with_core(&testing::conformance_verifier(), &case) {
            let text = format!("{e} {e:?}");
            for s in &case.signatures {
                let s = String::from_utf8_lossy(s);
                let s = s.trim();
                assert!(s.len() < 16 || !text.contains(s), "{}: {text}", case.name);
            }
            assert!(!text.contains(testing::SECRET));
        }
    }
}
