//! What the load-benchmark servers share: the secret, the 1 KiB delivery they are sent, and the
//! hand-written secure handler's logic (the floor every adapter is compared with).

use std::path::Path;

use airmy_verify::event::RunCompleted;
use airmy_verify::testing;
use bytes::Bytes;
use hmac::Mac;
use hmac::digest::KeyInit;
use serde::Deserialize;

/// The signing secret of the benchmark servers.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// HMAC-SHA256, as the hand-written handler keys it.
pub type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What the hand-written and insecure handlers parse into: the same typed struct as ours.
#[derive(Debug, Deserialize)]
pub struct PlainEnvelope {
    /// The event id.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The creation time.
    #[serde(with = "airmy_verify::time::serde::rfc3339")]
    pub created_at: airmy_verify::time::OffsetDateTime,
    /// The run.
    pub data: RunCompleted,
}

impl PlainEnvelope {
    /// The body every router answers with.
    #[must_use]
    pub fn answer(&self) -> String {
        format!("{} {:?}", self.id, self.data.tokens_used)
    }
}

/// The pre-keyed HMAC of [`SECRET`].
///
/// # Panics
///
/// Never: HMAC takes keys of any length.
#[must_use]
pub fn key() -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("any key length")
}

/// The hand-written secure handler: hex header → pre-keyed HMAC `verify_slice` → serde parse.
///
/// # Errors
///
/// 401 for a missing or wrong signature, 400 for a body that does not parse.
pub fn handwritten(
    key: &HmacSha256,
    signature: Option<&[u8]>,
    body: &[u8],
) -> Result<PlainEnvelope, u16> {
    let tag = signature.and_then(|s| hex::decode(s).ok()).ok_or(401u16)?;
    key.clone()
        .chain_update(body)
        .verify_slice(&tag)
        .map_err(|_| 401u16)?;
    serde_json::from_slice(body).map_err(|_| 400u16)
}

/// A 1 KiB `run.completed` envelope created now (whole seconds, so its length is exact).
#[must_use]
pub fn body_of_1kib() -> Bytes {
    let now = airmy_verify::time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| testing::fixed_now());
    let build = |filler: usize| {
        let mut data = testing::sample_data("run.completed");
        data["output"]["result"] = "x".repeat(filler).into();
        testing::sample_event("run.completed")
            .created_at(now)
            .data(data)
            .body()
    };
    build(1024usize.saturating_sub(build(0).len()))
}

/// Writes `body.json` and `signature` (of a fresh 1 KiB delivery) into `dir` for wrk.
///
/// # Errors
///
/// When the files cannot be written.
pub fn write_delivery(dir: &Path) -> std::io::Result<()> {
    let body = body_of_1kib();
    std::fs::write(dir.join("body.json"), &body)?;
    std::fs::write(dir.join("signature"), airmy_verify::sign(&body, SECRET))
}
