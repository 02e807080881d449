//! The Verifier's rules: rotation, size limit, freshness window, order of checks, the
//! verified delivery, and the same answer through `verify` and an `Intake` fed in chunks.

use std::time::Duration;

use airmy_verify::event::{AlertTriggered, RunCompleted};
use airmy_verify::testing::{self, Delivery, FixedClock};
use airmy_verify::{Bytes, Envelope, Error, Event, EventData, MalformedReason, Secret, Verifier};

fn secret(s: &str) -> Secret {
    Secret::new(s).expect("non-empty")
}

/// `verify` then `take_event::<T>()`: the typical call.
fn event<T: EventData>(verifier: &Verifier, d: &Delivery) -> Result<Envelope<T>, Error> {
    verifier
        .verify(&d.signature, d.body.clone())?
        .take_event::<T>()
}

/// The same delivery through an `Intake`, in chunks of `chunk` bytes, with an empty chunk
/// after each, declaring the length or not.
fn event_in_chunks<T: EventData>(
    verifier: &Verifier,
    d: &Delivery,
    chunk: usize,
    declare: bool,
) -> Result<Envelope<T>, Error> {
    let declared = declare.then_some(d.body.len() as u64);
    let mut intake = verifier.intake([d.signature.as_bytes()], declared)?;
    for part in d.body.chunks(chunk.max(1)) {
        intake.push(Bytes::copy_from_slice(part))?;
        intake.push(Bytes::new())?;
    }
    intake.finish()?.take_event::<T>()
}

/// Every path gives `d` the same answer; that answer.
fn every_path<T: EventData + PartialEq + std::fmt::Debug>(
    verifier: &Verifier,
    d: &Delivery,
) -> Result<Envelope<T>, Error> {
    let direct = event::<T>(verifier, d);
    for chunk in [1, 2, 7, 64, 4096] {
        for declare in [false, true] {
            assert_eq!(
                event_in_chunks::<T>(verifier, d, chunk, declare),
                direct,
                "chunks of {chunk}, declared: {declare}"
            );
        }
    }
    direct
}

#[test]
fn accepts_every_configured_secret_during_a_rotation() {
    let verifier = Verifier::builder(secret("whsec_new"))
        .previous_secret(secret("whsec_old"))
        .previous_secret(secret("whsec_older"))
        .clock(FixedClock::default())
        .build();
    let sample = testing::sample_event("run.completed");
    for s in ["whsec_new", "whsec_old", "whsec_older"] {
        let d = sample.signed(s);
        assert!(every_path::<Event>(&verifier, &d).is_ok(), "{s}");
    }
    let d = sample.signed("whsec_retired");
    assert_eq!(
        every_path::<Event>(&verifier, &d).unwrap_err(),
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
    assert!(every_path::<Event>(&verifier, &at).is_ok());
    let over = testing::sample_event("test").padded_to(1001).signed("s");
    assert_eq!(
        every_path::<Event>(&verifier, &over).unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );
    // A declared Content-Length is checked before any of the body is read.
    let header = [at.signature.as_bytes()];
    assert!(verifier.intake(header, Some(1000)).is_ok());
    assert_eq!(
        verifier.intake(header, Some(1001)).unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );
    assert_eq!(
        verifier.intake(header, Some(u64::MAX)).unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );
}

#[test]
fn defaults_are_2_mib_5_minutes_and_5_seconds() {
    let verifier = Verifier::new(secret("s"));
    assert_eq!(verifier.max_body_size(), 2_097_152);
    assert_eq!(verifier.tolerance(), Some(Duration::from_secs(300)));
    assert_eq!(verifier.body_timeout(), Duration::from_secs(5));
    let slow = Verifier::builder(secret("s"))
        .body_timeout(Duration::from_secs(9))
        .build();
    assert_eq!(slow.body_timeout(), Duration::from_secs(9));
}

#[test]
fn the_freshness_window_includes_its_bounds_in_both_directions() {
    let verifier = testing::conformance_verifier();
    let now = testing::fixed_now();
    let check = |offset_ms: i64| {
        let d = testing::sample_event("test")
            .created_at(now + time::Duration::milliseconds(offset_ms))
            .signed(testing::SECRET);
        every_path::<Event>(&verifier, &d).map(|_| ())
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
        every_path::<Event>(&strict, &old),
        Err(Error::Stale { .. })
    ));
    let off = Verifier::builder(secret("s"))
        .without_freshness_check()
        .build();
    assert_eq!(off.tolerance(), None);
    assert!(every_path::<Event>(&off, &old).is_ok());
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
        verifier.intake(none, Some(1_000_000)).unwrap_err(),
        Error::MissingSignature
    );
    assert_eq!(
        verifier
            .intake([&b"nope"[..]], Some(1_000_000))
            .unwrap_err(),
        Error::MalformedSignature(MalformedReason::WrongLength(4))
    );
    let good = "ab".repeat(32);
    assert_eq!(
        verifier.intake([good.as_bytes()], Some(11)).unwrap_err(),
        Error::BodyTooLarge { limit: 10 }
    );
    assert!(verifier.intake([good.as_bytes()], None).is_ok());
    // Size before signature, whether the size is declared or counted as the body arrives.
    let big = Delivery::sign(vec![b' '; 11], "wrong");
    assert_eq!(
        every_path::<Event>(&verifier, &big).unwrap_err(),
        Error::BodyTooLarge { limit: 10 }
    );
    // Signature before JSON.
    let garbage = Delivery::sign(&b"{garbage"[..], "wrong");
    assert_eq!(
        every_path::<Event>(&verifier, &garbage).unwrap_err(),
        Error::SignatureMismatch
    );
    // JSON before freshness, freshness before the event type.
    let lax = Verifier::builder(secret("s"))
        .clock(FixedClock::default())
        .build();
    let signed_garbage = Delivery::sign(&b"{garbage"[..], "s");
    assert!(matches!(
        every_path::<Event>(&lax, &signed_garbage),
        Err(Error::InvalidJson { .. })
    ));
    let stale_and_wrong_type = testing::sample_event("alert.triggered")
        .created_at(time::macros::datetime!(2020-01-01 00:00 UTC))
        .signed("s");
    assert!(matches!(
        every_path::<RunCompleted>(&lax, &stale_and_wrong_type),
        Err(Error::Stale { .. })
    ));
}

