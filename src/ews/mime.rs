//! `t:MimeContent`: an RFC 5322 / MIME message, parsed with `mail-parser`.

use chrono::{DateTime, Utc};
use mail_parser::{Address, HeaderName, MessageParser, MimeHeaders, PartType};

use super::types::{Body, BodyType, FileAttachment, Mailbox};

/// What we take from a MIME message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MimeMessage {
    pub from: Option<Mailbox>,
    pub sender: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub date: Option<DateTime<Utc>>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// The HTML body if the message has a real text/html part, else the text/plain one.
    pub body: Option<Body>,
    pub attachments: Vec<FileAttachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("the MIME content is not an RFC 5322 message (no From, To, Date, Subject, Message-ID or Content-Type header)")]
    NotMime,
}

/// Parse MIME bytes.
pub fn parse_mime(bytes: &[u8]) -> Result<MimeMessage, MimeError> {
    let msg = MessageParser::default()
        .parse(bytes)
        .ok_or(MimeError::NotMime)?;
    let has_header = msg.headers().iter().any(|h| {
        matches!(
            h.name,
            HeaderName::From
                | HeaderName::To
                | HeaderName::Date
                | HeaderName::Subject
                | HeaderName::MessageId
                | HeaderName::ContentType
        )
    });
    if !has_header {
        return Err(MimeError::NotMime);
    }

    let first = |a: Option<&Address<'_>>| a.and_then(|a| a.iter().next()).map(to_mailbox);
    let all = |a: Option<&Address<'_>>| -> Vec<Mailbox> {
        a.map(|a| a.iter().map(to_mailbox).collect())
            .unwrap_or_default()
    };

    let date = msg
        .date()
        .filter(|d| d.is_valid())
        .and_then(|d| DateTime::<Utc>::from_timestamp(d.to_timestamp(), 0));

    // mail-parser converts text<->HTML on demand: look at the real part types.
    let html = msg.html_bodies().find_map(|p| match &p.body {
        PartType::Html(h) => Some(h.to_string()),
        _ => None,
    });
    let body = match html {
        Some(text) => Some(Body {
            body_type: BodyType::Html,
            text,
        }),
        None => msg.text_bodies().find_map(|p| match &p.body {
            PartType::Text(t) => Some(Body {
                body_type: BodyType::Text,
                text: t.to_string(),
            }),
            _ => None,
        }),
    };

    let attachments = msg
        .attachments()
        .map(|p| FileAttachment {
            name: p.attachment_name().map(str::to_owned),
            content_type: p.content_type().map(|ct| match ct.subtype() {
                Some(st) => format!("{}/{}", ct.ctype(), st),
                None => ct.ctype().to_owned(),
            }),
            content_id: p
                .content_id()
                .map(|c| c.trim_matches(|ch| ch == '<' || ch == '>').to_owned()),
            is_inline: p.content_disposition().is_some_and(|d| d.is_inline()),
            content: attachment_bytes(msg.raw_message(), p),
        })
        .collect();

    Ok(MimeMessage {
        from: first(msg.from()),
        sender: first(msg.sender()),
        to: all(msg.to()),
        cc: all(msg.cc()),
        bcc: all(msg.bcc()),
        date,
        subject: msg.subject().map(str::to_owned),
        message_id: msg.message_id().map(str::to_owned),
        body,
        attachments,
    })
}

/// The bytes the client sent as an attachment. For a text part (or one without a
/// Content-Type, which counts as text) mail-parser gives its text converted to UTF-8 (another
/// charset's bytes changed, binary bytes replaced): those parts are read from the raw
/// message and only their transfer encoding is undone. A transfer encoding that does not
/// decode leaves mail-parser's reading.
fn attachment_bytes(raw: &[u8], p: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    if !matches!(p.body, PartType::Text(_) | PartType::Html(_)) {
        return p.contents().to_vec();
    }
    let Some(body) = raw.get(p.raw_body_offset() as usize..p.raw_end_offset() as usize) else {
        return p.contents().to_vec();
    };
    let encoding = p
        .content_transfer_encoding()
        .map(|e| e.trim().to_ascii_lowercase());
    let decoded = match encoding.as_deref() {
        Some("base64") => mail_parser::decoders::base64::base64_decode(body),
        Some("quoted-printable") => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
        }
        // 7bit, 8bit, binary: the bytes themselves, without the line break that belongs to
        // the boundary after them.
        _ => Some(
            body.strip_suffix(b"\r\n")
                .or_else(|| body.strip_suffix(b"\n"))
                .unwrap_or(body)
                .to_vec(),
        ),
    };
    decoded.unwrap_or_else(|| p.contents().to_vec())
}

