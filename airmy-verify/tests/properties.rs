//! Property tests over untrusted input: arbitrary bodies, header values and JSON never panic,
//! `verify(sign(x))` always holds, any change to the body or signature is rejected, every
//! path through the verifier gives one body one verdict, and numbers survive a round trip.

use airmy_verify::event::EVENT_TYPES;
use airmy_verify::testing::{self, FixedClock};
use airmy_verify::{
    Bytes, DEFAULT_MAX_BODY_SIZE, Envelope, Error, Event, MalformedReason, Secret, Verified,
    Verifier, sign, verify,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

fn verifier(secret: &str) -> Verifier {
    Verifier::builder(Secret::new(secret).expect("non-empty"))
        .clock(FixedClock::default())
        .build()
}

/// Whether verification got past the signature: accepted, or refused only for the body's
/// content (not JSON, not an envelope, not fresh).
fn signature_accepted(result: &Result<Verified, Error>) -> bool {
    matches!(
        result,
        Ok(_)
            | Err(Error::InvalidJson { .. }
                | Error::InvalidEnvelope { .. }
                | Error::Stale { .. }
                | Error::FromFuture { .. })
    )
}

/// What the rules say of one header value: accepted, or malformed for this reason.
fn header_rule(value: &[u8]) -> Result<(), MalformedReason> {
    let value = value.trim_ascii();
    if value.is_empty() {
        Err(MalformedReason::Empty)
    } else if !value.is_ascii() {
        Err(MalformedReason::NotHex)
    } else if value.len() != 64 {
        Err(MalformedReason::WrongLength(value.len()))
    } else if value.iter().all(u8::is_ascii_hexdigit) {
        Ok(())
    } else {
        Err(MalformedReason::NotHex)
    }
}

/// A verdict in a form two paths can be compared by: the error, or the verified bytes, id,
/// type and event.
type Verdict = Result<(Bytes, String, String, Result<Envelope<Event>, Error>), Error>;

fn verdict(result: Result<Verified, Error>) -> Verdict {
    result.map(|mut verified| {
        let event = verified.take_event::<Event>();
        (
            verified.bytes().clone(),
            verified.id().to_owned(),
            verified.event_type().to_owned(),
            event,
        )
    })
}

/// The body through an `Intake`, split at `points` (sorted, repeated points give empty chunks).
fn through_intake(
    verifier: &Verifier,
    signature: &str,
    body: &Bytes,
    points: &[usize],
    declared: Option<u64>,
) -> Result<Verified, Error> {
    let mut intake = verifier.intake([signature], declared)?;
    for pair in points.windows(2) {
        intake.push(body.slice(pair[0]..pair[1]))?;
    }
    assert_eq!(intake.len(), body.len());
    intake.finish()
}

/// One change to a body: (kind, where, byte).
type Mutation = (u8, Index, u8);

fn apply(body: &mut Vec<u8>, (kind, at, byte): &Mutation) {
    let i = at.index(body.len() + 1);
    match kind % 5 {
        0 if i < body.len() => body[i] = *byte,
        1 => body.insert(i, *byte),
        2 if i < body.len() => {
            body.remove(i);
        }
        3 => body.truncate(i),
        4 if i < body.len() => body[i] ^= 1 << (byte % 8),
        _ => {}
    }
}

/// A byte that often changes what JSON means.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => proptest::sample::select(b"{}[]\",:0123456789eE.-+ \\nutfl".to_vec()),
        1 => any::<u8>(),
    ]
}

