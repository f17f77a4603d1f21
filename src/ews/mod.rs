//! EWS SOAP: the only module that knows the wire XML.
//!
//! - [`types`]: what a request said (the contract with the rest of the crate).
//! - [`parse`]: one-pass, namespace-aware, hardened SOAP request parser.
//! - [`reply`]: SOAP response writers (CreateItem, CreateAttachment, GetFolder, faults, ...).
//! - [`mime`]: RFC 5322/MIME parsing of `t:MimeContent`.
pub mod mime;
pub mod parse;
pub mod reply;
pub mod types;

pub use mime::{parse_mime, MimeError, MimeMessage};
pub use parse::{parse_request, ParseError, Position};
pub use reply::{AttachmentResult, FolderInfo, FolderResult, ItemResult};
pub use types::*;

/// SOAP 1.1 envelope namespace.
pub const NS_SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const NS_SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// EWS messages namespace (`m:`).
pub const NS_MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
/// EWS types namespace (`t:`).
pub const NS_TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
/// EWS errors namespace (`e:`), used in SOAP fault details.
pub const NS_ERRORS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";
