//! Parsing every event type, unknown types and fields, and the JSON round trip.

use airmy_verify::event::{
    AgentUpdated, AlertTriggered, DeploymentCreated, DeploymentRollback, EVENT_TYPES, Envelope,
    Event, PipelineCompleted, RunCompleted, RunFailed, TestEvent, UnknownEvent,
};
use airmy_verify::{Bytes, Error, testing};
use serde_json::{Value, json};

fn parse(body: &[u8]) -> Envelope<Event> {
    serde_json::from_slice(body).expect("parses")
}

fn round_trips(body: &[u8]) {
    let envelope = parse(body);
    let original: Value = serde_json::from_slice(body).expect("JSON");
    let again = serde_json::to_value(&envelope).expect("serializes");
    assert_eq!(again, original);
}

#[test]
fn parses_the_example_from_the_webhook_page() {
    let body = br#"{
      "id": "evt_01HXYZ",
      "type": "run.completed",
      "created_at": "2026-03-22T14:30:00Z",
      "data": {
        "id": "run_01HXYZ123",
        "agent_id": "ag_01HXYZ",
        "status": "completed",
        "output": { "result": "..." },
        "latency_ms": 48,
        "tokens_used": 1247
      }
    }"#;
    let envelope: Envelope<RunCompleted> = serde_json::from_slice(body).expect("parses");
    assert_eq!(envelope.id, "evt_01HXYZ");
    assert_eq!(envelope.created_at, testing::fixed_now());
    let run = &envelope.data;
    assert_eq!(run.id.as_deref(), Some("run_01HXYZ123"));
    assert_eq!(run.agent_id.as_deref(), Some("ag_01HXYZ"));
    assert_eq!(run.status.as_deref(), Some("completed"));
    assert_eq!(run.output, Some(json!({ "result": "..." })));
    assert_eq!(run.latency_ms, Some(48));
    assert_eq!(run.tokens_used, Some(1247));
    assert!(run.extra.is_empty());
    round_trips(body);
}

#[test]
fn parses_every_documented_type_into_its_variant() {
    for event_type in EVENT_TYPES {
        let body = testing::sample_event(event_type).body();
        let envelope = parse(&body);
        assert_eq!(envelope.event_type(), event_type);
        let matched = matches!(
            (&envelope.data, event_type),
            (Event::RunCompleted(_), "run.completed")
                | (Event::RunFailed(_), "run.failed")
                | (Event::DeploymentCreated(_), "deployment.created")
                | (Event::DeploymentRollback(_), "deployment.rollback")
                | (Event::AlertTriggered(_), "alert.triggered")
                | (Event::AgentUpdated(_), "agent.updated")
                | (Event::PipelineCompleted(_), "pipeline.completed")
                | (Event::Test(_), "test")
        );
        assert!(matched, "{event_type} parsed as {:?}", envelope.data);
        round_trips(&body);
    }
}

#[test]
fn types_the_documented_extras() {
    let failed = parse(&testing::sample_event("run.failed").body()).downcast::<RunFailed>();
    let failed = failed.expect("run.failed").data;
    assert_eq!(failed.error_message(), Some("the run timed out after 30 s"));
    assert_eq!(
        failed.error.as_ref().and_then(|e| e["code"].as_str()),
        Some("timeout")
    );

    let rollback = parse(&testing::sample_event("deployment.rollback").body())
        .downcast::<DeploymentRollback>()
        .expect("rollback")
        .data;
    assert_eq!(
        rollback.reason.as_deref(),
        Some("error rate above 5% for 10 minutes")
    );

    let alert = parse(&testing::sample_event("alert.triggered").body())
        .downcast::<AlertTriggered>()
        .expect("alert")
        .data;
    assert_eq!(
        alert.metric_snapshot.as_ref().map(|m| &m["value"]),
        Some(&json!(0.072))
    );

    let agent = parse(&testing::sample_event("agent.updated").body())
        .downcast::<AgentUpdated>()
        .expect("agent")
        .data;
    assert_eq!(
        agent.old.as_ref().map(|o| &o["model"]),
        Some(&json!("airmy-large-1"))
    );
    assert_eq!(
        agent.new.as_ref().map(|o| &o["model"]),
        Some(&json!("airmy-large-2"))
    );

    let pipeline = parse(&testing::sample_event("pipeline.completed").body())
        .downcast::<PipelineCompleted>()
        .expect("pipeline")
        .data;
    assert_eq!(pipeline.pipeline_id.as_deref(), Some("pl_01HXYZ"));
    assert_eq!(pipeline.latency_ms, Some(5120));

    let created = parse(&testing::sample_event("deployment.created").body())
        .downcast::<DeploymentCreated>()
        .expect("deployment")
        .data;
    assert_eq!(created.extra["version"], json!(7));
}

