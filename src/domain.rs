//! Domain types: a validated item and where it goes. Free of wire (XML/JSON) and storage concerns.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The largest item the service accepts, attachments included (Purview's documented 10 MB).
pub const MAX_ITEM_BYTES: usize = 10 * 1024 * 1024;

/// The longest retention of a tenant: a hundred years. Beyond some 96 million days "now minus
/// the retention" is not a date, and the sweep could not compute its cutoff.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// A tenant, by its directory GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub Uuid);

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An application (client) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppId(pub Uuid);

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who made an authenticated request: the token's tenant and application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub app_id: AppId,
    pub roles: Vec<String>,
}

/// A participant of an item: display name and address as sent (an SMTP address, or an external
/// identity such as a Twitter handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub name: Option<String>,
    pub address: String,
}

/// The message class as sent (`IPM.NOTE.Twitter.Tweet`) and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageClass {
    pub as_sent: String,
    pub source: String,
    pub event: Option<String>,
}

impl MessageClass {
    /// The class Content Search sees: `IPM.ExternalData.<Source>[.<Event>]`.
    pub fn searched(&self) -> String {
        match &self.event {
            Some(event) => format!("IPM.ExternalData.{}.{}", self.source, event),
            None => format!("IPM.ExternalData.{}", self.source),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Text,
    Html,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub format: BodyFormat,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub is_inline: bool,
    pub content: Vec<u8>,
}

/// A MAPI extended property as sent, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedProperty {
    pub tag: Option<u32>,
    pub name: Option<String>,
    pub property_type: String,
    pub values: Vec<String>,
}

/// An item that passed validation: every mandatory property is present and well formed.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub class: MessageClass,
    pub subject: Option<String>,
    pub body: Option<Body>,
    pub from: Participant,
    pub sender: Option<Participant>,
    pub to: Vec<Participant>,
    pub cc: Vec<Participant>,
    pub bcc: Vec<Participant>,
    pub sent: DateTime<Utc>,
    pub created: Option<DateTime<Utc>>,
    pub internet_message_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub extended_properties: Vec<ExtendedProperty>,
    /// Whether the item came as `MimeContent`.
    pub from_mime: bool,
    /// Size in bytes as the service counts it (MIME or properties plus attachments).
    pub size: usize,
}

impl Item {
    /// FROM, SENDER, TO, CC, BCC in that order: everyone who took part.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        std::iter::once(&self.from)
            .chain(self.sender.iter())
            .chain(self.to.iter())
            .chain(self.cc.iter())
            .chain(self.bcc.iter())
    }
}

/// A folder of a mailbox, by path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Folder {
    /// `Recoverable Items/Purges`: where partner-imported items land for mapped users.
    Purges,
    /// `Inbox`: where items land in the third-party data mailbox.
    Inbox,
    /// `Inbox/<Source>`: where native connectors import.
    InboxSub(String),
}

impl Folder {
    pub const PURGES_PATH: &'static str = "Recoverable Items/Purges";

    pub fn path(&self) -> String {
        match self {
            Folder::Purges => Self::PURGES_PATH.to_string(),
            Folder::Inbox => "Inbox".to_string(),
            Folder::InboxSub(name) => format!("Inbox/{name}"),
        }
    }

    pub fn from_path(path: &str) -> Option<Folder> {
        let trimmed = path.trim_matches('/');
        if trimmed.eq_ignore_ascii_case(Self::PURGES_PATH) {
            Some(Folder::Purges)
        } else if trimmed.eq_ignore_ascii_case("Inbox") {
            Some(Folder::Inbox)
        } else {
            let (head, rest) = trimmed.split_once('/')?;
            (head.eq_ignore_ascii_case("Inbox") && !rest.is_empty())
                .then(|| Folder::InboxSub(rest.to_string()))
        }
    }
}

/// Where one copy of an item goes: a mailbox (by user principal name) and folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub mailbox: String,
    pub folder: Folder,
}
