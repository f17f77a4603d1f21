//! What a native connector's provider (Veritas Merge1) delivers into the staging area: JSON
//! items with the documented properties and an `Email` list of participants, or `.eml` files.
//!
//! A delivery is checked when it is staged (a malformed one is refused whole, nothing staged);
//! what can only be judged at import time (participants that map to nobody, items over 10 MB,
//! attachments the source could not supply) becomes a failed or partially imported item then.

use base64::Engine;
use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::{Attachment, Body, BodyFormat, Item, MessageClass, Participant};
use crate::ews::mime::parse_mime;
use crate::ews::types::{BodyType, Mailbox};
use crate::store::connectors::StagedPayload;

/// Why a delivery cannot be staged (answered 400 by the admin API).
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("item {index}: {message}")]
    Json { index: usize, message: String },
    #[error("the .eml file is not an RFC 5322 message: {0}")]
    Eml(String),
    #[error("the .eml file has no From, To, Cc or Bcc address: nobody to import it for")]
    EmlWithoutParticipants,
    #[error("the staged item could not be read: {0}")]
    Stored(String),
}

/// A JSON item as Merge1 delivers it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonItem {
    /// The item's id at the source (used to skip duplicates).
    #[serde(alias = "Id", alias = "sourceId")]
    id: Option<String>,
    #[serde(alias = "From")]
    from: JsonAddress,
    #[serde(default, alias = "To")]
    to: Vec<JsonAddress>,
    #[serde(default, alias = "Cc")]
    cc: Vec<JsonAddress>,
    #[serde(alias = "Subject")]
    subject: Option<String>,
    #[serde(alias = "Body")]
    body: Option<String>,
    #[serde(alias = "BodyType")]
    body_type: Option<String>,
    /// When the message was sent at the source.
    #[serde(alias = "Date")]
    date: DateTime<Utc>,
    /// The participants: each is mapped to a user (the `Email` property).
    #[serde(alias = "Email")]
    email: Vec<String>,
    #[serde(default, alias = "Attachments")]
    attachments: Vec<JsonAttachment>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonAddress {
    Bare(String),
    Named {
        name: Option<String>,
        address: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonAttachment {
    name: String,
    content_type: Option<String>,
    /// Missing when the source could not supply the file: the item is then imported without
    /// it (partially imported).
    content_base64: Option<String>,
}

/// A staged item read for an import.
#[derive(Debug)]
pub struct NativeItem {
    pub item: Item,
    /// The participants as the source names them (the `Email` property), deduplicated.
    pub participants: Vec<String>,
    pub source_id: Option<String>,
    /// The source id, or the content hash without one: what duplicates are recognised by.
    pub dedup_key: Vec<u8>,
    /// Attachments the source could not supply (the item is partially imported).
    pub dropped_attachments: Vec<String>,
}

/// Splits a JSON delivery (one item or an array) into items, each checked. All or nothing.
pub fn check_json(value: serde_json::Value) -> Result<Vec<serde_json::Value>, StagingError> {
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    for (index, item) in items.iter().enumerate() {
        // The same conversion the import will do, minus the message class.
        from_json(item, "Check").map_err(|message| StagingError::Json { index, message })?;
    }
    Ok(items)
}

/// Checks an `.eml` delivery.
pub fn check_eml(bytes: &[u8]) -> Result<(), StagingError> {
    from_eml(bytes, "Check").map(|_| ())
}

/// Reads a staged item for an import by a connector of source `source`.
pub fn read(source: &str, payload: &StagedPayload) -> Result<NativeItem, StagingError> {
    match payload {
        StagedPayload::Json { item } => from_json(item, source).map_err(StagingError::Stored),
        StagedPayload::Eml { base64 } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| StagingError::Stored(e.to_string()))?;
            from_eml(&bytes, source)
        }
    }
}

/// The message class of a native source's items: `IPM.NOTE.<Source>` (letters and digits of
/// the documented name), searched as `IPM.ExternalData.<Source>`.
pub fn message_class(source: &str) -> MessageClass {
    let token: String = source.chars().filter(char::is_ascii_alphanumeric).collect();
    MessageClass {
        as_sent: format!("IPM.NOTE.{token}"),
        source: token,
        event: None,
    }
}

