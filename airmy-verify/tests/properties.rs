//! Property tests over untrusted input: arbitrary bodies, header values and JSON never panic,
//! `verify(sign(x))` always holds, and any change to the body or signature is rejected.

use airmy_verify::testing::{self, FixedClock};
use airmy_verify::{Envelope, Event, Secret, Signature, Verifier, sign, verify};
use proptest::prelude::*;

fn verifier(secret: &str) -> Verifier {
    Verifier::builder(Secret::new(secret).expect("non-empty"))
        .clock(FixedClock::default())
        .build()
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
        let sig = Signature::parse(&header).expect("own signature parses");
        if body.len() <= v.max_body_size() {
            prop_assert_eq!(v.verify_signature(&sig, &body), Ok(()));
        }
    }

    #[test]
    fn any_body_change_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
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
    }

    #[test]
    fn arbitrary_header_bytes_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..4)) {
        let v = verifier("whsec_prop");
        let result = v.check_headers(values.iter().map(Vec::as_slice), Some(10));
        if values.len() != 1 {
            prop_assert!(result.is_err());
        }
        if let Ok(sig) = result {
            // Only 64 hex digits (after trimming) can parse.
            let trimmed = values[0].trim_ascii();
            prop_assert_eq!(trimmed.len(), 64);
            prop_assert!(trimmed.iter().all(u8::is_ascii_hexdigit));
            let own = Signature::parse(&sign(b"{}", "whsec_prop")).expect("own");
            prop_assert_eq!(v.verify_signature(&sig, b"{}").is_ok(), sig == own);
        }
    }

    #[test]
    fn arbitrary_header_strings_never_panic(value in "\\PC{0,100}") {
        let parsed = Signature::parse(&value);
        prop_assert_eq!(parsed.is_ok(), value.trim_ascii().len() == 64 && value.trim_ascii().bytes().all(|b| b.is_ascii_hexdigit()));
        prop_assert!(!verify(b"body", &value, "whsec_prop") || value.trim_ascii() == sign(b"body", "whsec_prop"));
    }

    #[test]
    fn arbitrary_signed_bodies_never_panic_and_get_a_status(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let v = verifier(testing::SECRET);
        let sig = Signature::parse(&sign(&body, testing::SECRET)).expect("own");
        match v.verify_event::<Event>(&sig, &body) {
            Ok(_) => {}
            Err(e) => prop_assert!([400, 401, 422].contains(&e.status()), "{}", e),
        }
    }

    #[test]
    fn body_buffer_gives_back_any_split_body_or_refuses_it_at_the_limit(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        limit in 0usize..2048,
        declared in proptest::option::of(any::<u64>()),
    ) {
        let v = Verifier::builder(Secret::new(testing::SECRET).expect("secret")).max_body_size(limit).build();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        points.push(0);
        points.push(body.len());
        points.sort_unstable();
        let mut buffer = v.body_buffer(declared);
        let mut refused = false;
        for pair in points.windows(2) {
            let chunk = airmy_verify::Bytes::copy_from_slice(&body[pair[0]..pair[1]]);
            if let Err(err) = buffer.push(chunk) {
                prop_assert_eq!(err.status(), 413);
                prop_assert!(pair[1] > limit, "refused at {} of limit {}", pair[1], limit);
                refused = true;
                break;
            }
            prop_assert!(buffer.len() <= limit);
        }
        prop_assert_eq!(refused, body.len() > limit);
        if !refused {
            prop_assert_eq!(&buffer.finish()[..], &body[..]);
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
