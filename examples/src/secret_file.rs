//! The receivers' secrets: `AIRMY_WEBHOOK_SECRET` (and `AIRMY_WEBHOOK_SECRET_PREVIOUS`), or a
//! secret file, `AIRMY_WEBHOOK_SECRET_FILE`, read at start, again on `SIGHUP`, and whenever
//! its content changes (polled twice a second, by path, so a file replaced by a rename, as
//! Kubernetes does with a mounted secret, is seen too). The file's format is the core's
//! ([`Secrets`]): the first secret line is current, the others previous ones; blank lines and
//! `#` lines are ignored.
//!
//! A file that becomes unreadable or holds no secret later keeps the secrets in use and logs
//! an error: a broken rotation never turns into "every delivery refused" or "accepted".

use std::path::{Path, PathBuf};
use std::time::Duration;

use airmy_verify::secret::Secrets;
use airmy_verify::{Secret, Verifier, VerifierBuilder};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::ConfigError;

/// How often the secret file is read to see whether it changed.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// A verifier builder with the secrets the environment names, and the secret file to watch,
/// if the secrets come from one.
///
/// # Errors
///
/// A missing or empty secret; `AIRMY_WEBHOOK_SECRET_FILE` together with
/// `AIRMY_WEBHOOK_SECRET` or `AIRMY_WEBHOOK_SECRET_PREVIOUS`; a secret file that cannot be
/// read or holds no secret.
pub fn builder_from_lookup(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(VerifierBuilder, Option<PathBuf>), ConfigError> {
    let file = lookup("AIRMY_WEBHOOK_SECRET_FILE").filter(|s| !s.is_empty());
    if let Some(file) = file {
        for other in ["AIRMY_WEBHOOK_SECRET", "AIRMY_WEBHOOK_SECRET_PREVIOUS"] {
            if lookup(other).is_some() {
                return Err(ConfigError(format!(
                    "AIRMY_WEBHOOK_SECRET_FILE and {other} cannot both be set: the file lists \
                     the current secret first, then the previous ones"
                )));
            }
        }
        let path = PathBuf::from(file);
        let secrets = read_at_start(&path)?;
        let (current, previous) = secrets.into_parts();
        let builder = previous
            .into_iter()
            .fold(Verifier::builder(current), VerifierBuilder::previous_secret);
        return Ok((builder, Some(path)));
    }
    let secret = lookup("AIRMY_WEBHOOK_SECRET").unwrap_or_default();
    let secret = Secret::new(secret).map_err(|_| {
        ConfigError(
            "AIRMY_WEBHOOK_SECRET is missing or empty: set it to the webhook's signing \
             secret, exactly as configured in AIRMY (whsec_... included), or name a file \
             holding it in AIRMY_WEBHOOK_SECRET_FILE"
                .to_owned(),
        )
    })?;
    let mut builder = Verifier::builder(secret);
    if let Some(previous) = lookup("AIRMY_WEBHOOK_SECRET_PREVIOUS").filter(|s| !s.is_empty()) {
        builder = builder.previous_secret(
            Secret::new(previous)
                .map_err(|_| ConfigError("AIRMY_WEBHOOK_SECRET_PREVIOUS is empty".to_owned()))?,
        );
    }
    Ok((builder, None))
}

/// The first read, on a thread of its own, for at most [`READ_TIMEOUT`] (a FIFO or a hung
/// mount must not keep the receiver from exiting 2).
fn read_at_start(path: &Path) -> Result<Secrets, ConfigError> {
    let (done, answer) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || {
        let _ = done.send(Secrets::read_file(&owned));
    });
    match answer.recv_timeout(READ_TIMEOUT) {
        Ok(Ok(secrets)) => Ok(secrets),
        Ok(Err(err)) => Err(ConfigError(format!("AIRMY_WEBHOOK_SECRET_FILE: {err}"))),
        Err(_) => Err(ConfigError(format!(
            "AIRMY_WEBHOOK_SECRET_FILE: reading {} took over 5 s",
            path.display()
        ))),
    }
}

/// What the watcher last saw in the file: the digest of a content it read (never the content
/// itself), or the error it logged.
#[derive(PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Error(String),
}