fn dedup_key(source_id: Option<&str>, content: &[u8]) -> Vec<u8> {
    match source_id {
        Some(id) => [b"id:".as_slice(), id.as_bytes()].concat(),
        None => [b"sha256:".as_slice(), Sha256::digest(content).as_slice()].concat(),
    }
}

/// The addresses in order, without blanks and repeats (compared case-insensitively), in
/// linear time: a delivery may name millions.
fn participants(addresses: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for address in addresses {
        let address = address.trim().to_string();
        if !address.is_empty() && seen.insert(address.to_ascii_lowercase()) {
            out.push(address);
        }
    }
    out
}

fn from_json(value: &serde_json::Value, source: &str) -> Result<NativeItem, String> {
    let json: JsonItem = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let address = |a: &JsonAddress| match a {
        JsonAddress::Bare(address) => Participant {
            name: None,
            address: address.trim().to_string(),
        },
        JsonAddress::Named { name, address } => Participant {
            name: name.clone(),
            address: address.trim().to_string(),
        },
    };
    let from = address(&json.from);
    if from.address.is_empty() {
        return Err("property 'from' is empty".into());
    }
    let participants = participants(json.email.iter().cloned());
    if participants.is_empty() {
        return Err("property 'email' (the participants) is empty: nobody to import it for".into());
    }
    // As EWS dates: four-digit years (an export writes the date into an RFC 5322 header).
    if !(1..=9999).contains(&json.date.year()) {
        return Err(format!(
            "property 'date' ({}) is out of range: years 0001 to 9999",
            json.date.to_rfc3339()
        ));
    }
    let format = match json.body_type.as_deref() {
        None => BodyFormat::Text,
        Some(t) if t.eq_ignore_ascii_case("text") => BodyFormat::Text,
        Some(t) if t.eq_ignore_ascii_case("html") => BodyFormat::Html,
        Some(t) => return Err(format!("invalid bodyType '{t}': Text or HTML")),
    };
    let mut attachments = Vec::new();
    let mut dropped = Vec::new();
    for a in &json.attachments {
        match &a.content_base64 {
            Some(content) => attachments.push(Attachment {
                name: a.name.clone(),
                content_type: a
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                content_id: None,
                is_inline: false,
                content: base64::engine::general_purpose::STANDARD
                    .decode(content.trim())
                    .map_err(|e| format!("attachment '{}': invalid base64 ({e})", a.name))?,
            }),
            None => dropped.push(a.name.clone()),
        }
    }
    let to: Vec<Participant> = json.to.iter().map(address).collect();
    let cc: Vec<Participant> = json.cc.iter().map(address).collect();
    let body = json.body.map(|content| Body { format, content });
    let size = json.subject.as_ref().map_or(0, String::len)
        + body.as_ref().map_or(0, |b| b.content.len())
        + std::iter::once(&from)
            .chain(&to)
            .chain(&cc)
            .map(|p| p.address.len() + p.name.as_ref().map_or(0, String::len))
            .sum::<usize>()
        + attachments.iter().map(|a| a.content.len()).sum::<usize>();
    let content = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    Ok(NativeItem {
        item: Item {
            class: message_class(source),
            subject: json.subject,
            body,
            from,
            sender: None,
            to,
            cc,
            bcc: Vec::new(),
            sent: json.date,
            created: None,
            internet_message_id: None,
            attachments,
            extended_properties: Vec::new(),
            from_mime: false,
            size,
        },
        participants,
        dedup_key: dedup_key(json.id.as_deref(), &content),
        source_id: json.id,
        dropped_attachments: dropped,
    })
}

