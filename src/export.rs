//! Export of a stored item as an RFC 5322 message (`.eml`), as an archive export would write
//! it: the participants (Bcc included), the sent date, the subject, the original Message-ID,
//! the item class, the body and every attachment as a MIME part.

use std::borrow::Cow;

use base64::Engine;
use chrono::Datelike;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

use crate::store::model::{AddressRecord, ItemRecord};

/// The header carrying the item class as sent (`IPM.NOTE.Twitter.Tweet`).
pub const ITEM_CLASS_HEADER: &str = "X-Item-Class";
/// The header carrying the class Content Search sees (`IPM.ExternalData.Twitter.Tweet`).
pub const SEARCHED_CLASS_HEADER: &str = "X-Searched-Item-Class";

/// Writes `item` as an `.eml`; `attachments` are the attachment bytes in order (a missing one
/// is written empty).
pub fn to_eml(item: &ItemRecord, attachments: &[Vec<u8>]) -> std::io::Result<Vec<u8>> {
    let mut message = MessageBuilder::new().from(address(&item.from));
    if let Some(sender) = &item.sender {
        if !sender.address.eq_ignore_ascii_case(&item.from.address) {
            message = message.sender(address(sender));
        }
    }
    for (header, list) in [("To", &item.to), ("Cc", &item.cc), ("Bcc", &item.bcc)] {
        if !list.is_empty() {
            let addresses: Vec<Address<'_>> = list.iter().map(address).collect();
            message = message.header(header, Address::new_list(addresses));
        }
    }
    // Written by chrono: mail-builder's `Date` gets dates before 1970 wrong (negative
    // seconds). Years outside 1..=9999 (not accepted since) are clamped into the format.
    let date = match item.sent.year() {
        ..=0 => "Mon, 1 Jan 0001 00:00:00 +0000".to_string(),
        1..=9999 => item.sent.to_rfc2822(),
        _ => "Fri, 31 Dec 9999 23:59:59 +0000".to_string(),
    };
    message = message.header("Date", Raw::new(date));
    if let Some(subject) = &item.subject {
        message = message.subject(Text::new(clean(subject)));
    }
    let message_id = item
        .internet_message_id
        .as_deref()
        .map(|id| {
            id.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .chars()
                .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>'))
                .collect::<String>()
        })
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("{}@ingest-emulator", item.id));
    message = message
        .message_id(MessageId::new(message_id))
        .header(ITEM_CLASS_HEADER, Text::new(clean(&item.item_class)))
        .header(
            SEARCHED_CLASS_HEADER,
            Text::new(clean(&item.searched_item_class)),
        )
        .header("X-Ingest-Item-Id", Text::new(item.id.to_string()))
        .header(
            "X-Ingest-Correlation-Id",
            Text::new(item.correlation_id.to_string()),
        );
    if let Some(body) = &item.body {
        let html = item
            .body_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("html"));
        message = if html {
            message.html_body(body.as_str())
        } else {
            message.text_body(body.as_str())
        };
    }
    let mut parts = Vec::with_capacity(item.attachments.len());
    for (n, meta) in item.attachments.iter().enumerate() {
        let bytes = attachments.get(n).map(Vec::as_slice).unwrap_or_default();
        let name = clean(&meta.name);
        let content_type =
            ContentType::new(media_type(&meta.content_type)).attribute("name", name.clone());
        // Base64 written here (not left to the builder, which would pick quoted-printable for
        // text/* and could change line endings): the bytes come back exactly.
        let mut part = MimePart::new(content_type, base64_lines(bytes)).transfer_encoding("base64");
        part = match (&meta.content_id, meta.is_inline) {
            (Some(cid), true) => {
                let cid: String = cid
                    .trim_matches(|c| c == '<' || c == '>')
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .collect();
                part.header(
                    "Content-Disposition",
                    ContentType::new("inline").attribute("filename", name),
                )
                .cid(cid)
            }
            _ => part.attachment(name),
        };
        parts.push(part);
    }
    if !parts.is_empty() {
        message.attachments = Some(parts);
    }
    message.write_to_vec()
}

/// A mailbox header value. Control characters, white space and the characters that are
/// syntax around an address (`< > ( ) , ; : \ "`) cannot reach the header: inside `<...>`
/// they would hide the next recipient (`(` opens a comment) or end the address early.
fn address(record: &AddressRecord) -> Address<'static> {
    let email: String = record
        .address
        .chars()
        .filter(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"')
        })
        .collect();
    let name = record
        .name
        .as_deref()
        .map(clean)
        .filter(|n| !n.trim().is_empty());
    Address::new_address(name, email)
}

/// Text without control characters (a header cannot be split by a stored value).
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `type/subtype` of a stored content type when it is well formed, else
/// `application/octet-stream`.
pub fn media_type(content_type: &str) -> Cow<'static, str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => Cow::Owned(essence),
        _ => Cow::Borrowed("application/octet-stream"),
    }
}