#[test]
fn a_typed_verification_of_another_type_is_422() {
    let verifier = testing::conformance_verifier();
    let d = testing::sample_event("alert.triggered").signed(testing::SECRET);
    let err = every_path::<RunCompleted>(&verifier, &d).unwrap_err();
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
    let alert = every_path::<AlertTriggered>(&verifier, &d).expect("alert");
    assert_eq!(alert.data.status.as_deref(), Some("firing"));
}

#[test]
fn verified_deliveries_keep_the_same_bytes_and_parse_on_demand() {
    let verifier = testing::conformance_verifier();
    let d = testing::sample_event("run.completed").signed(testing::SECRET);
    let body: Bytes = d.body.clone();
    let mut verified = verifier
        .verify(&d.signature, body.clone())
        .expect("verifies");
    assert_eq!(verified.bytes().as_ptr(), body.as_ptr(), "no copy");
    assert_eq!(verified.bytes(), &d.body);
    assert_eq!(verified.id(), "evt_test_run_completed");
    assert_eq!(verified.event_type(), "run.completed");
    assert_eq!(verified.created_at(), testing::fixed_now());
    let shown = format!("{verified:?}");
    assert!(shown.contains("len"), "{shown}");
    assert!(
        !shown.contains("run_01HXYZ123"),
        "Debug never shows the body: {shown}"
    );

    // The first take hands over the parse made during verification; later ones parse again.
    let run = verified.take_event::<RunCompleted>().expect("parses");
    assert_eq!(run.id, "evt_test_run_completed");
    assert_eq!(run.data.tokens_used, Some(1247));
    assert!(matches!(
        verified.take_event::<AlertTriggered>(),
        Err(Error::UnexpectedEventType { .. })
    ));
    let again = verified.take_event::<Event>().expect("parses again");
    assert_eq!(again, run.clone().into_event());
    // A clone shares the bytes, not the parse.
    let mut clone = verified.clone();
    assert_eq!(clone.bytes().as_ptr(), body.as_ptr(), "no copy");
    assert_eq!(clone.take_event::<RunCompleted>().expect("parses"), run);
    assert_eq!(verified.into_bytes(), d.body);

    // A wrong type on the first take does not lose the event: the next take parses again.
    let mut wrong_first = verifier
        .verify(&d.signature, d.body.clone())
        .expect("verifies");
    assert!(wrong_first.take_event::<AlertTriggered>().is_err());
    assert_eq!(
        wrong_first.take_event::<RunCompleted>().expect("parses"),
        run
    );
}

