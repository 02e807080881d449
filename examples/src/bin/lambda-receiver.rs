//! An AIRMY webhook receiver as an AWS Lambda function: every request of a function URL or an
//! API Gateway (REST or HTTP) event goes through `AirmyVerifyLayer` to the typed handler
//! ([`examples::hosts::lambda`]).
//!
//! ```text
//! cargo lambda build --release -p examples --bin lambda-receiver
//! cargo lambda deploy lambda-receiver --env-var AIRMY_WEBHOOK_SECRET=whsec_...
//! ```
//!
//! Reads `AIRMY_WEBHOOK_SECRET`, `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_TOLERANCE_SECS`,
//! `AIRMY_HANDLER_DELAY_MS` and `AIRMY_HANDLER_FAIL_FOR_SECS` as the other receivers do (the
//! `examples` crate docs); `AIRMY_INBOX` and `AIRMY_IDEMPOTENCY` exit 2 here (a function
//! accepts into a shared inbox and a worker elsewhere drains it: see the crate README).
//! Answers an accepted event (an unknown type too) with 200 and
//! `{"id":"<event id>","type":"<event type>"}`, a refused one with the core's status and body,
//! as the axum receiver does; logs go to standard error (CloudWatch).

use examples::apps::Handling;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = examples::config_or_exit();
    if config.inbox.is_some() || config.idempotency.is_some() {
        eprintln!("error: the Lambda receiver takes neither AIRMY_INBOX nor AIRMY_IDEMPOTENCY");
        std::process::exit(examples::EXIT_CONFIG);
    }
    examples::observe::init_logging(config.log_format);
    let handling = Handling::printing(config.handler_delay, config.handler_fail_for);
    examples::hosts::lambda::run(config.verifier, handling).await
}
