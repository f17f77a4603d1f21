//! SOAP 1.1 response writers, shaped like Exchange Online's answers.
//!
//! Plain `String` building (hot path); every text and attribute value goes through
//! [`push_text`] / [`push_attr`].

use super::{NS_ERRORS, NS_MESSAGES, NS_TYPES};

/// Outcome of one `t:Message` of a CreateItem request, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Created {
        item_id: String,
        change_key: String,
        attachment_ids: Vec<String>,
    },
    Failed {
        code: String,
        message: String,
    },
}

/// Outcome of one `t:FileAttachment` of a CreateAttachment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentResult {
    Created {
        attachment_id: String,
        root_item_id: String,
        root_item_change_key: String,
    },
    Failed {
        code: String,
        message: String,
    },
}

/// A folder as GetFolder reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub folder_id: String,
    pub change_key: String,
    pub parent_folder_id: Option<String>,
    pub display_name: String,
    pub folder_class: Option<String>,
    pub total_count: u64,
    pub child_folder_count: u64,
    pub unread_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderResult {
    Found(FolderInfo),
    Failed { code: String, message: String },
}

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="20" MajorBuildNumber="7452" MinorBuildNumber="28" Version="V2018_01_08""#,
    r#" xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types""#,
    r#" xmlns="http://schemas.microsoft.com/exchange/services/2006/types""#,
    r#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#,
    r#" xmlns:xsd="http://www.w3.org/2001/XMLSchema"/></s:Header>"#,
);
const BODY_OPEN: &str = r#"<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">"#;
const ENVELOPE_CLOSE: &str = "</s:Body></s:Envelope>";

/// Append `s` escaped for element content. Characters not allowed in XML 1.0 become U+FFFD;
/// `\r` is written as `&#13;` so that it survives end-of-line normalization.
pub fn push_text(out: &mut String, s: &str) {
    push_escaped(out, s, false)
}

/// Append `s` escaped for a double-quoted attribute value (whitespace controls as char refs).
pub fn push_attr(out: &mut String, s: &str) {
    push_escaped(out, s, true)
}

/// `s` escaped for element content, as a new string.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    push_text(&mut out, s);
    out
}

#[inline]
fn needs_escape(c: char, attr: bool) -> bool {
    match c {
        '&' | '<' | '>' | '\r' => true,
        '"' | '\t' | '\n' => attr,
        '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => true,
        _ => false,
    }
}

fn push_escaped(out: &mut String, s: &str, attr: bool) {
    // Fast path: nothing to escape (the common case for ids, codes, addresses).
    let Some(first) = s.find(|c| needs_escape(c, attr)) else {
        out.push_str(s);
        return;
    };
    out.reserve(s.len() + 16);
    out.push_str(&s[..first]);
    let mut last = first;
    for (i, c) in s[first..].char_indices() {
        let i = i + first;
        if !needs_escape(c, attr) {
            continue;
        }
        out.push_str(&s[last..i]);
        last = i + c.len_utf8();
        out.push_str(match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\r' => "&#13;",
            '\n' => "&#10;",
            '\t' => "&#9;",
            _ => "\u{fffd}",
        });
    }
    out.push_str(&s[last..]);
}