fn to_mailbox(a: &mail_parser::Addr<'_>) -> Mailbox {
    Mailbox {
        name: a.name().map(str::to_owned),
        email_address: a.address().map(str::to_owned),
        routing_type: Some("SMTP".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMS: &[u8] = b"From: SMS Gateway <+15551234567@sms.example>\r\nTo: Alice <alice@contoso.com>\r\nSubject: SMS from +1 555 123 4567\r\nDate: Fri, 01 Mar 2024 12:10:00 +0000\r\nMessage-ID: <sms-0001@sms.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nX-MS-Exchange-Organization-SCL: -1\r\n\r\nRunning late, see you at 5.\r\n";

    /// Attachments come back as the bytes sent: a text attachment in another charset, or
    /// binary bytes in a part without a Content-Type, are not converted to UTF-8.
    #[test]
    fn text_and_untyped_attachments_keep_their_bytes() {
        let latin1 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"caf\xe9;na\xefve\r\n",
        );
        let raw = format!(
            "From: a@contoso.com\r\nTo: b@contoso.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n\
--B\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n/wD+\r\n\
--B\r\nContent-Type: text/csv; charset=windows-1252\r\nContent-Disposition: attachment; filename=\"l.csv\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{latin1}\r\n\
--B\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=\"q.txt\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nd=E9j=E0 vu\r\n\
--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"plain.txt\"\r\n\r\nline one\r\nline two\r\n\
--B--\r\n"
        );
        let m = parse_mime(raw.as_bytes()).unwrap();
        let content = |name: &str| {
            m.attachments
                .iter()
                .find(|a| a.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{name} in {:?}", m.attachments))
                .content
                .clone()
        };
        assert_eq!(content("a.bin"), [0xFF, 0x00, 0xFE]);
        assert_eq!(content("l.csv"), b"caf\xe9;na\xefve\r\n");
        assert_eq!(content("q.txt"), b"d\xe9j\xe0 vu");
        assert_eq!(content("plain.txt"), b"line one\r\nline two");
    }

    #[test]
    fn sms_capture() {
        let m = parse_mime(SMS).unwrap();
        let from = m.from.unwrap();
        assert_eq!(
            from.email_address.as_deref(),
            Some("+15551234567@sms.example")
        );
        assert_eq!(from.name.as_deref(), Some("SMS Gateway"));
        assert_eq!(m.to.len(), 1);
        assert_eq!(m.to[0].email_address.as_deref(), Some("alice@contoso.com"));
        assert_eq!(m.subject.as_deref(), Some("SMS from +1 555 123 4567"));
        assert_eq!(m.message_id.as_deref(), Some("sms-0001@sms.example"));
        assert_eq!(
            m.date.unwrap(),
            DateTime::parse_from_rfc3339("2024-03-01T12:10:00Z").unwrap()
        );
        let body = m.body.unwrap();
        assert_eq!(body.body_type, BodyType::Text);
        assert_eq!(body.text.trim_end(), "Running late, see you at 5.");
        assert!(m.attachments.is_empty());
        assert!(m.sender.is_none());
    }

    #[test]
    fn multipart_with_attachment() {
        let raw = "From: \"Bob, Jr.\" <bob@contoso.com>\r\n\
To: Team: alice@contoso.com, carol@contoso.com;, dave@contoso.com\r\n\
Cc: eve@contoso.com\r\n\
Subject: =?UTF-8?B?SMOpbGxv?= report\r\n\
Date: Tue, 05 Mar 2024 10:00:00 +0200\r\n\
Message-ID: <abc@contoso.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
--XX\r\n\
Content-Type: multipart/alternative; boundary=\"YY\"\r\n\
\r\n\
--YY\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
hello text\r\n\
--YY\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>hello html</p>\r\n\
--YY--\r\n\
--XX\r\n\
Content-Type: application/pdf; name=\"r.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--XX\r\n\
Content-Type: image/png\r\n\
Content-Disposition: inline; filename=\"logo.png\"\r\n\
Content-ID: <logo@x>\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
iVBORw0K\r\n\
--XX--\r\n";
        let m = parse_mime(raw.as_bytes()).unwrap();
        assert_eq!(m.from.unwrap().name.as_deref(), Some("Bob, Jr."));
        let to: Vec<_> =
            m.to.iter()
                .map(|a| a.email_address.clone().unwrap())
                .collect();
        assert_eq!(
            to,
            vec!["alice@contoso.com", "carol@contoso.com", "dave@contoso.com"]
        );
        assert_eq!(m.cc.len(), 1);
        assert_eq!(m.subject.as_deref(), Some("Héllo report"));
        assert_eq!(
            m.date.unwrap(),
            DateTime::parse_from_rfc3339("2024-03-05T08:00:00Z").unwrap()
        );
        let body = m.body.unwrap();
        assert_eq!(body.body_type, BodyType::Html);
        assert!(body.text.contains("<p>hello html</p>"));
        assert_eq!(m.attachments.len(), 2);
        let pdf = &m.attachments[0];
        assert_eq!(pdf.name.as_deref(), Some("report.pdf"));
        assert_eq!(pdf.content_type.as_deref(), Some("application/pdf"));
        assert_eq!(pdf.content, b"%PDF-1.4\n");
        assert!(!pdf.is_inline);
        let png = &m.attachments[1];
        assert_eq!(png.content_id.as_deref(), Some("logo@x"));
        assert!(png.is_inline);
        assert_eq!(png.content, b"\x89PNG\r\n");
    }

    #[test]
    fn not_mime() {
        assert_eq!(parse_mime(b""), Err(MimeError::NotMime));
        assert_eq!(
            parse_mime(b"just some text\r\nwithout headers\r\n"),
            Err(MimeError::NotMime)
        );
        assert_eq!(
            parse_mime(&[0xff, 0x00, 0x13, 0x37, 0x80, 0x81]),
            Err(MimeError::NotMime)
        );
        assert_eq!(
            parse_mime(b"X-Foo: bar\r\n\r\nbody"),
            Err(MimeError::NotMime)
        );
        assert!(parse_mime(b"Subject: hi\r\n\r\nbody").is_ok());
    }
}
