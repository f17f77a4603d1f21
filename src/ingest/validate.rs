//! Validation: turns a protocol `Message` (as sent) into a domain `Item`, or says why the item
//! is not imported. Parse, don't validate: everything after this step relies on `Item`.

use chrono::{DateTime, Utc};

use crate::domain::{
    Attachment, Body, BodyFormat, ExtendedProperty, Item, MessageClass, Participant, MAX_ITEM_BYTES,
};
use crate::ews::mime::{parse_mime, MimeMessage};
use crate::ews::types::{self as wire, Message};

/// MAPI property tags the service reads.
const PID_TAG_MESSAGE_CLASS: u32 = 0x001A;
const PID_TAG_CLIENT_SUBMIT_TIME: u32 = 0x0039;
const PID_TAG_MESSAGE_DELIVERY_TIME: u32 = 0x0E06;
const PID_TAG_SUBJECT: u32 = 0x0037;

/// Why one item of a batch was not imported: an EWS response code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ItemError {
    pub code: &'static str,
    pub message: String,
}

impl ItemError {
    fn missing(property: &str) -> ItemError {
        ItemError {
            code: "ErrorItemSave",
            message: format!(
                "The item was not imported: the mandatory property {property} is missing."
            ),
        }
    }

    fn invalid(message: String) -> ItemError {
        ItemError {
            code: "ErrorItemSave",
            message: format!("The item was not imported: {message}"),
        }
    }
}

/// Validates one message. MIME content, when present, supplies the properties the XML does
/// not set; properties set in the XML win, as in EWS.
pub fn validate(message: &Message) -> Result<Item, ItemError> {
    let mime = match &message.mime_content {
        Some(content) => Some(parse_mime(&content.bytes).map_err(|e| ItemError {
            code: "ErrorMimeContentConversionFailed",
            message: format!(
                "The item was not imported: its MimeContent is not a valid MIME message ({e})."
            ),
        })?),
        None => None,
    };
    let mime = mime.as_ref();

    let class = message_class(message)?;
    let from = message
        .from
        .as_ref()
        .and_then(participant)
        .or_else(|| mime.and_then(|m| m.from.as_ref()).and_then(participant));
    let sender = message
        .sender
        .as_ref()
        .and_then(participant)
        .or_else(|| mime.and_then(|m| m.sender.as_ref()).and_then(participant));
    let Some(from) = from.or_else(|| sender.clone()) else {
        return Err(ItemError::missing("FROM"));
    };
    let to = recipients(&message.to, mime.map(|m| m.to.as_slice()));
    if to.is_empty() {
        return Err(ItemError::missing("TO"));
    }
    let cc = recipients(&message.cc, mime.map(|m| m.cc.as_slice()));
    let bcc = recipients(&message.bcc, mime.map(|m| m.bcc.as_slice()));
    let Some(sent) = sent_date(message, mime)? else {
        return Err(ItemError::missing("DATE"));
    };

    let subject = message
        .subject
        .clone()
        .or_else(|| string_property(message, PID_TAG_SUBJECT))
        .or_else(|| mime.and_then(|m| m.subject.clone()));
    let body = message
        .body
        .as_ref()
        .or_else(|| mime.and_then(|m| m.body.as_ref()))
        .map(body);
    let mut attachments: Vec<Attachment> = mime
        .map(|m| m.attachments.iter().map(attachment).collect())
        .unwrap_or_default();
    attachments.extend(message.attachments.iter().map(attachment));

    let size = item_size(message, &subject, &body, &attachments);
    if size > MAX_ITEM_BYTES {
        return Err(ItemError {
            code: "ErrorMessageSizeExceeded",
            message: format!(
                "The item was not imported: it is {size} bytes with its attachments, over the maximum of {MAX_ITEM_BYTES} bytes."
            ),
        });
    }

    Ok(Item {
        class,
        subject,
        body,
        from,
        sender,
        to,
        cc,
        bcc,
        sent,
        created: message.date_time_created,
        internet_message_id: message
            .internet_message_id
            .clone()
            .or_else(|| mime.and_then(|m| m.message_id.clone())),
        attachments,
        extended_properties: message
            .extended_properties
            .iter()
            .map(|p| ExtendedProperty {
                tag: p.property_tag,
                name: p.property_name.clone(),
                property_type: p.property_type.clone(),
                values: p.values.clone(),
            })
            .collect(),
        from_mime: message.mime_content.is_some(),
        size,
    })
}

/// MESSAGECLASS: `t:ItemClass` or PidTagMessageClass, `IPM.NOTE.<Source>[.<Event>]`.
fn message_class(message: &Message) -> Result<MessageClass, ItemError> {
    let Some(sent) = message
        .item_class
        .clone()
        .or_else(|| string_property(message, PID_TAG_MESSAGE_CLASS))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
    else {
        return Err(ItemError::missing("MESSAGECLASS"));
    };
    parse_class(&sent).ok_or_else(|| {
        ItemError::invalid(format!(
            "the message class '{sent}' is not valid: it must begin with IPM.NOTE. followed by the source (and optionally an event), e.g. IPM.NOTE.Twitter.Tweet."
        ))
    })
}

/// The longest message class ([MS-OXCMSG] 2.2.1.3).
const MAX_CLASS_LENGTH: usize = 255;