/// A body: a sample delivery of any type (or an unknown one), created up to 400 s either side
/// of the test clock, with its sample `data` or any JSON; or bytes. Changes come on top.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    let mut types: Vec<&'static str> = EVENT_TYPES.to_vec();
    types.push("agent.deleted");
    let data = prop_oneof![3 => Just(None), 1 => arb_json().prop_map(Some)];
    let sample = (proptest::sample::select(types), -400i64..400, data).prop_map(
        |(event_type, offset, data)| {
            let mut event = testing::sample_event(event_type)
                .created_at(testing::fixed_now() + time::Duration::seconds(offset));
            if let Some(data) = data {
                event = event.data(data);
            }
            event.body().to_vec()
        },
    );
    prop_oneof![
        4 => sample,
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => proptest::collection::vec(json_byte(), 0..64),
    ]
}

/// How a delivery is signed.
#[derive(Debug, Clone, Copy)]
enum Signer {
    Current,
    Previous,
    Wrong,
    /// With the current secret, before the body was changed.
    BeforeTheChanges,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_then_verify_always_holds(body in proptest::collection::vec(any::<u8>(), 0..4096), secret in ".{1,80}") {
        let header = sign(&body, &secret);
        prop_assert_eq!(header.len(), 64);
        prop_assert!(header.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert!(verify(&body, &header, &secret));
        let v = verifier(&secret);
        prop_assert!(body.len() <= v.max_body_size());
        let result = v.verify(&header, body.clone());
        prop_assert!(signature_accepted(&result), "{:?}", result);
        let other = verifier("whsec_another_secret");
        prop_assume!(secret != "whsec_another_secret");
        prop_assert_eq!(other.verify(&header, body).unwrap_err(), Error::SignatureMismatch);
    }

    #[test]
    fn any_body_change_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<Index>(),
        bit in 0u8..8,
        secret in ".{1,40}",
    ) {
        let header = sign(&body, &secret);
        let mut changed = body.clone();
        changed[index.index(body.len())] ^= 1 << bit;
        prop_assert!(!verify(&changed, &header, &secret));
        let mut longer = body.clone();
        longer.push(0);
        prop_assert!(!verify(&longer, &header, &secret));
        prop_assert!(!verify(&body[..body.len() - 1], &header, &secret));
        let v = verifier(&secret);
        prop_assert_eq!(v.verify(&header, changed).unwrap_err(), Error::SignatureMismatch);
        prop_assert_eq!(v.verify(&header, longer).unwrap_err(), Error::SignatureMismatch);
    }