#[test]
fn run_failed_error_may_be_a_plain_string() {
    let body = testing::sample_event("run.failed")
        .data(json!({ "id": "run_1", "error": "out of memory" }))
        .body();
    let failed = parse(&body)
        .downcast::<RunFailed>()
        .expect("run.failed")
        .data;
    assert_eq!(failed.error_message(), Some("out of memory"));
}

#[test]
fn unknown_types_parse_and_keep_type_and_data() {
    let data = json!({ "nested": { "a": [1, 2, 3] }, "flag": true });
    let body = testing::sample_event("agent.deleted")
        .data(data.clone())
        .body();
    let envelope = parse(&body);
    assert_eq!(envelope.event_type(), "agent.deleted");
    assert_eq!(
        envelope.data,
        Event::Unknown(UnknownEvent::new("agent.deleted", data))
    );
    round_trips(&body);
    // Unknown types take any JSON as data, even a non-object.
    round_trips(
        &testing::sample_event("metric.sampled")
            .data(json!([1, "two", null]))
            .body(),
    );
}

#[test]
fn test_events_take_any_data() {
    for data in [
        json!({}),
        json!(null),
        json!("ping"),
        json!({ "id": "evt_x", "k": [1] }),
    ] {
        let body = testing::sample_event("test").data(data.clone()).body();
        let envelope = parse(&body);
        assert!(matches!(&envelope.data, Event::Test(TestEvent { data: d, .. }) if *d == data));
        round_trips(&body);
    }
}

#[test]
fn unknown_mistyped_and_null_fields_are_kept_losslessly() {
    let data = json!({
        "id": "run_1",
        "agent_id": null,
        "latency_ms": "48 ms",
        "tokens_used": -5,
        "status": 3,
        "output": null,
        "region": "eu-west-1",
        "nested": { "deep": [true, 1.5] }
    });
    let body = testing::sample_event("run.completed")
        .data(data.clone())
        .body();
    let run = parse(&body).downcast::<RunCompleted>().expect("run").data;
    assert_eq!(run.id.as_deref(), Some("run_1"));
    assert_eq!(run.agent_id, None);
    assert_eq!(run.latency_ms, None);
    assert_eq!(run.tokens_used, None);
    assert_eq!(run.status, None);
    assert_eq!(run.output, None);
    for key in [
        "agent_id",
        "latency_ms",
        "tokens_used",
        "status",
        "output",
        "region",
        "nested",
    ] {
        assert_eq!(run.extra[key], data[key], "{key}");
    }
    round_trips(&body);
}

#[test]
fn unknown_envelope_fields_and_any_key_order_are_accepted() {
    let body = br#"{"data":{"id":"run_1"},"api_version":"2026-03","type":"run.completed","created_at":"2026-03-22T14:30:00Z","id":"evt_1"}"#;
    let envelope = parse(body);
    assert_eq!(envelope.extra["api_version"], "2026-03");
    assert!(matches!(&envelope.data, Event::RunCompleted(r) if r.id.as_deref() == Some("run_1")));
    round_trips(body);
}

