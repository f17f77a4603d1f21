//! ingest-emulator: an emulator of the Microsoft 365 third-party data ingestion service.
//!
//! The request path, one module per step (see ARCHITECTURE.md):
//! `http` (thin hyper/axum layer) -> `identity` (bearer token) -> `ews` (SOAP parse/reply)
//! -> `ingest` (validate, route) -> `store` (sled, atomic and durable) -> `ews::reply`.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod dashboard;
pub mod domain;
pub mod ephemeral;
pub mod errors;
pub mod ews;
pub mod export;
pub mod faults;
pub mod fixture;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod search;
pub mod store;
pub mod task;
pub mod tls;
