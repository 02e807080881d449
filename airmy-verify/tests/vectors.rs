//! Known-answer tests against AIRMY's reference code (vectors/vectors.json, made by
//! vectors/generate.py from the page's Python and Node.js functions).

use airmy_verify::{Bytes, Error, Secret, Verified, Verifier, sign, verify};
use serde_json::Value;

struct Vector {
    name: String,
    payload: Vec<u8>,
    secret: String,
    signature: String,
}

fn vectors() -> Vec<Vector> {
    let doc: Value = serde_json::from_str(include_str!("vectors/vectors.json")).expect("JSON");
    assert!(
        doc["checked_by"]
            .as_array()
            .is_some_and(|a| a.contains(&"python".into()))
    );
    doc["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            let spec = &v["payload"];
            let payload = match spec["kind"].as_str() {
                Some("utf8") => spec["text"].as_str().expect("text").as_bytes().to_vec(),
                Some("pattern") => {
                    let len = spec["len"].as_u64().expect("len") as usize;
                    (0..len).map(|i| ((i * 31 + 7) % 256) as u8).collect()
                }
                other => panic!("unknown payload kind {other:?}"),
            };
            Vector {
                name: v["name"].as_str().expect("name").to_owned(),
                payload,
                secret: v["secret"].as_str().expect("secret").to_owned(),
                signature: v["signature"].as_str().expect("signature").to_owned(),
            }
        })
        .collect()
}

#[test]
fn the_vector_file_covers_the_required_inputs() {
    let vs = vectors();
    assert_eq!(vs.len(), 25);
    for name in [
        "empty",
        "ascii",
        "non_ascii_utf8",
        "binary_1mib",
        "envelope",
    ] {
        assert!(vs.iter().any(|v| v.name == name), "{name}");
    }
    assert!(vs.iter().any(|v| v.payload.len() == 1 << 20));
    assert!(vs.iter().any(|v| v.secret.starts_with("whsec_")));
    assert!(vs.iter().any(|v| !v.secret.starts_with("whsec_")));
    assert!(vs.iter().any(|v| !v.secret.is_ascii()));
}

#[test]
fn sign_matches_the_reference_code() {
    for v in vectors() {
        assert_eq!(
            sign(&v.payload, &v.secret),
            v.signature,
            "{} / {:?}",
            v.name,
            v.secret
        );
    }
}

#[test]
fn verify_accepts_the_reference_signatures() {
    for v in vectors() {
        assert!(verify(&v.payload, &v.signature, &v.secret), "{}", v.name);
        assert!(
            verify(&v.payload, &v.signature.to_uppercase(), &v.secret),
            "{}",
            v.name
        );
        let verifier = Verifier::builder(Secret::new(v.secret.as_str()).expect("secret"))
            .max_body_size(2 << 20)
            .without_freshness_check()
            .build();
        // The signature matches; what follows is about the payload, which is mostly not an
        // envelope.
        for header in [v.signature.clone(), v.signature.to_uppercase()] {
            let result = verifier.verify(&header, v.payload.clone());
            assert!(signature_accepted(&result), "{}: {result:?}", v.name);
            let mut intake = verifier
                .intake([&header], Some(v.payload.len() as u64))
                .expect("well-formed");
            for part in v.payload.chunks(4096) {
                intake
                    .push(Bytes::copy_from_slice(part))
                    .expect("within the limit");
            }
            let chunked = intake.finish();
            assert!(signature_accepted(&chunked), "{}: {chunked:?}", v.name);
            assert_eq!(
                chunked.map(|v| v.into_bytes()),
                result.map(|v| v.into_bytes()),
                "{}",
                v.name
            );
        }
        // Under another secret, the reference signature is refused.
        let other = Verifier::builder(Secret::new("whsec_other").expect("secret"))
            .max_body_size(2 << 20)
            .build();
        assert_eq!(
            other.verify(&v.signature, v.payload.clone()).unwrap_err(),
            Error::SignatureMismatch,
            "{}",
            v.name
        );
    }
}

/// Whether verification got past the signature: accepted, or refused only for the body's
/// content (not JSON, or not an envelope).
fn signature_accepted(result: &Result<Verified, Error>) -> bool {
    matches!(
        result,
        Ok(_) | Err(Error::InvalidJson { .. } | Error::InvalidEnvelope { .. })
    )
}

#[test]
fn verify_rejects_every_single_bit_flip_of_the_signature() {
    for v in vectors().iter().filter(|v| v.name == "envelope") {
        let raw = hex_bytes(&v.signature);
        for bit in 0..256 {
            let mut flipped = raw.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let header: String = flipped.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!verify(&v.payload, &header, &v.secret), "bit {bit}");
        }
    }
}

#[test]
fn verify_rejects_payload_mutations() {
    for v in vectors() {
        let n = v.payload.len();
        let mut positions = vec![0, n / 2, n.saturating_sub(1)];
        positions.dedup();
        for &i in positions.iter().filter(|&&i| i < n) {
            for bit in [0, 7] {
                let mut p = v.payload.clone();
                p[i] ^= 1 << bit;
                assert!(
                    !verify(&p, &v.signature, &v.secret),
                    "{} byte {i} bit {bit}",
                    v.name
                );
            }
        }
        let mut longer = v.payload.clone();
        longer.push(b' ');
        assert!(
            !verify(&longer, &v.signature, &v.secret),
            "{} + 1 byte",
            v.name
        );
        if n > 0 {
            assert!(
                !verify(&v.payload[..n - 1], &v.signature, &v.secret),
                "{} - 1 byte",
                v.name
            );
        }
    }
}

#[test]
fn verify_rejects_wrong_and_prefix_stripped_secrets() {
    for v in vectors() {
        let mut wrong = v.secret.clone();
        wrong.push('!');
        assert!(!verify(&v.payload, &v.signature, &wrong), "{}", v.name);
        if let Some(stripped) = v.secret.strip_prefix("whsec_") {
            assert!(!verify(&v.payload, &v.signature, stripped), "{}", v.name);
        }
    }
}

#[test]
fn verify_rejects_malformed_signatures_without_panicking() {
    let v = &vectors()[0];
    for bad in [
        String::new(),
        v.signature[..63].to_owned(),
        format!("{}0", v.signature),
        format!("sha256={}", v.signature),
        v.signature.replace('a', "g"),
        "é".repeat(32),
    ] {
        assert!(!verify(&v.payload, &bad, &v.secret), "{bad:?}");
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