#[test]
fn accepts_rfc3339_offsets_and_fractions() {
    for (text, expected) in [
        ("2026-03-22T14:30:00Z", testing::fixed_now()),
        ("2026-03-22T16:30:00+02:00", testing::fixed_now()),
        (
            "2026-03-22T14:30:00.250Z",
            testing::fixed_now() + time::Duration::milliseconds(250),
        ),
        (
            "2026-03-22T09:30:00.000001-05:00",
            testing::fixed_now() + time::Duration::microseconds(1),
        ),
    ] {
        let body = format!(r#"{{"id":"e","type":"test","created_at":"{text}","data":{{}}}}"#);
        assert_eq!(parse(body.as_bytes()).created_at, expected, "{text}");
    }
}

#[test]
fn rejects_bodies_that_are_not_envelopes_with_precise_errors() {
    let verifier = airmy_verify::Verifier::builder(airmy_verify::Secret::new("s").expect("s"))
        .without_freshness_check()
        .build();
    let check = |body: &[u8]| {
        let signature = airmy_verify::sign(body, "s");
        let err = verifier
            .verify(&signature, Bytes::copy_from_slice(body))
            .and_then(|mut verified| verified.take_event::<Event>())
            .expect_err("rejected");
        // The same answer for the body in chunks of 3 bytes, without a declared length.
        let mut intake = verifier.intake([&signature], None).expect("headers");
        for part in body.chunks(3) {
            intake.push(Bytes::copy_from_slice(part)).expect("fits");
        }
        assert_eq!(intake.finish().map(|v| v.id().to_owned()), Err(err.clone()));
        err
    };
    let reason = |e: Error| match e {
        Error::InvalidEnvelope { reason, .. } => reason,
        other => panic!("expected InvalidEnvelope, got {other:?}"),
    };
    assert_eq!(
        reason(check(
            br#"{"type":"test","created_at":"2026-03-22T14:30:00Z","data":{}}"#
        )),
        "missing field `id`"
    );
    assert_eq!(
        reason(check(
            br#"{"id":"e","created_at":"2026-03-22T14:30:00Z","data":{}}"#
        )),
        "missing field `type`"
    );
    assert_eq!(
        reason(check(br#"{"id":"e","type":"test","data":{}}"#)),
        "missing field `created_at`"
    );
    assert_eq!(
        reason(check(
            br#"{"id":"e","type":"test","created_at":"2026-03-22T14:30:00Z"}"#
        )),
        "missing field `data`"
    );
    assert_eq!(
        reason(check(
            br#"{"id":"e","type":"test","created_at":"2026-03-22 14:30","data":{}}"#
        )),
        "`created_at` is not an RFC 3339 timestamp"
    );
    assert_eq!(
        reason(check(
            br#"{"id":"e","id":"f","type":"test","created_at":"2026-03-22T14:30:00Z","data":{}}"#
        )),
        "duplicate field `id`"
    );
    assert_eq!(
        reason(check(
            br#"{"id":7,"type":"test","created_at":"2026-03-22T14:30:00Z","data":{}}"#
        )),
        "invalid type: integer `7`, expected a string"
    );
    let secret_looking = check(br#"{"id":"e","type":"run.failed","created_at":"2026-03-22T14:30:00Z","data":"PRIVATE-TOKEN-123"}"#);
    assert_eq!(secret_looking.status(), 422);
    assert!(
        !secret_looking.to_string().contains("PRIVATE"),
        "{secret_looking}"
    );
    assert!(matches!(check(b"[]"), Error::InvalidEnvelope { .. }));
    assert!(matches!(check(b"\"str\""), Error::InvalidEnvelope { .. }));
    assert!(matches!(
        check(
            br#"{"id":"e","type":"test","created_at":"2026-03-22T14:30:00Z","data":{}} trailing"#
        ),
        Error::InvalidJson { .. }
    ));
    assert!(matches!(check(b"   "), Error::InvalidJson { .. }));
}

#[test]
fn typed_envelopes_refuse_other_types() {
    let body = testing::sample_event("alert.triggered").body();
    let err = serde_json::from_slice::<Envelope<RunCompleted>>(&body).expect_err("wrong type");
    assert!(
        err.to_string()
            .contains("expected a `run.completed` event, got `alert.triggered`")
    );
    let err = parse(&body)
        .into_typed::<RunCompleted>()
        .expect_err("wrong type");
    assert_eq!(
        err,
        Error::UnexpectedEventType {
            event_id: "evt_test_alert_triggered".into(),
            expected: "run.completed",
            found: "alert.triggered".into()
        }
    );
    assert_eq!(err.status(), 422);
    assert!(parse(&body).into_typed::<AlertTriggered>().is_ok());
}

#[test]
fn typed_envelopes_serialize_with_their_type() {
    let envelope = Envelope::new("evt_9", testing::fixed_now(), RunCompleted::default());
    let value = serde_json::to_value(&envelope).expect("serializes");
    assert_eq!(
        value,
        json!({ "id": "evt_9", "type": "run.completed", "created_at": "2026-03-22T14:30:00Z", "data": {} })
    );
    assert_eq!(envelope.clone().into_event().event_type(), "run.completed");
}