fn from_eml(bytes: &[u8], source: &str) -> Result<NativeItem, StagingError> {
    let mime = parse_mime(bytes).map_err(|e| StagingError::Eml(e.to_string()))?;
    let participant = |m: &Mailbox| Participant {
        name: m.name.clone(),
        address: m.email_address.clone().unwrap_or_default(),
    };
    let everyone: Vec<String> = mime
        .from
        .iter()
        .chain(&mime.to)
        .chain(&mime.cc)
        .chain(&mime.bcc)
        .filter_map(|m| m.email_address.clone())
        .collect();
    let participants = participants(everyone);
    if participants.is_empty() {
        return Err(StagingError::EmlWithoutParticipants);
    }
    let from = mime
        .from
        .as_ref()
        .map(participant)
        .filter(|p| !p.address.is_empty())
        .ok_or_else(|| StagingError::Eml("it has no From address".into()))?;
    let source_id = mime
        .message_id
        .clone()
        .map(|id| id.trim().trim_matches(['<', '>']).to_string())
        .filter(|id| !id.is_empty());
    Ok(NativeItem {
        item: Item {
            class: message_class(source),
            subject: mime.subject.clone(),
            body: mime.body.as_ref().map(|b| Body {
                format: match b.body_type {
                    BodyType::Html => BodyFormat::Html,
                    BodyType::Text => BodyFormat::Text,
                },
                content: b.text.clone(),
            }),
            from,
            sender: mime.sender.as_ref().map(participant),
            to: mime.to.iter().map(participant).collect(),
            cc: mime.cc.iter().map(participant).collect(),
            bcc: mime.bcc.iter().map(participant).collect(),
            sent: mime.date.unwrap_or_else(Utc::now),
            created: None,
            internet_message_id: mime.message_id.clone(),
            attachments: mime
                .attachments
                .iter()
                .map(|a| Attachment {
                    name: a.name.clone().unwrap_or_else(|| "attachment".into()),
                    content_type: a
                        .content_type
                        .clone()
                        .unwrap_or_else(|| "application/octet-stream".into()),
                    content_id: a.content_id.clone(),
                    is_inline: a.is_inline,
                    content: a.content.clone(),
                })
                .collect(),
            extended_properties: Vec::new(),
            from_mime: true,
            size: bytes.len(),
        },
        participants,
        dedup_key: dedup_key(source_id.as_deref(), bytes),
        source_id,
        dropped_attachments: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Participants are deduplicated in linear time: 200,000 distinct addresses (a
    /// quadratic scan took minutes), repeats in any case dropped, order kept.
    #[test]
    fn many_participants_are_deduplicated_in_order() {
        let addresses: Vec<String> = (0..200_000)
            .flat_map(|n| [format!("user{n}@x.example"), format!("USER{n}@X.example")])
            .collect();
        let out = participants(addresses);
        assert_eq!(out.len(), 200_000);
        assert_eq!(out[1], "user1@x.example");
        assert_eq!(
            participants(vec![" ".into(), "b@x".into(), "a@x".into(), "B@X".into()]),
            ["b@x", "a@x"]
        );
    }

    #[test]
    fn dates_outside_four_digit_years_are_refused() {
        for date in ["+12345-01-01T00:00:00Z", "-0001-01-01T00:00:00Z"] {
            let item = json!({"from": "a@x.example", "date": date, "email": ["a@x.example"]});
            let e = check_json(item).expect_err(date).to_string();
            assert!(e.contains("out of range"), "{date}: {e}");
        }
    }

    #[test]
    fn json_items_are_checked_whole() {
        let good = json!({"id": "m1", "from": "a@x.example", "date": "2026-01-02T03:04:05Z",
            "email": ["a@x.example", "A@X.example", "b@y.example"], "subject": "s"});
        let items = check_json(json!([good.clone(), good.clone()])).expect("valid");
        assert_eq!(items.len(), 2);
        let read = read(
            "Bloomberg Message",
            &StagedPayload::Json { item: good.clone() },
        )
        .expect("read");
        assert_eq!(read.participants, ["a@x.example", "b@y.example"]);
        assert_eq!(read.item.class.as_sent, "IPM.NOTE.BloombergMessage");
        assert_eq!(read.dedup_key, b"id:m1");

        let mut no_email = good.clone();
        no_email["email"] = json!([]);
        let err = check_json(json!([good.clone(), no_email])).expect_err("refused");
        assert!(err.to_string().starts_with("item 1:"), "{err}");
        let mut unknown = good.clone();
        unknown["colour"] = json!("red");
        assert!(check_json(unknown).is_err());
        let mut bad_b64 = good;
        bad_b64["attachments"] = json!([{"name": "a.txt", "contentBase64": "%%%"}]);
        assert!(check_json(bad_b64).is_err());
    }

    #[test]
    fn without_a_source_id_duplicates_are_found_by_content() {
        let item = json!({"from": "a@x.example", "date": "2026-01-02T03:04:05Z", "email": ["a@x.example"]});
        let a = read("Pivot", &StagedPayload::Json { item: item.clone() }).expect("read");
        let b = read("Pivot", &StagedPayload::Json { item }).expect("read");
        assert_eq!(a.dedup_key, b.dedup_key);
        assert!(a.dedup_key.starts_with(b"sha256:"));
    }
}
