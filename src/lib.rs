//! ingest-emulator: an emulator of the Microsoft 365 third-party data ingestion service.
//!
//! The request path, one module per step (see ARCHITECTURE.md):
//! `http` (thin hyper/axum layer) -> `identity` (bearer token) -> `ews` (SOAP parse/reply)
//! -> `ingest` (validate, route) -> `store` (sled, atomic and durable) -> `ews::reply`.

pub mod ews;
pub mod domain;
pub mod store;
pub mod fixture;
pub mod identity;
pub mod config;
pub mod tls;
pub mod app;
pub mod ingest;
// pub mod http;
// pub mod errors;