#[test]
fn verify_and_intake_agree_on_every_conformance_case() {
    let verifier = testing::conformance_verifier();
    for case in testing::conformance_cases() {
        let expected = testing::check_case_with_core(&verifier, &case);
        assert_eq!(
            expected.is_ok(),
            case.status == 200,
            "{}: {expected:?}",
            case.name
        );
        // `verify`, for the cases with exactly one signature value.
        if let [signature] = case.signatures.as_slice() {
            let got = verifier
                .verify(signature, case.body.clone())
                .and_then(|mut v| v.take_event::<Event>());
            assert_eq!(got, expected, "{}: verify", case.name);
        }
        // An intake without a declared length, the body in uneven chunks.
        let got = (|| {
            let mut intake = verifier.intake(&case.signatures, None)?;
            let mut rest = case.body.clone();
            let mut size = 1;
            while !rest.is_empty() {
                intake.push(rest.split_to(size.min(rest.len())))?;
                size = size * 3 + 1;
            }
            intake.finish()?.take_event::<Event>()
        })();
        assert_eq!(got, expected, "{}: intake in chunks", case.name);
    }
}

#[test]
fn a_truncated_body_is_invalid_json_on_every_path() {
    // The envelope parser meets `data` that is not an object for run.failed before it sees
    // that the body ends early: a body that is not JSON is still 400 invalid_json.
    let body: &[u8] = br#"{"id": "ev1", "type": "run.failed","created_at": "2096-03-22T14:30:00Z", "data":"2096, _0""#;
    let verifier = Verifier::builder(secret("s"))
        .without_freshness_check()
        .build();
    let d = Delivery::sign(body, "s");
    let err = every_path::<Event>(&verifier, &d).unwrap_err();
    assert!(matches!(err, Error::InvalidJson { .. }), "{err:?}");
    assert_eq!(err.status(), 400);
    assert_eq!(err.code(), "invalid_json");
    // The same body, complete, is JSON but not an envelope: 422.
    let mut complete = body.to_vec();
    complete.push(b'}');
    let complete = Delivery::sign(complete, "s");
    let err = every_path::<Event>(&verifier, &complete).unwrap_err();
    assert!(matches!(err, Error::InvalidEnvelope { .. }), "{err:?}");
    assert_eq!(err.status(), 422);
}

/// An unknown event whose `data` is `data`, keys in the order AIRMY sends them.
fn unknown_event(data: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_1","type":"metric.sampled","created_at":"2026-03-22T14:30:00Z","data":{data}}}"#
    )
    .into_bytes()
}

