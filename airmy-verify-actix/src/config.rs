//! Where the extractors find their [`Verifier`]: `app_data`, as `Verifier` or
//! `web::Data<Verifier>` (the way actix-web's `JsonConfig` is found).
//!
//! # Example
//!
//! ```
//! use actix_web::{App, web};
//! use airmy_verify::{Secret, Verifier};
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app = App::new().app_data(verifier.clone());           // or:
//! let app = App::new().app_data(web::Data::new(verifier));
//! # Ok(())
//! # }
//! ```

use actix_web::{HttpRequest, web};
use airmy_verify::{Error, Verifier};

use crate::error::AirmyError;

/// The verifier registered in `app_data`, looked up as `Verifier`, then `web::Data<Verifier>`.
///
/// # Errors
///
/// [`Error::NotConfigured`] when neither is registered.
pub(crate) fn verifier_from_req(req: &HttpRequest) -> Result<Verifier, AirmyError> {
    req.app_data::<Verifier>()
        .cloned()
        .or_else(|| {
            req.app_data::<web::Data<Verifier>>()
                .map(|d| d.get_ref().clone())
        })
        .ok_or(AirmyError::Verify(Error::NotConfigured))
}