/// How long one read of the secret file may take (a hung network mount, a FIFO) before it is
/// reported; the read goes on in a thread of its own and no other starts until it ends.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Watches the secret file at `path` for `verifier`: on `SIGHUP` and whenever the file's
/// content changes, its secrets replace the verifier's; a file that cannot be read or holds no
/// secret keeps the secrets in use and logs an error (once per change). Call it from within
/// the runtime, before announcing readiness: `SIGHUP` is handled from this call on.
///
/// Each look reads the file once, on a blocking thread (never on the runtime's workers: a read
/// that hangs must not stop the receiver), and parses exactly the bytes it hashed.
///
/// # Errors
///
/// When the `SIGHUP` handler cannot be installed.
pub fn watch(path: PathBuf, verifier: Verifier) -> std::io::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // The content read at start, which the verifier holds.
    let mut seen = read(&path).ok().map(|(digest, _)| Seen::Content(digest));
    Ok(tokio::spawn(async move {
        let mut reading: Option<tokio::task::JoinHandle<Look>> = None;
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = hangups.recv() => true,
                () = tokio::time::sleep(POLL_EVERY) => false,
            };
            #[cfg(not(unix))]
            let forced = {
                tokio::time::sleep(POLL_EVERY).await;
                false
            };
            let mut job = match reading.take() {
                // The previous read has not ended (it was reported): wait for it, not another.
                Some(job) if !job.is_finished() => {
                    reading = Some(job);
                    continue;
                }
                Some(job) => job,
                None => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || read(&path))
                }
            };
            match tokio::time::timeout(READ_TIMEOUT, &mut job).await {
                Ok(Ok(look)) => apply(&path, &verifier, &mut seen, forced, look),
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::error!(
                        target: "airmy_receiver",
                        path = %path.display(),
                        "reading the secret file takes over 5 s (a hung mount?); keeping the secrets in use"
                    );
                    reading = Some(job);
                }
            }
        }
    }))
}

/// One read of the file: the digest of its bytes, and the secrets parsed from those bytes.
type Look = std::io::Result<([u8; 32], Result<Secrets, String>)>;

fn read(path: &Path) -> Look {
    let mut bytes = airmy_verify::secret::read_secret_file(path)
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let digest = Sha256::digest(&bytes).into();
    let secrets = Secrets::parse_file_bytes(&bytes, path).map_err(|err| err.to_string());
    bytes.zeroize();
    Ok((digest, secrets))
}

/// Replaces the verifier's secrets when the file's content changed (or when `forced`, on
/// `SIGHUP`); logs an error once per change when it cannot be used.
fn apply(path: &Path, verifier: &Verifier, seen: &mut Option<Seen>, forced: bool, look: Look) {
    let (now, result) = match look {
        Ok((digest, secrets)) => (Seen::Content(digest), secrets),
        Err(err) => {
            let why = err.to_string();
            (Seen::Error(why.clone()), Err(why))
        }
    };
    if !forced && seen.as_ref() == Some(&now) {
        return;
    }
    match result {
        Ok(secrets) => {
            let count = secrets.len();
            verifier.set_secrets(secrets);
            tracing::info!(
                target: "airmy_receiver",
                path = %path.display(),
                secrets = count,
                on_sighup = forced,
                "secrets reloaded from the secret file"
            );
            *seen = Some(now);
        }
        Err(err) => {
            let state = Seen::Error(err.clone());
            if forced || seen.as_ref() != Some(&state) {
                tracing::error!(
                    target: "airmy_receiver",
                    path = %path.display(),
                    error = %err,
                    "the secret file cannot be used; keeping the secrets in use"
                );
            }
            *seen = Some(state);
        }
    }
}

/// Without a secret file, `SIGHUP` (a `systemctl reload`, a rotation tool) must not stop the
/// receiver, as the signal's default would: it is logged, and changes nothing.
///
/// # Errors
///
/// When the handler cannot be installed.
pub fn ignore_hangups() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!(
                    target: "airmy_receiver",
                    "SIGHUP: nothing to reload (the secrets come from the environment)"
                );
            }
        });
    }
    Ok(())
}