fn open(op: &str, capacity: usize) -> String {
    let mut out = String::with_capacity(ENVELOPE_OPEN.len() + BODY_OPEN.len() + 256 + capacity);
    out.push_str(ENVELOPE_OPEN);
    out.push_str(BODY_OPEN);
    out.push_str("<m:");
    out.push_str(op);
    out.push_str(r#"Response xmlns:m=""#);
    out.push_str(NS_MESSAGES);
    out.push_str(r#"" xmlns:t=""#);
    out.push_str(NS_TYPES);
    out.push_str(r#""><m:ResponseMessages>"#);
    out
}

fn close(out: &mut String, op: &str) {
    out.push_str("</m:ResponseMessages></m:");
    out.push_str(op);
    out.push_str("Response>");
    out.push_str(ENVELOPE_CLOSE);
}

fn message_open(out: &mut String, op: &str, success: bool) {
    out.push_str("<m:");
    out.push_str(op);
    out.push_str(if success {
        r#"ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>"#
    } else {
        r#"ResponseMessage ResponseClass="Error">"#
    });
}

fn message_close(out: &mut String, op: &str) {
    out.push_str("</m:");
    out.push_str(op);
    out.push_str("ResponseMessage>");
}

/// MessageText, ResponseCode, DescriptiveLinkKey (schema order; MessageXml would follow).
fn push_error_fields(out: &mut String, code: &str, message: &str) {
    out.push_str("<m:MessageText>");
    push_text(out, message);
    out.push_str("</m:MessageText><m:ResponseCode>");
    push_text(out, code);
    out.push_str("</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>");
}

/// `m:CreateItemResponse`: one response message per item, in order.
pub fn create_item(results: &[ItemResult]) -> String {
    const OP: &str = "CreateItem";
    let mut out = open(OP, results.len() * 400);
    for r in results {
        match r {
            ItemResult::Created {
                item_id,
                change_key,
                attachment_ids,
            } => {
                message_open(&mut out, OP, true);
                out.push_str(r#"<m:Items><t:Message><t:ItemId Id=""#);
                push_attr(&mut out, item_id);
                out.push_str(r#"" ChangeKey=""#);
                push_attr(&mut out, change_key);
                out.push_str(r#""/>"#);
                if !attachment_ids.is_empty() {
                    out.push_str("<t:Attachments>");
                    for a in attachment_ids {
                        out.push_str(r#"<t:FileAttachment><t:AttachmentId Id=""#);
                        push_attr(&mut out, a);
                        out.push_str(r#""/></t:FileAttachment>"#);
                    }
                    out.push_str("</t:Attachments>");
                }
                out.push_str("</t:Message></m:Items>");
            }
            ItemResult::Failed { code, message } => {
                message_open(&mut out, OP, false);
                push_error_fields(&mut out, code, message);
                out.push_str("<m:Items/>");
            }
        }
        message_close(&mut out, OP);
    }
    close(&mut out, OP);
    out
}

/// `m:CreateAttachmentResponse`: one response message per attachment, in order.
pub fn create_attachment(results: &[AttachmentResult]) -> String {
    const OP: &str = "CreateAttachment";
    let mut out = open(OP, results.len() * 400);
    for r in results {
        match r {
            AttachmentResult::Created {
                attachment_id,
                root_item_id,
                root_item_change_key,
            } => {
                message_open(&mut out, OP, true);
                out.push_str(r#"<m:Attachments><t:FileAttachment><t:AttachmentId Id=""#);
                push_attr(&mut out, attachment_id);
                out.push_str(r#"" RootItemId=""#);
                push_attr(&mut out, root_item_id);
                out.push_str(r#"" RootItemChangeKey=""#);
                push_attr(&mut out, root_item_change_key);
                out.push_str(r#""/></t:FileAttachment></m:Attachments>"#);
            }
            AttachmentResult::Failed { code, message } => {
                message_open(&mut out, OP, false);
                push_error_fields(&mut out, code, message);
                out.push_str("<m:Attachments/>");
            }
        }
        message_close(&mut out, OP);
    }
    close(&mut out, OP);
    out
}

/// `m:GetFolderResponse`: one response message per requested folder, in order.
pub fn get_folder(results: &[FolderResult]) -> String {
    const OP: &str = "GetFolder";
    let mut out = open(OP, results.len() * 600);
    for r in results {
        match r {
            FolderResult::Found(f) => {
                message_open(&mut out, OP, true);
                out.push_str(r#"<m:Folders><t:Folder><t:FolderId Id=""#);
                push_attr(&mut out, &f.folder_id);
                out.push_str(r#"" ChangeKey=""#);
                push_attr(&mut out, &f.change_key);
                out.push_str(r#""/>"#);
                if let Some(p) = &f.parent_folder_id {
                    out.push_str(r#"<t:ParentFolderId Id=""#);
                    push_attr(&mut out, p);
                    out.push_str(r#""/>"#);
                }
                if let Some(c) = &f.folder_class {
                    out.push_str("<t:FolderClass>");
                    push_text(&mut out, c);
                    out.push_str("</t:FolderClass>");
                }
                out.push_str("<t:DisplayName>");
                push_text(&mut out, &f.display_name);
                out.push_str("</t:DisplayName><t:TotalCount>");
                out.push_str(&f.total_count.to_string());
                out.push_str("</t:TotalCount><t:ChildFolderCount>");
                out.push_str(&f.child_folder_count.to_string());
                out.push_str("</t:ChildFolderCount><t:UnreadCount>");
                out.push_str(&f.unread_count.to_string());
                out.push_str("</t:UnreadCount></t:Folder></m:Folders>");
            }
            FolderResult::Failed { code, message } => {
                message_open(&mut out, OP, false);
                push_error_fields(&mut out, code, message);
                out.push_str("<m:Folders/>");
            }
        }
        message_close(&mut out, OP);
    }
    close(&mut out, OP);
    out
}

/// `m:ConvertIdResponse` with one Error message: this service does not convert ids. The
/// ServerVersionInfo header is what exchangelib's version probe needs.
pub fn convert_id_error(source_ids: usize) -> String {
    error_messages(
        "ConvertId",
        "ErrorInvalidRequest",
        "ConvertId is not supported by the third-party data ingestion service.",
        source_ids,
    )
}

/// An `m:{operation}Response` with a single Error response message.
pub fn error_message(operation: &str, code: &str, message: &str) -> String {
    error_messages(operation, code, message, 1)
}

/// An `m:{operation}Response` with `count` (at least one) identical Error response messages:
/// one per element the request asked about.
pub fn error_messages(operation: &str, code: &str, message: &str, count: usize) -> String {
    let count = count.max(1);
    let mut out = open(operation, count * (message.len() + 256));
    for _ in 0..count {
        message_open(&mut out, operation, false);
        push_error_fields(&mut out, code, message);
        message_close(&mut out, operation);
    }
    close(&mut out, operation);
    out
}

/// A SOAP fault (`s:Fault` with `e:ResponseCode`, `e:Message` and, if any, `t:MessageXml` of
/// `t:Value` elements, as Exchange sends for `ErrorServerBusy`'s `BackOffMilliseconds`);
/// `faultstring` and `e:Message` are both `message`.
pub fn fault(code: &str, message: &str, message_xml: &[(&str, String)]) -> String {
    fault_parts(code, message, message, |out| {
        for (name, value) in message_xml {
            out.push_str(r#"<t:Value Name=""#);
            push_attr(out, name);
            out.push_str(r#"">"#);
            push_text(out, value);
            out.push_str("</t:Value>");
        }
    })
}

/// An `ErrorSchemaValidation` fault as Exchange sends it: `faultstring` "The request failed
/// schema validation: {violation}", `e:Message` "The request failed schema validation." and
/// `t:MessageXml` with `t:LineNumber` and `t:LinePosition` (when known) and `t:Violation`.
pub fn schema_fault(violation: &str, line_column: Option<(u64, u64)>) -> String {
    const PREAMBLE: &str = "The request failed schema validation";
    let faultstring = format!("{PREAMBLE}: {violation}");
    fault_parts(
        "ErrorSchemaValidation",
        &faultstring,
        &format!("{PREAMBLE}."),
        |out| {
            if let Some((line, column)) = line_column {
                out.push_str(&format!(
                    "<t:LineNumber>{line}</t:LineNumber><t:LinePosition>{column}</t:LinePosition>"
                ));
            }
            out.push_str("<t:Violation>");
            push_text(out, violation);
            out.push_str("</t:Violation>");
        },
    )
}

/// The envelope of a fault; `message_xml` writes the children of `t:MessageXml` (none: no
/// `t:MessageXml`).
fn fault_parts(
    code: &str,
    faultstring: &str,
    message: &str,
    message_xml: impl FnOnce(&mut String),
) -> String {
    let mut out =
        String::with_capacity(ENVELOPE_OPEN.len() + 800 + faultstring.len() + message.len());
    out.push_str(ENVELOPE_OPEN);
    out.push_str(r#"<s:Body><s:Fault><faultcode xmlns:a=""#);
    out.push_str(NS_TYPES);
    out.push_str(r#"">a:"#);
    push_text(&mut out, code);
    out.push_str(r#"</faultcode><faultstring xml:lang="en-US">"#);
    push_text(&mut out, faultstring);
    out.push_str(r#"</faultstring><detail><e:ResponseCode xmlns:e=""#);
    out.push_str(NS_ERRORS);
    out.push_str(r#"">"#);
    push_text(&mut out, code);
    out.push_str(r#"</e:ResponseCode><e:Message xmlns:e=""#);
    out.push_str(NS_ERRORS);
    out.push_str(r#"">"#);
    push_text(&mut out, message);
    out.push_str("</e:Message>");
    let opened = out.len();
    out.push_str(r#"<t:MessageXml xmlns:t=""#);
    out.push_str(NS_TYPES);
    out.push_str(r#"">"#);
    let children = out.len();
    message_xml(&mut out);
    if out.len() == children {
        out.truncate(opened);
    } else {
        out.push_str("</t:MessageXml>");
    }
    out.push_str("</detail></s:Fault>");
    out.push_str(ENVELOPE_CLOSE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    use quick_xml::NsReader;

    /// (namespace, local name, attributes, text)
    type El = (String, String, Vec<(String, String)>, String);

    /// Well-formedness check plus a flat list of elements.
    fn walk(xml: &str) -> Vec<El> {
        let mut r = NsReader::from_str(xml);
        r.config_mut().expand_empty_elements = true;
        let mut out: Vec<El> = vec![];
        let mut stack = vec![];
        loop {
            match r.read_resolved_event().unwrap() {
                (ns, Event::Start(e)) => {
                    let ns = match ns {
                        ResolveResult::Bound(n) => String::from_utf8(n.as_ref().to_vec()).unwrap(),
                        ResolveResult::Unbound => String::new(),
                        ResolveResult::Unknown(p) => panic!("unknown prefix {p:?}"),
                    };
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            (
                                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                                a.unescape_value().unwrap().into_owned(),
                            )
                        })
                        .collect();
                    let local = String::from_utf8(e.local_name().as_ref().to_vec()).unwrap();
                    stack.push(out.len());
                    out.push((ns, local, attrs, String::new()));
                }
                (_, Event::Text(t)) => {
                    let i = *stack.last().unwrap();
                    out[i].3.push_str(&t.unescape().unwrap());
                }
                (_, Event::End(_)) => {
                    stack.pop();
                }
                (_, Event::Eof) => break,
                _ => {}
            }
        }
        assert!(stack.is_empty());
        out
    }

    fn names(xml: &str) -> Vec<String> {
        walk(xml).into_iter().map(|e| e.1).collect()
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_text("a & b <c> \"d\""), "a &amp; b &lt;c&gt; \"d\"");
        let mut s = String::new();
        push_attr(&mut s, "x\"y\n\tz\r&");
        assert_eq!(s, "x&quot;y&#10;&#9;z&#13;&amp;");
        assert_eq!(escape_text("bell\u{7}é漢"), "bell\u{fffd}é漢");
        assert_eq!(escape_text("plain"), "plain");
    }

    #[test]
    fn create_item_reply() {
        let xml = create_item(&[
            ItemResult::Created {
                item_id: "AAMk<1>".into(),
                change_key: "CQAA\"".into(),
                attachment_ids: vec!["AAMkA1".into(), "AAMkA2".into()],
            },
            ItemResult::Failed {
                code: "ErrorInvalidPropertySet".into(),
                message: "Missing <PR_MESSAGE_CLASS> & co".into(),
            },
            ItemResult::Created {
                item_id: "I3".into(),
                change_key: "C3".into(),
                attachment_ids: vec![],
            },
        ]);
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="utf-8"?>"#));
        let els = walk(&xml);
        let svi = els.iter().find(|e| e.1 == "ServerVersionInfo").unwrap();
        assert_eq!(svi.0, NS_TYPES);
        assert!(svi.2.contains(&("Version".into(), "V2018_01_08".into())));
        assert!(svi.2.contains(&("MajorVersion".into(), "15".into())));
        let msgs: Vec<_> = els
            .iter()
            .filter(|e| e.1 == "CreateItemResponseMessage")
            .collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].0, NS_MESSAGES);
        assert_eq!(msgs[0].2, vec![("ResponseClass".into(), "Success".into())]);
        assert_eq!(msgs[1].2, vec![("ResponseClass".into(), "Error".into())]);
        let item_ids: Vec<_> = els.iter().filter(|e| e.1 == "ItemId").collect();
        assert_eq!(item_ids[0].0, NS_TYPES);
        assert_eq!(
            item_ids[0].2,
            vec![
                ("Id".into(), "AAMk<1>".into()),
                ("ChangeKey".into(), "CQAA\"".into())
            ]
        );
        let att: Vec<_> = els.iter().filter(|e| e.1 == "AttachmentId").collect();
        assert_eq!(att.len(), 2);
        let text = els.iter().find(|e| e.1 == "MessageText").unwrap();
        assert_eq!(text.3, "Missing <PR_MESSAGE_CLASS> & co");
        // Schema order of the error message children.
        let n = names(&xml);
        let i = n.iter().position(|x| x == "MessageText").unwrap();
        assert_eq!(
            &n[i..i + 4],
            &["MessageText", "ResponseCode", "DescriptiveLinkKey", "Items"]
        );
        let codes: Vec<_> = els
            .iter()
            .filter(|e| e.1 == "ResponseCode")
            .map(|e| e.3.as_str())
            .collect();
        assert_eq!(codes, vec!["NoError", "ErrorInvalidPropertySet", "NoError"]);
    }

    #[test]
    fn create_attachment_reply() {
        let xml = create_attachment(&[
            AttachmentResult::Created {
                attachment_id: "A1".into(),
                root_item_id: "R1".into(),
                root_item_change_key: "K1".into(),
            },
            AttachmentResult::Failed {
                code: "ErrorItemNotFound".into(),
                message: "nope".into(),
            },
        ]);
        let els = walk(&xml);
        let a = els.iter().find(|e| e.1 == "AttachmentId").unwrap();
        assert_eq!(
            a.2,
            vec![
                ("Id".into(), "A1".into()),
                ("RootItemId".into(), "R1".into()),
                ("RootItemChangeKey".into(), "K1".into())
            ]
        );
        assert!(names(&xml).contains(&"CreateAttachmentResponse".to_string()));
    }

    #[test]
    fn get_folder_reply() {
        let xml = get_folder(&[
            FolderResult::Found(FolderInfo {
                folder_id: "F-inbox".into(),
                change_key: "CK".into(),
                parent_folder_id: Some("F-root".into()),
                display_name: "Inbox & more".into(),
                folder_class: Some("IPF.Note".into()),
                total_count: 12,
                child_folder_count: 0,
                unread_count: 3,
            }),
            FolderResult::Failed {
                code: "ErrorFolderNotFound".into(),
                message: "The specified folder could not be found in the store.".into(),
            },
        ]);
        let n = names(&xml);
        let i = n.iter().position(|x| x == "Folder").unwrap();
        assert_eq!(
            &n[i..i + 8],
            &[
                "Folder",
                "FolderId",
                "ParentFolderId",
                "FolderClass",
                "DisplayName",
                "TotalCount",
                "ChildFolderCount",
                "UnreadCount"
            ]
        );
        let els = walk(&xml);
        assert_eq!(
            els.iter().find(|e| e.1 == "DisplayName").unwrap().3,
            "Inbox & more"
        );
        assert_eq!(els.iter().find(|e| e.1 == "TotalCount").unwrap().3, "12");
    }

    #[test]
    fn errors_and_faults() {
        let xml = convert_id_error(2);
        let els = walk(&xml);
        assert!(els.iter().any(|e| e.1 == "ServerVersionInfo"));
        let m = els
            .iter()
            .find(|e| e.1 == "ConvertIdResponseMessage")
            .unwrap();
        assert_eq!(m.2, vec![("ResponseClass".into(), "Error".into())]);
        let messages = els
            .iter()
            .filter(|e| e.1 == "ConvertIdResponseMessage")
            .count();
        assert_eq!(messages, 2, "one message per id asked about");
        assert_eq!(
            names(&convert_id_error(0))
                .iter()
                .filter(|n| *n == "ConvertIdResponseMessage")
                .count(),
            1
        );

        let xml = error_message(
            "FindItem",
            "ErrorInvalidRequest",
            "FindItem is not supported",
        );
        assert!(names(&xml).contains(&"FindItemResponseMessage".to_string()));

        let xml = fault(
            "ErrorServerBusy",
            "The server cannot service this request right now. Try again later.",
            &[("BackOffMilliseconds", "297749".into())],
        );
        assert!(xml.contains(r#"<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode>"#));
        let els = walk(&xml);
        assert!(els.iter().any(|e| e.1 == "ServerVersionInfo"));
        let v = els.iter().find(|e| e.1 == "Value").unwrap();
        assert_eq!(v.0, NS_TYPES);
        assert_eq!(v.2, vec![("Name".into(), "BackOffMilliseconds".into())]);
        assert_eq!(v.3, "297749");
        let rc = els.iter().find(|e| e.1 == "ResponseCode").unwrap();
        assert_eq!(rc.0, NS_ERRORS);
        assert_eq!(rc.3, "ErrorServerBusy");

        let xml = fault("ErrorSchemaValidation", "bad <xml> & stuff", &[]);
        assert!(!xml.contains("MessageXml"));
        let els = walk(&xml);
        assert_eq!(
            els.iter().find(|e| e.1 == "faultstring").unwrap().3,
            "bad <xml> & stuff"
        );
    }
}
