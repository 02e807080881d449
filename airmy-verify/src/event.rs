//! Typed AIRMY events: the [`Envelope`], the [`Event`] enum and one data struct per event type.
//!
//! Every delivery is an envelope `{id, type, created_at, data}`. [`Envelope<Event>`] holds any
//! event; `Envelope<RunCompleted>` (or any other data struct) holds one type only, which is
//! what typed extractors ask for through the [`EventData`] trait.
//!
//! Parsing never fails on what AIRMY may add later:
//! - an event type this crate does not know becomes [`Event::Unknown`] with its type string and
//!   raw `data`;
//! - a field a data struct does not know is kept in its `extra` map, and so is a known field
//!   whose JSON type is not the one documented (its typed field is then `None`), or which is
//!   `null`;
//! - unknown envelope fields are kept in [`Envelope::extra`].
//!
//! Serializing an envelope therefore gives back the same JSON value it was parsed from, except
//! that `created_at` is written in canonical RFC 3339 form (for example `.500` becomes `.5`).
//!
//! What fails: a body that is not a JSON object, a missing or duplicated `id`, `type`,
//! `created_at` or `data`, a `created_at` that is not RFC 3339, and `data` that is not an object
//! for one of the seven documented event types (`test` and unknown types take any JSON).
//!
//! # Example
//!
//! ```
//! use airmy_verify::event::{Envelope, Event, RunCompleted};
//!
//! let body = br#"{
//!   "id": "evt_01HXYZ", "type": "run.completed", "created_at": "2026-03-22T14:30:00Z",
//!   "data": {"id": "run_01HXYZ123", "agent_id": "ag_01HXYZ", "status": "completed",
//!            "output": {"result": "..."}, "latency_ms": 48, "tokens_used": 1247,
//!            "region": "eu-west-1"}
//! }"#;
//! let envelope: Envelope<Event> = serde_json::from_slice(body)?;
//! match &envelope.data {
//!     Event::RunCompleted(run) => {
//!         assert_eq!(run.latency_ms, Some(48));
//!         assert_eq!(run.extra["region"], "eu-west-1"); // unknown fields are kept
//!     }
//!     other => panic!("unexpected {}", other.event_type()),
//! }
//!
//! // Asking for one event type only:
//! let run: Envelope<RunCompleted> = envelope.into_typed()?;
//! assert_eq!(run.data.tokens_used, Some(1247));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::Error;

/// The event types AIRMY documents, in the order of its webhook page, then `test`.
pub const EVENT_TYPES: [&str; 8] = [
    RunCompleted::TYPE,
    RunFailed::TYPE,
    DeploymentCreated::TYPE,
    DeploymentRollback::TYPE,
    AlertTriggered::TYPE,
    AgentUpdated::TYPE,
    PipelineCompleted::TYPE,
    TestEvent::TYPE,
];

/// An AIRMY webhook delivery: the envelope around one event.
///
/// `T` is [`Event`] for any event, or one data struct (such as [`RunCompleted`]) for one type
/// only. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Envelope<T = Event> {
    /// The event id, such as `evt_01HXYZ`; the same for every retry of one delivery.
    pub id: String,
    /// When AIRMY created the event (signed, so it is what freshness is checked against).
    pub created_at: OffsetDateTime,
    /// The event and its `data`.
    pub data: T,
    /// Envelope fields other than `id`, `type`, `created_at` and `data`, kept as sent.
    pub extra: Map<String, Value>,
}

impl<T: EventData> Envelope<T> {
    /// An envelope with no extra fields, for building events in tests.
    #[must_use]
    pub fn new(id: impl Into<String>, created_at: OffsetDateTime, data: T) -> Self {
        Self {
            id: id.into(),
            created_at,
            data,
            extra: Map::new(),
        }
    }

    /// The event type, such as `run.completed`.
    #[must_use]
    pub fn event_type(&self) -> &str {
        self.data.event_type()
    }

    /// The same envelope holding the whole [`Event`] enum.
    #[must_use]
    pub fn into_event(self) -> Envelope<Event> {
        self.map(T::into_event)
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            id: self.id,
            created_at: self.created_at,
            data: f(self.data),
            extra: self.extra,
        }
    }
}