/// The same with `data` before `type` (which the envelope parser buffers as raw JSON), for an
/// unknown type and, wrapped in an object, for a documented one.
fn data_first_events(data: &str) -> [Vec<u8>; 2] {
    [
        format!(
            r#"{{"id":"evt_1","data":{data},"created_at":"2026-03-22T14:30:00Z","type":"metric.sampled"}}"#
        )
        .into_bytes(),
        format!(
            r#"{{"id":"evt_1","data":{{"x":{data}}},"created_at":"2026-03-22T14:30:00Z","type":"run.completed"}}"#
        )
        .into_bytes(),
    ]
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

const OUT_OF_RANGE: [&str; 3] = ["1e400", "[1, -1e400]", r#"{"x": 1e400}"#];

#[test]
fn deeply_nested_data_is_invalid_json_on_every_path() {
    let verifier = testing::conformance_verifier();
    let d = Delivery::sign(unknown_event(&nested(100_000)), testing::SECRET);
    let err = every_path::<Event>(&verifier, &d).unwrap_err();
    assert!(matches!(err, Error::InvalidJson { .. }), "{err:?}");
    assert_eq!(err.status(), 400);
    assert_eq!(err.code(), "invalid_json");
    // A few levels deep is fine.
    let d = Delivery::sign(unknown_event(&nested(20)), testing::SECRET);
    assert!(every_path::<Event>(&verifier, &d).is_ok());
}

#[test]
fn a_number_out_of_range_is_invalid_json_on_every_path() {
    let verifier = testing::conformance_verifier();
    for data in OUT_OF_RANGE {
        let d = Delivery::sign(unknown_event(data), testing::SECRET);
        let err = every_path::<Event>(&verifier, &d).unwrap_err();
        assert!(matches!(err, Error::InvalidJson { .. }), "{data}: {err:?}");
        assert_eq!(err.status(), 400);
        assert_eq!(err.code(), "invalid_json");
    }
    // The largest finite doubles are numbers like any other, and so are underflows to zero.
    let d = Delivery::sign(
        unknown_event("[1.7976931348623157e308, -1e-400]"),
        testing::SECRET,
    );
    assert!(every_path::<Event>(&verifier, &d).is_ok());
}

/// The same bodies with `data` before `type` get the same classification (400
/// `invalid_json`): the buffered `data` is parsed again after `type`, and its syntax error
/// must not turn into a data (422) error on that path.
#[test]
fn json_classification_does_not_depend_on_key_order() {
    let verifier = testing::conformance_verifier();
    let deep = nested(100_000);
    for data in OUT_OF_RANGE.into_iter().chain([deep.as_str()]) {
        for body in data_first_events(data) {
            let d = Delivery::sign(body, testing::SECRET);
            let err = every_path::<Event>(&verifier, &d).unwrap_err();
            let shown = &data[..data.len().min(12)];
            assert!(matches!(err, Error::InvalidJson { .. }), "{shown}: {err:?}");
        }
    }
}

#[test]
fn a_forged_body_in_many_chunks_is_refused() {
    let verifier = testing::conformance_verifier();
    let genuine = testing::sample_event("run.completed").signed(testing::SECRET);
    let mut forged = genuine.body.to_vec();
    let i = forged.len() / 3;
    forged[i] ^= 0x20;
    let mut intake = verifier
        .intake([genuine.signature.as_bytes()], Some(forged.len() as u64))
        .expect("headers");
    for part in forged.chunks(3) {
        intake.push(Bytes::copy_from_slice(part)).expect("fits");
    }
    assert_eq!(intake.len(), forged.len());
    assert_eq!(intake.finish().unwrap_err(), Error::SignatureMismatch);
    // A body signed with an unknown secret, in chunks of one byte.
    let wrong = testing::sample_event("run.completed").signed(testing::WRONG_SECRET);
    assert_eq!(
        event_in_chunks::<Event>(&verifier, &wrong, 1, false).unwrap_err(),
        Error::SignatureMismatch
    );
    // The genuine body in the same chunks verifies.
    assert!(event_in_chunks::<Event>(&verifier, &genuine, 3, true).is_ok());
}

#[test]
fn the_limit_holds_for_bodies_in_chunks() {
    let limit = 4096;
    let verifier = Verifier::builder(secret("s"))
        .max_body_size(limit)
        .clock(FixedClock::default())
        .build();
    let at = testing::sample_event("test").padded_to(limit).signed("s");
    assert_eq!(at.body.len(), limit);
    let mut intake = verifier
        .intake([at.signature.as_bytes()], None)
        .expect("headers");
    for part in at.body.chunks(100) {
        intake
            .push(Bytes::copy_from_slice(part))
            .expect("within the limit");
    }
    assert_eq!(intake.len(), limit);
    let verified = intake.finish().expect("the limit is inclusive");
    assert_eq!(verified.bytes(), &at.body);

    let over = testing::sample_event("test")
        .padded_to(limit + 1)
        .signed("s");
    let mut intake = verifier
        .intake([over.signature.as_bytes()], None)
        .expect("headers");
    let (head, last) = over.body.split_at(limit);
    for part in head.chunks(100) {
        intake
            .push(Bytes::copy_from_slice(part))
            .expect("within the limit");
    }
    assert_eq!(
        intake.push(Bytes::copy_from_slice(last)).unwrap_err(),
        Error::BodyTooLarge { limit }
    );
    assert_eq!(intake.len(), limit, "the refused byte is not counted");

    // A declared length over the limit is refused by `intake`, before any push.
    assert_eq!(
        verifier
            .intake([over.signature.as_bytes()], Some(over.body.len() as u64))
            .unwrap_err(),
        Error::BodyTooLarge { limit }
    );
    assert!(
        verifier
            .intake([at.signature.as_bytes()], Some(at.body.len() as u64))
            .is_ok()
    );
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
    let mut intake = verifier
        .intake([d.signature.as_bytes()], None)
        .expect("headers");
    intake.push(d.body.clone()).expect("fits");
    let intake_debug = format!("{intake:?}");
    assert!(!intake_debug.contains(&d.signature[..8]), "{intake_debug}");
    assert!(!intake_debug.contains("TOPSECRET"), "{intake_debug}");
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