/// Base64 in lines of 76 characters, CRLF-terminated.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::AttachmentMeta;
    use mail_parser::{MessageParser, MimeHeaders};

    fn item() -> ItemRecord {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or_default()
        };
        ItemRecord {
            id: uuid::Uuid::new_v4(),
            tenant: uuid::Uuid::new_v4(),
            correlation_id: uuid::Uuid::new_v4(),
            app_id: None,
            received: at("2024-03-02T00:00:00Z"),
            item_class: "IPM.NOTE.Twitter.Tweet".into(),
            searched_item_class: "IPM.ExternalData.Twitter.Tweet".into(),
            kind: "externaldata".into(),
            source: "Twitter".into(),
            event: Some("Tweet".into()),
            subject: Some("Héllo\r\nBcc: evil@x.com".into()),
            body: Some("line one\nline two".into()),
            body_type: Some("Text".into()),
            from: AddressRecord {
                name: Some("Contoso \"Social\"".into()),
                address: "contoso@twitter.example".into(),
            },
            sender: None,
            to: vec![AddressRecord {
                name: None,
                address: "alice@contoso.com".into(),
            }],
            cc: vec![],
            bcc: vec![AddressRecord {
                name: None,
                address: "bob@contoso.com".into(),
            }],
            sent: at("2024-03-01T12:00:00Z"),
            created: None,
            internet_message_id: Some("<abc@partner.example>".into()),
            attachments: vec![AttachmentMeta {
                name: "notes.txt".into(),
                content_type: "text/plain\r\nX: y".into(),
                size: 9,
                content_id: None,
                is_inline: false,
            }],
            extended_properties: vec![],
            from_mime: false,
            size: 100,
            copies: vec![],
        }
    }

    /// Characters that are address syntax cannot hide a recipient: `alice@x(` and `bob@x)`
    /// as two To addresses made `<alice@x(>, <bob@x)>`, which parsers read as one address
    /// and a comment.
    #[test]
    fn address_syntax_in_stored_addresses_hides_no_recipient() {
        let mut item = item();
        item.to = [
            "alice@contoso.com(",
            "bob@contoso.com)",
            "carol@contoso.com\",\"x",
        ]
        .iter()
        .map(|a| AddressRecord {
            name: None,
            address: a.to_string(),
        })
        .collect();
        let eml = to_eml(&item, &[b"x".to_vec()]).expect("eml");
        let parsed = MessageParser::default().parse(&eml).expect("parses");
        let to: Vec<String> = parsed
            .to()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            to,
            ["alice@contoso.com", "bob@contoso.com", "carol@contoso.comx"],
            "{}",
            String::from_utf8_lossy(&eml)
        );
    }

    #[test]
    fn round_trips_through_a_mime_parser() {
        let item = item();
        let eml = to_eml(&item, &[b"a\nb\r\nc\x00".to_vec()]).expect("eml");
        let parsed = MessageParser::default().parse(&eml).expect("parses");
        assert_eq!(parsed.subject(), Some("Héllo  Bcc: evil@x.com"));
        assert_eq!(
            parsed
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("contoso@twitter.example")
        );
        assert_eq!(
            parsed
                .bcc()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("bob@contoso.com")
        );
        assert_eq!(parsed.message_id(), Some("abc@partner.example"));
        assert_eq!(
            parsed.date().map(|d| d.to_timestamp()),
            Some(item.sent.timestamp())
        );
        assert_eq!(
            parsed
                .body_text(0)
                .map(|b| b.replace("\r\n", "\n").trim_end().to_string())
                .as_deref(),
            Some("line one\nline two")
        );
        let attachment = parsed.attachment(0).expect("attachment");
        assert_eq!(attachment.attachment_name(), Some("notes.txt"));
        assert_eq!(attachment.contents(), b"a\nb\r\nc\x00");
        let text = String::from_utf8_lossy(&eml);
        assert!(text.contains("X-Item-Class: IPM.NOTE.Twitter.Tweet\r\n"));
        assert!(!text.contains("\r\nBcc: evil"));
        assert!(!text.contains("\r\nX: y"));
    }

    /// The Date header of a message sent before 1970 names its day (mail-builder's own
    /// formatting gave `00:00:-1` and the wrong day); years past 9999 are clamped.
    #[test]
    fn dates_before_1970_and_after_9999() {
        let mut item = item();
        for (sent, header) in [
            (
                "1969-12-31T23:59:59Z",
                "Date: Wed, 31 Dec 1969 23:59:59 +0000\r\n",
            ),
            (
                "0001-01-01T00:00:00Z",
                "Date: Mon, 1 Jan 0001 00:00:00 +0000\r\n",
            ),
        ] {
            item.sent = chrono::DateTime::parse_from_rfc3339(sent).unwrap().into();
            let eml = String::from_utf8(to_eml(&item, &[vec![]]).expect("eml")).unwrap();
            assert!(eml.contains(header), "{sent}: {eml}");
        }
        item.sent = "+12345-01-01T00:00:00Z".parse().unwrap();
        let eml = String::from_utf8(to_eml(&item, &[vec![]]).expect("eml")).unwrap();
        assert!(
            eml.contains("Date: Fri, 31 Dec 9999 23:59:59 +0000\r\n"),
            "{eml}"
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type("image/PNG; name=x"), "image/png");
        assert_eq!(media_type("bogus"), "application/octet-stream");
        assert_eq!(media_type("a/b\r\nc"), "application/octet-stream");
    }
}
