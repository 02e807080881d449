//! The verify layer on tower hosts other than axum: a plain hyper 1 server ([`hyper`]) and an
//! AWS Lambda function ([`lambda`]), with one typed handler, a `tower::service_fn`, that both
//! serve behind `AirmyVerifyLayer`.
//!
//! Behind the layer the inner service gets `http::Request<Full<Bytes>>`: the very bytes that
//! were verified, and the verified delivery ([`Verified`]) in the request extensions, where
//! axum's extractors read it. Without axum, [`envelope`] takes it from there as a typed
//! [`Envelope<T>`], as `AirmyEvent<T>` does.

pub mod hyper;
pub mod lambda;

use std::convert::Infallible;

use airmy_verify::{Envelope, Error, Event, EventData, Verified};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::apps::{Handling, Outage};

/// The typed event the layer verified, from the request extensions: `Envelope<Event>` for any
/// type (an unknown type is [`Event::Unknown`]), `Envelope<RunCompleted>` for one.
///
/// The first call takes the envelope the layer parsed; a second one parses the verified bytes
/// again.
///
/// # Errors
///
/// [`Error::NotConfigured`] when the layer is not in front of this service (an unverified
/// request must never reach a handler); [`Error::UnexpectedEventType`] when the delivery is of
/// another type than `T`.
pub fn envelope<T: EventData, B>(request: &mut Request<B>) -> Result<Envelope<T>, Error> {
    request
        .extensions_mut()
        .get_mut::<Verified>()
        .ok_or(Error::NotConfigured)?
        .take_event()
}

/// The receivers' handler as a tower service behind the layer: answers an accepted event with
/// 200 and `{"id":"<event id>","type":"<event type>"}` (an unknown type too), a handling that
/// fails with 500 `{"error":"handler_failed"}`, and a request the layer did not verify with
/// the core's answer (500 `{"error":"verifier_not_configured"}`), as the axum receiver does.
pub fn handler(
    handling: Handling,
    receiver: &'static str,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |mut request: Request<Full<Bytes>>| {
        let handling = handling.clone();
        async move {
            let event = match envelope::<Event, _>(&mut request) {
                Ok(event) => event,
                Err(err) => {
                    err.log();
                    return Ok(json(
                        err.status(),
                        Bytes::from_static(err.body().as_bytes()),
                    ));
                }
            };
            Ok(match handling.handle(receiver, &event).await {
                Ok(answer) => json(200, Bytes::from(answer.to_string())),
                Err(Outage) => json(500, Bytes::from_static(br#"{"error":"handler_failed"}"#)),
            })
        }
    })
}

/// A JSON response.
fn json(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
