//! Identity: an Entra-like token issuer and the bearer validation of the ingestion endpoint.
pub mod credentials;
pub mod errors;
pub mod keys;
