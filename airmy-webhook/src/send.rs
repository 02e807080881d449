//! `send` and `sign`: a signed delivery, retried the way AIRMY retries.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use airmy_verify::testing;
use airmy_verify::text::redact_url;
use airmy_verify::time::OffsetDateTime;
use bytes::Bytes;
use serde_json::Value;

use crate::cli::{DELAYS, SendArgs, SignArgs};

fn check_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        Err("the secret is empty: pass --secret or set AIRMY_WEBHOOK_SECRET".into())
    } else {
        Ok(())
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(bytes)
        }
    }
}

pub(crate) fn sign(args: &SignArgs) -> Result<ExitCode, String> {
    check_secret(&args.secret)?;
    let bytes = read_input(args.file.as_ref())?;
    out!("{}", airmy_verify::sign(&bytes, &args.secret));
    Ok(ExitCode::SUCCESS)
}

/// `url` as it may be printed: any user name and password replaced by `[redacted]`.
fn shown_url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let _ = shown.set_username("[redacted]");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The first 200 characters of a response body, as one line of plain text: at most 4 KiB is
/// read (a huge body is not kept), and control characters (a newline, an escape sequence)
/// become spaces, so that a receiver's answer cannot forge a line of this tool's output.
async fn shown_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < 4096 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A fresh event id, `evt_` and 20 hex digits (the suite's one random-token generator).
fn random_id() -> String {
    format!("evt_{}", airmy_verify::token::random_hex(10))
}

/// The generated event's `data`: `--data` or the sample's for `--type`, with each `--set`
/// applied in turn.
fn event_data(args: &SendArgs) -> Result<Value, String> {
    let mut data = match &args.data {
        None => testing::sample_data(&args.event_type),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(data @ Value::Object(_)) => data,
            Ok(_) => return Err("--data must be a JSON object, such as {\"id\":\"run_7\"}".into()),
            Err(e) => return Err(format!("--data is not JSON: {e}")),
        },
    };
    for assignment in &args.set {
        set(&mut data, assignment).map_err(|why| format!("--set {assignment:?}: {why}"))?;
    }
    Ok(data)
}

/// The most keys a `--set` PATH may have below `data`.
const MAX_SET_DEPTH: usize = 64;

/// Applies one `--set PATH=VALUE` to `data`: PATH is `data.` and object keys separated by dots;
/// VALUE is JSON when it parses as JSON, otherwise a string.
fn set(data: &mut Value, assignment: &str) -> Result<(), String> {
    let (path, value) = assignment
        .split_once('=')
        .ok_or("must be PATH=VALUE, such as data.id=run_7")?;
    let keys = path
        .strip_prefix("data.")
        .ok_or("PATH must start with data. (--id and --type set the envelope's fields)")?;
    let keys: Vec<&str> = keys.split('.').collect();
    if keys.iter().any(|key| key.is_empty()) {
        return Err("PATH has an empty key".into());
    }
    // Deeper than any receiver parses (JSON parsers stop at about 128 levels), and deep enough
    // to exhaust the stack when the body is written.
    if keys.len() > MAX_SET_DEPTH {
        return Err(format!("PATH is deeper than {MAX_SET_DEPTH} keys"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
    let (last, parents) = keys.split_last().ok_or("PATH has no key")?;
    let mut object = data;
    for (depth, key) in parents.iter().enumerate() {
        let Value::Object(map) = object else {
            return Err(format!("data.{} is not an object", keys[..depth].join(".")));
        };
        object = map
            .entry(*key)
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    match object {
        Value::Object(map) => {
            map.insert((*last).to_owned(), value);
            Ok(())
        }
        _ => Err(format!("data.{} is not an object", parents.join("."))),
    }
}

pub(crate) fn send(args: SendArgs) -> Result<ExitCode, String> {
    check_secret(&args.secret)?;
    let url = reqwest::Url::parse(&args.url)
        .map_err(|e| format!("invalid --url {:?}: {e}", redact_url(&args.url)))?;
    // Shown without its user and password (they are still sent, as Basic authentication).
    let shown = shown_url(&url);
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid --url {shown:?}: only http and https are supported"
        ));
    }
    // Every wait and the timeout must be representable as a `Duration`: 1e20 s or a scale
    // of 1e300 is a usage error, not a panic.
    let waits: Vec<Duration> = DELAYS
        .iter()
        .map(|delay| {
            (args.backoff_scale >= 0.0)
                .then(|| Duration::try_from_secs_f64(delay.as_secs_f64() * args.backoff_scale).ok())
                .flatten()
        })
        .collect::<Option<_>>()
        .ok_or("--backoff-scale must be a number of at least 0, small enough for the waits to fit in a duration")?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or("--timeout must be a positive number of seconds that fits in a duration")?;
    let body = match &args.file {
        Some(path) => Bytes::from(read_input(Some(path))?),
        None => testing::sample_event(&args.event_type)
            .id(args.id.clone().unwrap_or_else(random_id))
            .created_at(OffsetDateTime::now_utc())
            .data(event_data(&args)?)
            .body(),
    };
    let signature = airmy_verify::sign(&body, &args.secret);
    let attempts = if args.no_retry { 1 } else { args.attempts };
    // A redirect is not an acknowledgement (AIRMY follows none): a 3xx is reported as it is.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    out!(
        "POST {shown} ({} bytes, X-AIRMY-Signature {}…)",
        body.len(),
        &signature[..8]
    );
    runtime.block_on(async {
        for attempt in 1..=attempts {
            let started = Instant::now();
            let result = client
                .post(url.clone())
                .header("content-type", "application/json")
                .header("x-airmy-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let took = started.elapsed();
            let outcome = match result {
                Ok(response) => {
                    let status = response.status();
                    let text = shown_body(response).await;
                    if status.is_success() {
                        out!(
                            "attempt {attempt}/{attempts}: {status} in {} ms: acknowledged {text}",
                            took.as_millis()
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    format!("{status} in {} ms {text}", took.as_millis())
                }
                Err(err) if err.is_timeout() => {
                    format!("timed out after {:.1} s", took.as_secs_f64())
                }
                Err(err) if err.is_connect() => format!(
                    "connection failed ({}) after {} ms",
                    root_cause(&err),
                    took.as_millis()
                ),
                Err(err) => format!(
                    "failed ({}) after {} ms",
                    root_cause(&err),
                    took.as_millis()
                ),
            };
            if attempt < attempts {
                let wait = waits[(attempt - 1) as usize];
                out!(
                    "attempt {attempt}/{attempts}: {outcome}; retrying in {:.2} s",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            } else {
                out!("attempt {attempt}/{attempts}: {outcome}");
            }
        }
        out!("not acknowledged after {attempts} attempt(s)");
        Ok(ExitCode::FAILURE)
    })
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_deeper_than_the_limit_is_refused_not_a_crash() {
        let mut data = serde_json::json!({});
        let deep = format!("data.{}=1", vec!["a"; 20_000].join("."));
        let err = set(&mut data, &deep).expect_err("too deep");
        assert!(err.contains("deeper than 64 keys"), "{err}");
        let ok = format!("data.{}=1", vec!["a"; MAX_SET_DEPTH].join("."));
        set(&mut data, &ok).expect("at the limit");
    }
}
