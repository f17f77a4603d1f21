//! Identity: an Entra-like token issuer and the bearer validation of the ingestion endpoint.
//!
//! - [`keys`]: the issuer's RSA signing keys (persisted, rotated, published as JWKS).
//! - [`issuer`]: OpenID configuration, JWKS, instance discovery and the token endpoints.
//! - [`assertion`]: client assertions signed with an app's registered certificate.
//! - [`bearer`]: access token validation on the ingestion endpoint (and legacy Basic).
//! - [`consent`]: the admin consent page.
//! - [`errors`]: Entra's error answers.
pub mod credentials;

pub mod assertion;
pub mod bearer;
pub mod consent;
pub mod errors;
pub mod issuer;
pub mod keys;

pub use bearer::{authenticate, AuthError};
pub use issuer::routes;