impl Envelope<Event> {
    /// Narrows to one event type, giving the envelope back unchanged when it is another type.
    ///
    /// # Errors
    ///
    /// The envelope itself, when its event is not a `T`.
    #[allow(
        clippy::result_large_err,
        reason = "the envelope is given back by value, unchanged, as `Err`"
    )]
    pub fn downcast<T: EventData>(self) -> Result<Envelope<T>, Self> {
        let Self {
            id,
            created_at,
            data,
            extra,
        } = self;
        match T::from_event(data) {
            Ok(data) => Ok(Envelope {
                id,
                created_at,
                data,
                extra,
            }),
            Err(data) => Err(Self {
                id,
                created_at,
                data,
                extra,
            }),
        }
    }

    /// Narrows to one event type.
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedEventType`] (HTTP 422) when the event is not a `T`.
    pub fn into_typed<T: EventData>(self) -> Result<Envelope<T>, Error> {
        self.downcast().map_err(|envelope| {
            Error::unexpected_type(
                &envelope.id,
                T::EXPECTED.unwrap_or("any"),
                envelope.event_type(),
            )
        })
    }
}

/// An event's data that an [`Envelope`] can hold: the whole [`Event`] enum or one data struct.
///
/// Typed extractors in the adapter crates take any `EventData`. You can implement it for a type
/// of your own, for example to give a type AIRMY adds later a struct before this crate does:
/// take it from [`Event::Unknown`] in `from_event`.
pub trait EventData: Sized {
    /// The one event type this payload holds, or `None` when it holds any (as [`Event`] does).
    const EXPECTED: Option<&'static str>;

    /// The event type of this value, such as `run.completed`.
    fn event_type(&self) -> &str;

    /// Takes the payload out of an event, or gives the event back when it is another type.
    ///
    /// # Errors
    ///
    /// The event itself, unchanged, when it is not of this payload's type.
    #[allow(
        clippy::result_large_err,
        reason = "the event is given back by value, unchanged, as `Err`"
    )]
    fn from_event(event: Event) -> Result<Self, Event>;

    /// Wraps the payload into the [`Event`] enum.
    fn into_event(self) -> Event;
}

/// Any AIRMY event: one variant per documented type, `test`, and [`Event::Unknown`] for types
/// added later.
///
/// Serializes as its `data` alone; the envelope writes the `type`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `run.completed`: an agent run finished successfully.
    RunCompleted(RunCompleted),
    /// `run.failed`: an agent run failed or timed out.
    RunFailed(RunFailed),
    /// `deployment.created`: a new deployment was created.
    DeploymentCreated(DeploymentCreated),
    /// `deployment.rollback`: a rollback was triggered.
    DeploymentRollback(DeploymentRollback),
    /// `alert.triggered`: a monitoring alert fired.
    AlertTriggered(AlertTriggered),
    /// `agent.updated`: an agent's configuration changed.
    AgentUpdated(AgentUpdated),
    /// `pipeline.completed`: a pipeline run finished.
    PipelineCompleted(PipelineCompleted),
    /// `test`: sent by "Send Test Event" or `airmy webhooks test`.
    Test(TestEvent),
    /// A type this version of the crate does not know; it parses instead of failing.
    Unknown(UnknownEvent),
}

impl Event {
    /// The event type, such as `run.completed`.
    #[must_use]
    pub fn event_type(&self) -> &str {
        match self {
            Self::Unknown(u) => &u.event_type,
            known => known.known_type().unwrap_or_default(),
        }
    }

    /// The type of one of the documented events, `None` for [`Event::Unknown`].
    pub(crate) fn known_type(&self) -> Option<&'static str> {
        Some(match self {
            Self::RunCompleted(_) => RunCompleted::TYPE,
            Self::RunFailed(_) => RunFailed::TYPE,
            Self::DeploymentCreated(_) => DeploymentCreated::TYPE,
            Self::DeploymentRollback(_) => DeploymentRollback::TYPE,
            Self::AlertTriggered(_) => AlertTriggered::TYPE,
            Self::AgentUpdated(_) => AgentUpdated::TYPE,
            Self::PipelineCompleted(_) => PipelineCompleted::TYPE,
            Self::Test(_) => TestEvent::TYPE,
            Self::Unknown(_) => return None,
        })
    }

    fn deserialize_data<'de, D: Deserializer<'de>>(
        event_type: &str,
        data: D,
    ) -> Result<Self, D::Error> {
        Ok(match event_type {
            RunCompleted::TYPE => Self::RunCompleted(Deserialize::deserialize(data)?),
            RunFailed::TYPE => Self::RunFailed(Deserialize::deserialize(data)?),
            DeploymentCreated::TYPE => Self::DeploymentCreated(Deserialize::deserialize(data)?),
            DeploymentRollback::TYPE => Self::DeploymentRollback(Deserialize::deserialize(data)?),
            AlertTriggered::TYPE => Self::AlertTriggered(Deserialize::deserialize(data)?),
            AgentUpdated::TYPE => Self::AgentUpdated(Deserialize::deserialize(data)?),
            PipelineCompleted::TYPE => Self::PipelineCompleted(Deserialize::deserialize(data)?),
            TestEvent::TYPE => Self::Test(Deserialize::deserialize(data)?),
            other => Self::Unknown(UnknownEvent {
                event_type: other.to_owned(),
                data: Value::deserialize(data)?,
            }),
        })
    }
}

impl EventData for Event {
    const EXPECTED: Option<&'static str> = None;

    fn event_type(&self) -> &str {
        Event::event_type(self)
    }

    fn from_event(event: Event) -> Result<Self, Event> {
        Ok(event)
    }

    fn into_event(self) -> Event {
        self
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::RunCompleted(d) => d.serialize(serializer),
            Self::RunFailed(d) => d.serialize(serializer),
            Self::DeploymentCreated(d) => d.serialize(serializer),
            Self::DeploymentRollback(d) => d.serialize(serializer),
            Self::AlertTriggered(d) => d.serialize(serializer),
            Self::AgentUpdated(d) => d.serialize(serializer),
            Self::PipelineCompleted(d) => d.serialize(serializer),
            Self::Test(d) => d.serialize(serializer),
            Self::Unknown(d) => d.data.serialize(serializer),
        }
    }
}

/// An event of a type this crate does not know yet, kept whole.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UnknownEvent {
    /// The `type` string as sent.
    pub event_type: String,
    /// The `data` value as sent.
    pub data: Value,
}

impl UnknownEvent {
    /// An unknown event, for tests.
    #[must_use]
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        Self {
            event_type: event_type.into(),
            data,
        }
    }
}

/// `test`: the event "Send Test Event" and `airmy webhooks test` deliver.
///
/// AIRMY only says it "uses the same schema as real events", so its `data` is kept as any JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
#[non_exhaustive]
pub struct TestEvent {
    /// The `data` value as sent.
    pub data: Value,
}

impl TestEvent {
    /// The event type: `test`.
    pub const TYPE: &'static str = "test";
}

impl EventData for TestEvent {
    const EXPECTED: Option<&'static str> = Some(Self::TYPE);

    fn event_type(&self) -> &str {
        Self::TYPE
    }

    fn from_event(event: Event) -> Result<Self, Event> {
        match event {
            Event::Test(t) => Ok(t),
            other => Err(other),
        }
    }

    fn into_event(self) -> Event {
        Event::Test(self)
    }
}

/// A JSON field type a data struct can hold; a value of another JSON type is kept in `extra`.
trait Field: Sized {
    fn from_json(value: Value) -> Result<Self, Value>;
}

impl Field for String {
    fn from_json(value: Value) -> Result<Self, Value> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(other),
        }
    }
}

impl Field for u64 {
    fn from_json(value: Value) -> Result<Self, Value> {
        value.as_u64().ok_or(value)
    }
}

impl Field for Value {
    fn from_json(value: Value) -> Result<Self, Value> {
        Ok(value)
    }
}

/// Defines a data struct whose fields are all optional, which keeps every other field (and any
/// field of an unexpected JSON type, or `null`) in `extra`, and which serializes back to the
/// same JSON value.
macro_rules! data_struct {
    (
        $(#[$meta:meta])*
        $name:ident, $variant:ident, $event_type:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        ///
        /// Every field is optional: AIRMY's page does not promise any of them. A field this
        /// struct does not know, or one whose JSON type is not the one named here, is kept in
        /// `extra` as sent.
        #[derive(Debug, Clone, Default, PartialEq)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            /// Every other field of `data`, kept as sent.
            pub extra: Map<String, Value>,
        }

        impl $name {
            #[doc = concat!("The event type: `", $event_type, "`.")]
            pub const TYPE: &'static str = $event_type;
        }

        impl EventData for $name {
            const EXPECTED: Option<&'static str> = Some(Self::TYPE);

            fn event_type(&self) -> &str {
                Self::TYPE
            }

            fn from_event(event: Event) -> Result<Self, Event> {
                match event {
                    Event::$variant(data) => Ok(data),
                    other => Err(other),
                }
            }

            fn into_event(self) -> Event {
                Event::$variant(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct DataVisitor;

                impl<'de> Visitor<'de> for DataVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a JSON object as the data of a ", $event_type, " event"))
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                            let value: Value = map.next_value()?;
                            match &*key {
                                $( stringify!($field) => {
                                    // A repeated key: the last one wins, as in `serde_json::Value`.
                                    out.extra.remove(stringify!($field));
                                    out.$field = None;
                                    let typed = if value.is_null() { Err(value) } else { Field::from_json(value) };
                                    match typed {
                                        Ok(v) => out.$field = Some(v),
                                        Err(v) => { out.extra.insert(key.into_owned(), v); }
                                    }
                                } )*
                                _ => { out.extra.insert(key.into_owned(), value); }
                            }
                        }
                        Ok(out)
                    }
                }

                deserializer.deserialize_map(DataVisitor)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let known = 0 $( + usize::from(self.$field.is_some()) )*;
                let mut map = serializer.serialize_map(Some(known + self.extra.len()))?;
                $( if let Some(v) = &self.$field {
                    map.serialize_entry(stringify!($field), v)?;
                } )*
                for (k, v) in &self.extra {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    };
}

data_struct! {
    /// `run.completed`: "Agent run finished successfully", with the full run object as `data`.
    RunCompleted, RunCompleted, "run.completed" {
        /// The run id, such as `run_01HXYZ123`.
        id: String,
        /// The agent that ran, such as `ag_01HXYZ`.
        agent_id: String,
        /// The run status, such as `completed`.
        status: String,
        /// The run's output, as sent.
        output: Value,
        /// How long the run took, in milliseconds.
        latency_ms: u64,
        /// How many tokens the run used.
        tokens_used: u64,
    }
}

data_struct! {
    /// `run.failed`: "Agent run failed or timed out", with the run object and error details.
    RunFailed, RunFailed, "run.failed" {
        /// The run id.
        id: String,
        /// The agent that ran.
        agent_id: String,
        /// The run status, such as `failed` or `timed_out`.
        status: String,
        /// The run's output, if any.
        output: Value,
        /// How long the run took, in milliseconds.
        latency_ms: u64,
        /// How many tokens the run used.
        tokens_used: u64,
        /// The error details, as sent (an object or a string); see
        /// [`RunFailed::error_message`].
        error: Value,
    }
}

impl RunFailed {
    /// The error message: `error` itself when it is a string, else its `message` field.
    #[must_use]
    pub fn error_message(&self) -> Option<&str> {
        match self.error.as_ref()? {
            Value::String(s) => Some(s),
            other => other.get("message")?.as_str(),
        }
    }
}

data_struct! {
    /// `deployment.created`: a new deployment was created; `data` is the deployment object.
    DeploymentCreated, DeploymentCreated, "deployment.created" {
        /// The deployment id.
        id: String,
        /// The agent deployed.
        agent_id: String,
        /// The deployment status.
        status: String,
    }
}

data_struct! {
    /// `deployment.rollback`: a rollback was triggered; the deployment object and a reason.
    DeploymentRollback, DeploymentRollback, "deployment.rollback" {
        /// The deployment id.
        id: String,
        /// The agent deployed.
        agent_id: String,
        /// The deployment status.
        status: String,
        /// Why the rollback was triggered.
        reason: String,
    }
}

data_struct! {
    /// `alert.triggered`: a monitoring alert fired; the alert and a metric snapshot.
    AlertTriggered, AlertTriggered, "alert.triggered" {
        /// The alert id.
        id: String,
        /// The agent the alert is about.
        agent_id: String,
        /// The alert status.
        status: String,
        /// The metric snapshot taken when the alert fired, as sent.
        metric_snapshot: Value,
    }
}

data_struct! {
    /// `agent.updated`: an agent's configuration changed; the diff, old and new.
    AgentUpdated, AgentUpdated, "agent.updated" {
        /// The agent id.
        id: String,
        /// The configuration before the change, as sent.
        old: Value,
        /// The configuration after the change, as sent.
        new: Value,
    }
}

data_struct! {
    /// `pipeline.completed`: a pipeline run finished; `data` is the pipeline run object.
    PipelineCompleted, PipelineCompleted, "pipeline.completed" {
        /// The pipeline run id.
        id: String,
        /// The pipeline that ran.
        pipeline_id: String,
        /// The pipeline run status.
        status: String,
        /// How long the pipeline run took, in milliseconds.
        latency_ms: u64,
    }
}

/// A JSON string borrowed from the input where it can be (no escapes), owned otherwise.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// How the envelope parser treats `data`: parse it by type, or skip it.
pub(crate) trait DataKind: Sized {
    /// Whether `data` can only be parsed once `type` is known.
    const NEEDS_TYPE: bool;

    fn parse<'de, D: Deserializer<'de>>(event_type: &str, data: D) -> Result<Self, D::Error>;
}

impl DataKind for Event {
    const NEEDS_TYPE: bool = true;

    fn parse<'de, D: Deserializer<'de>>(event_type: &str, data: D) -> Result<Self, D::Error> {
        Event::deserialize_data(event_type, data)
    }
}

struct DataSeed<'a, K>(&'a str, PhantomData<K>);

impl<'de, K: DataKind> DeserializeSeed<'de> for DataSeed<'_, K> {
    type Value = K;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<K, D::Error> {
        K::parse(self.0, deserializer)
    }
}

/// An envelope as parsed, before `data` is narrowed to a [`EventData`].
#[derive(Debug)]
pub(crate) struct Parsed<K> {
    pub(crate) id: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) data: K,
    pub(crate) extra: Map<String, Value>,
}

impl<K: DataKind> Parsed<K> {
    /// Parses an envelope from a body in one pass when `type` comes before `data` (as AIRMY
    /// sends it), buffering `data` as raw JSON otherwise.
    ///
    /// A body that fails as an envelope is checked once more as plain JSON, so that one that
    /// is not JSON at all (truncated, say) is reported as such whatever the envelope parser
    /// met first: every body gets one classification. That second pass runs only on failure.
    pub(crate) fn from_slice(body: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(body).map_err(|err| {
            // The second pass builds a `Value`, which checks what skipping over `data` would
            // not (nesting depth, number ranges), wherever `data` sits in the body.
            match serde_json::from_slice::<Value>(body) {
                Err(syntax) if err.classify() == serde_json::error::Category::Data => {
                    Error::from_json(&syntax)
                }
                _ => Error::from_json(&err),
            }
        })
    }
}

impl Parsed<Event> {
    pub(crate) fn into_envelope(self) -> Envelope<Event> {
        Envelope {
            id: self.id,
            created_at: self.created_at,
            data: self.data,
            extra: self.extra,
        }
    }
}

impl<'de, K: DataKind> Deserialize<'de> for Parsed<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<K>(PhantomData<K>);

impl<'de, K: DataKind> Visitor<'de> for EnvelopeVisitor<K> {
    type Value = Parsed<K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AIRMY event envelope {id, type, created_at, data}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<K>, A::Error> {
        let mut id: Option<String> = None;
        let mut event_type: Option<Cow<'de, str>> = None;
        let mut created_at: Option<OffsetDateTime> = None;
        let mut data: Option<K> = None;
        let mut raw_data: Option<Box<RawValue>> = None;
        let mut extra = Map::new();

        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match &*key {
                "id" => {
                    if id.is_some() {
                        return Err(de::Error::duplicate_field("id"));
                    }
                    id = Some(map.next_value()?);
                }
                "type" => {
                    if event_type.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    event_type = Some(map.next_value::<Text<'de>>()?.0);
                }
                "created_at" => {
                    if created_at.is_some() {
                        return Err(de::Error::duplicate_field("created_at"));
                    }
                    let Text(text) = map.next_value::<Text<'de>>()?;
                    let parsed = OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| {
                        de::Error::custom("`created_at` is not an RFC 3339 timestamp")
                    })?;
                    created_at = Some(parsed);
                }
                "data" => {
                    if data.is_some() || raw_data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    match (&event_type, K::NEEDS_TYPE) {
                        (Some(t), _) => data = Some(map.next_value_seed(DataSeed(t, PhantomData))?),
                        (None, false) => {
                            data = Some(map.next_value_seed(DataSeed("", PhantomData))?)
                        }
                        (None, true) => raw_data = Some(map.next_value()?),
                    }
                }
                _ => {
                    let value: Value = map.next_value()?;
                    extra.insert(key.into_owned(), value);
                }
            }
        }

        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let event_type = event_type.ok_or_else(|| de::Error::missing_field("type"))?;
        let created_at = created_at.ok_or_else(|| de::Error::missing_field("created_at"))?;
        let data = match (data, raw_data) {
            (Some(data), _) => data,
            (None, Some(raw)) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                K::parse(&event_type, &mut de).map_err(de::Error::custom)?
            }
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        Ok(Parsed {
            id,
            created_at,
            data,
            extra,
        })
    }
}

impl<'de, T: EventData> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Parsed::<Event>::deserialize(deserializer)?
            .into_envelope()
            .downcast()
            .map_err(|other| {
                de::Error::custom(format_args!(
                    "expected a `{}` event, got `{}`",
                    T::EXPECTED.unwrap_or("any"),
                    other.event_type()
                ))
            })
    }
}

impl<T: EventData + Serialize> Serialize for Envelope<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let created_at = self
            .created_at
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        let mut map = serializer.serialize_map(Some(4 + self.extra.len()))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("type", self.data.event_type())?;
        map.serialize_entry("created_at", &created_at)?;
        map.serialize_entry("data", &self.data)?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}
