//! The durable inbox and the handlers dispatcher as route handlers (feature `inbox`).
//!
//! - [`accept`]: stores each verified delivery in the [`Inbox`] registered with
//!   `app_data(web::Data::new(inbox))` and answers at once: 200
//!   `{"status":"accepted","id":"…"}`, 200 `{"status":"duplicate","id":"…"}`, or 503
//!   `{"error":"inbox_unavailable"}` when it could not store it (AIRMY retries; never a 2xx for
//!   a delivery that is not stored). A worker handles the entries in the background.
//! - [`dispatch`]: runs the [`Handlers`] registered with `app_data(web::Data::new(handlers))`
//!   synchronously, for an application without an inbox: 200 `{"status":"handled","id":"…"}`,
//!   or 500 `{"error":"handler_failed"}`.
//!
//! Put them behind the [`AirmyVerify`](crate::AirmyVerify) middleware (or give the extractor a
//! verifier in `app_data`).
//!
//! # Example
//!
//! ```
//! use actix_web::{App, web};
//! use airmy_verify::{Secret, Verifier};
//! use airmy_verify_actix::{AirmyVerify, inbox};
//! use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("actix-inbox-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let store = Inbox::new(SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default())?);
//! let app = App::new().app_data(web::Data::new(store)).service(
//!     web::scope("/hooks")
//!         .wrap(AirmyVerify::new(verifier))
//!         .route("/airmy", web::post().to(inbox::accept)),
//! );
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use actix_web::{HttpResponse, ResponseError, web};
use airmy_verify::Error;
use airmy_verify_inbox::{Handlers, Inbox};

use crate::error::{AirmyError, answer_response};
use crate::extract::AirmyDelivery;

/// Stores the verified delivery in the inbox in `app_data`; see the [module docs](self).
pub async fn accept(
    inbox: Option<web::Data<Inbox>>,
    AirmyDelivery(verified): AirmyDelivery,
) -> HttpResponse {
    let Some(inbox) = inbox else {
        tracing::error!(target: "airmy_verify", "inbox::accept without an Inbox in app_data");
        return AirmyError::Verify(Error::NotConfigured).error_response();
    };
    answer_response(inbox.respond(&verified).await)
}

/// Runs the handlers in `app_data` on the verified delivery; see the [module docs](self).
pub async fn dispatch(
    handlers: Option<web::Data<Handlers>>,
    AirmyDelivery(verified): AirmyDelivery,
) -> HttpResponse {
    let Some(handlers) = handlers else {
        tracing::error!(target: "airmy_verify", "inbox::dispatch without Handlers in app_data");
        return AirmyError::Verify(Error::NotConfigured).error_response();
    };
    answer_response(handlers.respond(&verified).await)
}
