//! Protocol types: what a SOAP request said, before any business validation.
//!
//! These mirror the EWS schema loosely and keep values as the client sent them (strings),
//! except where the schema itself fixes a type (base64Binary is decoded, xs:dateTime is parsed
//! because a non-date there is a schema error in EWS). Business rules (mandatory properties,
//! message class, routing) live in `crate::ingest`, not here.

use chrono::{DateTime, Utc};

/// A parsed SOAP request: the header fields we use and the operation in `soap:Body`.
#[derive(Debug, Clone, PartialEq)]
pub struct EwsRequest {
    pub header: SoapHeader,
    pub operation: Operation,
}

/// The SOAP header fields EWS clients send that matter to us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoapHeader {
    /// `t:RequestServerVersion/@Version`, e.g. `Exchange2016`.
    pub request_server_version: Option<String>,
    /// `t:ExchangeImpersonation/t:ConnectingSID/(PrimarySmtpAddress|SmtpAddress|PrincipalName)`
    /// (a `t:SID` names no user of this directory, which has no SIDs: ignored).
    pub impersonated: Option<String>,
}

/// The operation: the first child element of `soap:Body`, dispatched by local name.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    CreateItem(CreateItem),
    GetFolder(GetFolder),
    /// `ConvertId`, with how many ids `m:SourceIds` lists (each gets its own error message).
    ConvertId {
        source_ids: usize,
    },
    CreateAttachment(CreateAttachment),
    /// Any other operation in the messages namespace: answered with an EWS error.
    Unsupported(String),
}

impl Operation {
    /// How many response messages the answer has: one per item, folder, id or attachment
    /// asked about, at least one. EWS clients read one message per element they sent (the
    /// Managed API fails on a missing one), so an error answered to the whole request is
    /// repeated that many times.
    pub fn response_messages(&self) -> usize {
        let asked = match self {
            Operation::CreateItem(create) => create.items.len(),
            Operation::GetFolder(get) => get.folders.len(),
            Operation::ConvertId { source_ids } => *source_ids,
            Operation::CreateAttachment(create) => create.attachments.len(),
            Operation::Unsupported(_) => 1,
        };
        asked.max(1)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateItem {
    /// `@MessageDisposition` as sent (`SaveOnly`, `SendOnly`, `SendAndSaveCopy`).
    pub message_disposition: Option<String>,
    /// `m:SavedItemFolderId`, if any.
    pub saved_item_folder: Option<FolderRef>,
    /// The `t:Message` children of `m:Items`, in request order.
    pub items: Vec<Message>,
}

/// A folder reference: distinguished (`inbox`, `root`, ...) or by `FolderId/@Id`.
#[derive(Debug, Clone, PartialEq)]
pub enum FolderRef {
    Distinguished { id: String, mailbox: Option<String> },
    Id(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetFolder {
    pub folders: Vec<FolderRef>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateAttachment {
    /// `m:ParentItemId/@Id`.
    pub parent_item_id: String,
    pub attachments: Vec<FileAttachment>,
}

/// One `t:Message` as sent. Every field optional: mandatory-ness is a business rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// Decoded bytes of `t:MimeContent` (base64 in the request) and its `@CharacterSet`.
    pub mime_content: Option<MimeContent>,
    pub item_class: Option<String>,
    pub subject: Option<String>,
    pub body: Option<Body>,
    pub from: Option<Mailbox>,
    pub sender: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub date_time_sent: Option<DateTime<Utc>>,
    pub date_time_created: Option<DateTime<Utc>>,
    pub internet_message_id: Option<String>,
    pub extended_properties: Vec<ExtendedProperty>,
    pub attachments: Vec<FileAttachment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MimeContent {
    pub character_set: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Text,
    Html,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub body_type: BodyType,
    pub text: String,
}

/// `t:Mailbox` (or `t:From/t:Mailbox` ...): name and SMTP address as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub email_address: Option<String>,
    pub routing_type: Option<String>,
}

/// `t:ExtendedProperty` with its `t:ExtendedFieldURI` attributes and value(s).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtendedProperty {
    /// `@PropertyTag` parsed from hex (`0x1a`, `0x0E07`) or decimal (`57`).
    pub property_tag: Option<u32>,
    pub property_name: Option<String>,
    pub property_id: Option<i64>,
    pub property_set_id: Option<String>,
    pub distinguished_property_set_id: Option<String>,
    /// `@PropertyType`, e.g. `String`, `SystemTime`, `Integer`, `Boolean`.
    pub property_type: String,
    /// `t:Value` text, or each `t:Values/t:Value` for multi-valued types.
    pub values: Vec<String>,
}

/// `t:FileAttachment` with its content decoded from base64.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileAttachment {
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub content_id: Option<String>,
    pub is_inline: bool,
    pub content: Vec<u8>,
}