    #[test]
    fn any_signature_change_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        index in 0usize..64,
        replacement in "[0-9a-f]",
    ) {
        let header = sign(&body, "whsec_prop");
        prop_assume!(header[index..=index] != *replacement);
        let mut changed = header.clone();
        changed.replace_range(index..=index, &replacement);
        prop_assert!(!verify(&body, &changed, "whsec_prop"));
        prop_assert_eq!(
            verifier("whsec_prop").verify(&changed, body).unwrap_err(),
            Error::SignatureMismatch
        );
    }

    #[test]
    fn arbitrary_header_bytes_never_panic(
        values in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..100),
                "[ \t]{0,2}[0-9a-fA-F]{63,65}[ \t]{0,2}".prop_map(String::into_bytes),
            ],
            0..4,
        ),
        declared in proptest::option::of(0u64..=10),
    ) {
        let v = verifier("whsec_prop");
        let result = v.intake(&values, declared);
        match values.as_slice() {
            [] => prop_assert_eq!(result.unwrap_err(), Error::MissingSignature),
            [value] => match header_rule(value) {
                Err(reason) => prop_assert_eq!(result.unwrap_err(), Error::MalformedSignature(reason)),
                Ok(()) => {
                    // Only 64 hex digits (after trimming) open an intake, and they are checked
                    // as the bytes they stand for: case does not matter.
                    let mut intake = result.expect("well-formed");
                    intake.push(Bytes::from_static(b"{}")).expect("fits");
                    let own = sign(b"{}", "whsec_prop");
                    let matches = value.trim_ascii().eq_ignore_ascii_case(own.as_bytes());
                    let finished = intake.finish();
                    prop_assert_eq!(finished.as_ref().err() == Some(&Error::SignatureMismatch), !matches);
                    if matches {
                        let not_an_envelope = matches!(finished, Err(Error::InvalidEnvelope { .. }));
                        prop_assert!(not_an_envelope, "{:?}", finished);
                    }
                }
            },
            several => prop_assert_eq!(
                result.unwrap_err(),
                Error::MalformedSignature(MalformedReason::Repeated(several.len()))
            ),
        }
    }

    #[test]
    fn arbitrary_header_strings_never_panic(value in "\\PC{0,100}") {
        let v = verifier("whsec_prop");
        let expected = header_rule(value.as_bytes()).map_err(Error::MalformedSignature);
        prop_assert_eq!(v.intake([&value], None).map(|_| ()), expected);
        prop_assert!(!verify(b"body", &value, "whsec_prop") || value.trim_ascii() == sign(b"body", "whsec_prop"));
    }

    #[test]
    fn arbitrary_signed_bodies_never_panic_and_get_a_status(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let v = verifier(testing::SECRET);
        match v.verify(sign(&body, testing::SECRET), body).and_then(|mut v| v.take_event::<Event>()) {
            Ok(_) => {}
            Err(e) => prop_assert!([400, 401, 422].contains(&e.status()), "{}", e),
        }
    }

    #[test]
    fn an_intake_gives_back_any_split_body_or_refuses_it_at_the_limit(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            (0usize..2048).prop_map(|len| testing::sample_event("test").padded_to(len).body().to_vec()),
        ],
        cuts in proptest::collection::vec(any::<Index>(), 0..12),
        limit in 0usize..2048,
        declared in proptest::option::of(any::<u64>()),
    ) {
        let v = Verifier::builder(Secret::new(testing::SECRET).expect("secret"))
            .max_body_size(limit)
            .clock(FixedClock::default())
            .build();
        let signature = sign(&body, testing::SECRET);
        let opened = v.intake([&signature], declared);
        if declared.is_some_and(|n| n > limit as u64) {
            prop_assert_eq!(opened.unwrap_err(), Error::BodyTooLarge { limit });
            return Ok(());
        }
        let mut intake = opened.expect("headers");
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        points.push(0);
        points.push(body.len());
        points.sort_unstable();
        let mut refused = false;
        for pair in points.windows(2) {
            let chunk = Bytes::copy_from_slice(&body[pair[0]..pair[1]]);
            if let Err(err) = intake.push(chunk) {
                prop_assert_eq!(err, Error::BodyTooLarge { limit });
                prop_assert!(pair[1] > limit, "refused at {} of limit {}", pair[1], limit);
                prop_assert_eq!(intake.len(), pair[0], "the refused chunk is not counted");
                refused = true;
                break;
            }
            prop_assert!(intake.len() <= limit);
            prop_assert_eq!(intake.len(), pair[1]);
        }
        prop_assert_eq!(refused, body.len() > limit);
        if !refused {
            // The joined chunks hash to the signature of the whole body, so they are the body.
            let result = intake.finish();
            prop_assert!(signature_accepted(&result), "{:?}", result);
            if let Ok(verified) = result {
                prop_assert_eq!(&verified.bytes()[..], &body[..]);
            }
        }
    }

    /// One signed body, every path, one verdict: `Verifier::verify` and an `Intake` fed the
    /// body in arbitrary chunks (empty ones included), with or without a declared length.
    #[test]
    fn one_signed_body_every_path_one_verdict(
        base in arb_body(),
        mutations in proptest::collection::vec((any::<u8>(), any::<Index>(), json_byte()), 0..4),
        signer in prop_oneof![
            4 => Just(Signer::Current),
            1 => Just(Signer::Previous),
            1 => Just(Signer::Wrong),
            1 => Just(Signer::BeforeTheChanges),
        ],
        cuts in proptest::collection::vec(any::<Index>(), 0..10),
        declare in any::<bool>(),
        limit in prop_oneof![3 => Just(DEFAULT_MAX_BODY_SIZE), 1 => 0usize..400],
    ) {
        let verifier = Verifier::builder(Secret::new(testing::SECRET).expect("secret"))
            .previous_secret(Secret::new(testing::PREVIOUS_SECRET).expect("secret"))
            .max_body_size(limit)
            .clock(FixedClock::default())
            .build();
        let mut body = base.clone();
        for m in &mutations {
            apply(&mut body, m);
        }
        let signature = match signer {
            Signer::Current => sign(&body, testing::SECRET),
            Signer::Previous => sign(&body, testing::PREVIOUS_SECRET),
            Signer::Wrong => sign(&body, testing::WRONG_SECRET),
            Signer::BeforeTheChanges => sign(&base, testing::SECRET),
        };
        let body = Bytes::from(body);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        points.extend([0, body.len()]);
        points.sort_unstable();

        let direct = verdict(verifier.verify(&signature, body.clone()));
        let declared = declare.then_some(body.len() as u64);
        let chunked = verdict(through_intake(&verifier, &signature, &body, &points, declared));
        prop_assert_eq!(&chunked, &direct);
        let other = verdict(through_intake(&verifier, &signature, &body, &points, declared.xor(Some(body.len() as u64))));
        prop_assert_eq!(&other, &direct);

        // And the verdict is the right one.
        let forged = matches!(signer, Signer::Wrong)
            || (matches!(signer, Signer::BeforeTheChanges) && body[..] != base[..]);
        match &direct {
            Err(Error::BodyTooLarge { limit: l }) => prop_assert!(*l == limit && body.len() > limit),
            _ if body.len() > limit => {
                return Err(TestCaseError::fail(format!("over the limit: {direct:?}")));
            }
            Err(Error::SignatureMismatch) => prop_assert!(forged),
            _ if forged => {
                return Err(TestCaseError::fail(format!(
                    "a forged body got past the signature: {direct:?}"
                )));
            }
            Err(e) => prop_assert!([400, 401, 422].contains(&e.status()), "{:?}", e),
            Ok((bytes, id, event_type, event)) => {
                prop_assert_eq!(&bytes[..], &body[..]);
                let event = event.as_ref().expect("a verified body is an event");
                prop_assert_eq!(&event.id, id);
                prop_assert_eq!(event.event_type(), event_type.as_str());
                // The envelope handed over equals the one parsed again from the bytes.
                let mut verified = verifier.verify(&signature, body.clone()).expect("verified");
                let first = verified.take_event::<Event>().expect("event");
                prop_assert_eq!(&first, event);
                prop_assert_eq!(&verified.take_event::<Event>().expect("again"), event);
                prop_assert_eq!(&serde_json::from_slice::<Envelope<Event>>(&body).expect("parses"), event);
            }
        }
    }

    #[test]
    fn arbitrary_json_envelopes_parse_or_fail_cleanly(
        event_type in prop_oneof![
            Just("run.completed".to_owned()), Just("run.failed".to_owned()), Just("test".to_owned()),
            Just("alert.triggered".to_owned()), "[a-z.]{1,20}"
        ],
        data in arb_json(),
    ) {
        let body = testing::sample_event(&event_type).data(data).body();
        if let Ok(envelope) = serde_json::from_slice::<Envelope<Event>>(&body) {
            // Whatever parses serializes back to the same JSON value.
            let original: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            prop_assert_eq!(serde_json::to_value(&envelope).expect("serializes"), original);
        }
    }

    /// Numbers in an unknown event's `data` are a fixed point of parse → serialize → parse,
    /// and a float is the double nearest its digits.
    #[test]
    fn numbers_round_trip(numbers in proptest::collection::vec(arb_number(), 1..8)) {
        let data = format!(
            r#"{{"values":[{}],"first":{}}}"#,
            numbers.join(","),
            numbers[0]
        );
        let body = unknown_event(&data);
        let first: Envelope<Event> = serde_json::from_slice(body.as_bytes()).expect("parses");
        let Event::Unknown(unknown) = &first.data else {
            panic!("an unknown type: {:?}", first.data)
        };
        let values = unknown.data["values"].as_array().expect("values");
        prop_assert_eq!(values.len(), numbers.len());
        for (value, text) in values.iter().zip(&numbers) {
            if value.is_f64() {
                let nearest: f64 = text.parse().expect("a number");
                prop_assert_eq!(value.as_f64(), Some(nearest), "{}", text);
            } else {
                prop_assert_eq!(&value.to_string(), text);
            }
        }
        let bytes = serde_json::to_vec(&first).expect("serializes");
        let second: Envelope<Event> = serde_json::from_slice(&bytes).expect("parses again");
        prop_assert_eq!(&second, &first);
        prop_assert_eq!(serde_json::to_vec(&second).expect("serializes"), bytes);
        // The verifier parses the same way.
        let mut verified = testing::conformance_verifier()
            .verify(sign(body.as_bytes(), testing::SECRET), body.clone())
            .expect("verifies");
        prop_assert_eq!(verified.take_event::<Event>().expect("event"), first);
    }
}