/// Splits `IPM.NOTE.<Source>[.<Event>]` (prefix case-insensitive).
pub fn parse_class(class: &str) -> Option<MessageClass> {
    const PREFIX: &str = "IPM.NOTE.";
    let head = class.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &class[PREFIX.len()..];
    let (source, event) = match rest.split_once('.') {
        Some((source, event)) => (source, Some(event)),
        None => (rest, None),
    };
    // [MS-OXCMSG] 2.2.1.3 PidTagMessageClass: printable ASCII (0x20 to 0x7E), at most 255
    // characters, no empty segment (so no trailing period). `IPM.NOTE.Yahoo!.IM` is one of
    // the classes Content Search documents.
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x20..=0x7E).contains(&b));
    if class.len() > MAX_CLASS_LENGTH
        || !valid(source)
        || event.is_some_and(|e| e.split('.').any(|part| !valid(part)))
    {
        return None;
    }
    Some(MessageClass {
        as_sent: class.to_string(),
        source: source.to_string(),
        event: event.map(str::to_string),
    })
}

fn string_property(message: &Message, tag: u32) -> Option<String> {
    message
        .extended_properties
        .iter()
        .find(|p| p.property_tag == Some(tag))
        .and_then(|p| p.values.first().cloned())
}

/// DATE: DateTimeSent, else PidTagClientSubmitTime, else delivery time, else the MIME Date.
fn sent_date(
    message: &Message,
    mime: Option<&MimeMessage>,
) -> Result<Option<DateTime<Utc>>, ItemError> {
    if let Some(sent) = message.date_time_sent {
        return Ok(Some(sent));
    }
    for tag in [PID_TAG_CLIENT_SUBMIT_TIME, PID_TAG_MESSAGE_DELIVERY_TIME] {
        if let Some(value) = string_property(message, tag) {
            return parse_date(&value).map(Some).ok_or_else(|| {
                ItemError::invalid(format!(
                    "the value '{value}' of extended property 0x{tag:04X} is not a date."
                ))
            });
        }
    }
    Ok(mime.and_then(|m| m.date))
}

fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    DateTime::parse_from_rfc3339(value)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|d| d.and_utc())
        })
}

fn participant(mailbox: &wire::Mailbox) -> Option<Participant> {
    let address = mailbox.email_address.as_deref()?.trim();
    (!address.is_empty()).then(|| Participant {
        name: mailbox.name.clone().filter(|n| !n.trim().is_empty()),
        address: address.to_string(),
    })
}

fn recipients(sent: &[wire::Mailbox], mime: Option<&[wire::Mailbox]>) -> Vec<Participant> {
    let chosen = if sent.is_empty() {
        mime.unwrap_or(&[])
    } else {
        sent
    };
    chosen.iter().filter_map(participant).collect()
}

fn body(body: &wire::Body) -> Body {
    Body {
        format: match body.body_type {
            wire::BodyType::Text => BodyFormat::Text,
            wire::BodyType::Html => BodyFormat::Html,
        },
        content: body.text.clone(),
    }
}

fn attachment(a: &wire::FileAttachment) -> Attachment {
    Attachment {
        name: a.name.clone().unwrap_or_else(|| "attachment".to_string()),
        content_type: a
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_string()),
        content_id: a.content_id.clone(),
        is_inline: a.is_inline,
        content: a.content.clone(),
    }
}

/// The item's size as the service counts it: the MIME message, or subject and body, plus
/// attachments given outside the MIME.
fn item_size(
    message: &Message,
    subject: &Option<String>,
    body: &Option<Body>,
    attachments: &[Attachment],
) -> usize {
    match &message.mime_content {
        Some(mime) => {
            mime.bytes.len()
                + message
                    .attachments
                    .iter()
                    .map(|a| a.content.len())
                    .sum::<usize>()
        }
        None => {
            subject.as_ref().map_or(0, String::len)
                + body.as_ref().map_or(0, |b| b.content.len())
                + attachments.iter().map(|a| a.content.len()).sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let c = parse_class("IPM.NOTE.Twitter.Tweet").unwrap();
        assert_eq!(
            (c.source.as_str(), c.event.as_deref()),
            ("Twitter", Some("Tweet"))
        );
        assert_eq!(c.searched(), "IPM.ExternalData.Twitter.Tweet");
        assert!(parse_class("ipm.note.SMS").is_some());
        assert!(parse_class("IPM.NOTE.").is_none());
        assert!(parse_class("IPM.NOTE").is_none());
        assert!(parse_class("IPM.Appointment.Twitter").is_none());
        assert!(parse_class("IPM.NOTE..Tweet").is_none());
        assert!(
            parse_class("IPM.NOTE.Twitter.").is_none(),
            "a trailing period"
        );
        assert!(
            parse_class("IPM.NOTE.Yahoo!.IM").is_some(),
            "documented by Content Search"
        );
        assert!(parse_class("IPM.NOTE.Slack Export.Message (edited)").is_some());
        assert!(parse_class("IPM.NOTE.Wéchat").is_none(), "not ASCII");
        assert!(
            parse_class("IPM.NOTE.Tab\tChar").is_none(),
            "a control character"
        );
        let longest = format!("IPM.NOTE.{}", "x".repeat(255 - 9));
        assert!(parse_class(&longest).is_some());
        assert!(
            parse_class(&format!("{longest}y")).is_none(),
            "over 255 characters"
        );
    }

    #[test]
    fn dates() {
        assert!(parse_date("2024-03-01T12:00:00Z").is_some());
        assert!(parse_date("2024-03-01T12:00:00.1234567+02:00").is_some());
        assert!(parse_date("2024-03-01T12:00:00").is_some());
        assert!(parse_date("yesterday").is_none());
    }
}