/// An unknown event's body with `data` as given, created at the fixed test time.
fn unknown_event(data: &str) -> String {
    format!(
        r#"{{"id":"evt_numbers","type":"metric.sampled","created_at":"2026-03-22T14:30:00Z","data":{data}}}"#
    )
}

/// JSON number texts: any i64 or u64, any finite f64 written three ways, and long digit
/// strings (integers far past u64, long mantissas with exponents).
fn arb_number() -> impl Strategy<Value = String> {
    let finite = any::<f64>().prop_filter("finite", |f| f.is_finite());
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        finite.clone().prop_map(|f| format!("{f:?}")),
        finite.clone().prop_map(|f| format!("{f:e}")),
        // Written out in full: up to 309 integer digits, or 0.000…0 and up to 17 digits.
        finite.prop_map(|f| {
            let text = f.to_string();
            if text.contains('.') || text.contains('e') {
                text
            } else {
                format!("{text}.0")
            }
        }),
        (0usize..100).prop_map(|n| format!("2{}", "9".repeat(n))),
        "-?[1-9][0-9]{19,80}",
        "-?(0|[1-9][0-9]{0,29})\\.[0-9]{1,40}([eE][-+]?[0-9]{1,2})?",
    ]
}

#[test]
fn a_71_digit_integer_survives_parse_serialize_parse() {
    let digits = format!("2{}", "9".repeat(70));
    assert_eq!(digits.len(), 71);
    let body = unknown_event(&format!(
        r#"{{"big":{digits},"list":[{digits},-{digits}]}}"#
    ));
    let first: Envelope<Event> = serde_json::from_slice(body.as_bytes()).expect("parses");
    let Event::Unknown(unknown) = &first.data else {
        panic!("an unknown type: {:?}", first.data)
    };
    // Past u64, so a double: the one nearest the digits (3e70 is not exactly representable).
    let nearest: f64 = digits.parse().expect("a number");
    assert_eq!(unknown.data["big"].as_f64(), Some(nearest));
    assert_eq!(unknown.data["list"][1].as_f64(), Some(-nearest));
    let bytes = serde_json::to_vec(&first).expect("serializes");
    let second: Envelope<Event> = serde_json::from_slice(&bytes).expect("parses again");
    assert_eq!(second, first);
    assert_eq!(serde_json::to_vec(&second).expect("serializes"), bytes);
    let Event::Unknown(again) = &second.data else {
        panic!("an unknown type: {:?}", second.data)
    };
    assert_eq!(again.data["big"], Value::from(nearest));
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("latency_ms".to_owned()),
                    Just("error".to_owned()),
                    Just("status".to_owned()),
                    Just("output".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
