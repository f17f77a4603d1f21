//! One-pass, namespace-aware SOAP request parser (no DOM).
//!
//! Hardening: UTF-8 only, no DTD at all (so no entity declarations: billion laughs and XXE are
//! impossible), unknown entity references rejected, bounded element depth / attribute count /
//! element count, the whole document is checked for well-formedness (truncation, trailing
//! content, a second root).
//!
//! Every error here is request-level: the caller answers it with a SOAP fault (or an error
//! response message) carrying [`ParseError::response_code`].

use std::borrow::Cow;
use std::fmt;

use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use quick_xml::events::{BytesCData, BytesStart, BytesText, Event};
use quick_xml::Reader;

use super::types::*;

/// Maximum element nesting depth (the deepest real EWS request is about 10).
pub const MAX_DEPTH: usize = 64;
/// Maximum number of attributes (namespace declarations included) on one element.
pub const MAX_ATTRIBUTES: usize = 64;
/// Maximum number of elements in one request.
pub const MAX_ELEMENTS: usize = 1_000_000;

/// A location in the request body: byte offset and 1-based line/column (column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub line: u64,
    pub column: u64,
}

impl Position {
    fn at(src: &[u8], offset: u64) -> Position {
        let off = (offset as usize).min(src.len());
        let before = &src[..off];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count() as u64;
        // Count characters, not bytes (continuation bytes are 0b10xxxxxx).
        let column = 1 + before[line_start..]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count() as u64;
        Position {
            offset,
            line,
            column,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a request body could not be turned into an [`EwsRequest`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("The request is not well-formed XML ({position}): {message}")]
    Malformed { position: Position, message: String },
    #[error("The request contains a DTD (<!DOCTYPE ...>), which is not allowed.")]
    DtdForbidden,
    #[error("The request declares the XML encoding '{0}'; only UTF-8 is supported.")]
    UnsupportedEncoding(String),
    #[error("The request is not a SOAP envelope: the root element must be Envelope in the SOAP 1.1 (http://schemas.xmlsoap.org/soap/envelope/) or SOAP 1.2 namespace.")]
    NotSoapEnvelope,
    #[error("The SOAP envelope has no Body element.")]
    MissingBody,
    #[error("The SOAP Body is empty: it must contain an operation element such as m:CreateItem.")]
    EmptyBody,
    #[error("The SOAP Body contains the element '{name}' in namespace '{namespace}', which is not an operation of this service (operations are in http://schemas.microsoft.com/exchange/services/2006/messages).")]
    UnknownOperation { namespace: String, name: String },
    #[error("{message} (line {}, position {})", position.line, position.column)]
    Schema { message: String, position: Position },
    #[error("XML elements are nested more than {MAX_DEPTH} levels deep.")]
    TooDeep,
    #[error("An XML element has more than {MAX_ATTRIBUTES} attributes.")]
    TooManyAttributes,
    #[error("The request has more than {MAX_ELEMENTS} XML elements.")]
    TooManyElements,
}

impl ParseError {
    /// The EWS response code to report for this error.
    pub fn response_code(&self) -> &'static str {
        match self {
            ParseError::NotSoapEnvelope
            | ParseError::MissingBody
            | ParseError::EmptyBody
            | ParseError::UnknownOperation { .. } => "ErrorInvalidRequest",
            ParseError::Malformed { .. }
            | ParseError::DtdForbidden
            | ParseError::UnsupportedEncoding(_)
            | ParseError::Schema { .. }
            | ParseError::TooDeep
            | ParseError::TooManyAttributes
            | ParseError::TooManyElements => "ErrorSchemaValidation",
        }
    }

    /// Where in the request the error is, when known (1-based line and column).
    pub fn position(&self) -> Option<Position> {
        match self {
            ParseError::Malformed { position, .. } | ParseError::Schema { position, .. } => {
                Some(*position)
            }
            _ => None,
        }
    }

    /// What the request violates, without its position (EWS's `t:Violation`).
    pub fn violation(&self) -> String {
        match self {
            ParseError::Schema { message, .. } => message.clone(),
            ParseError::Malformed { message, .. } => {
                format!("The request is not well-formed XML: {message}")
            }
            other => other.to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, ParseError>;

/// Parse a SOAP request body (the bytes after the HTTP head).
pub fn parse_request(body: &[u8]) -> Result<EwsRequest> {
    let body = check_encoding_prefix(body)?;
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            return Err(ParseError::Malformed {
                position: Position::at(body, e.valid_up_to() as u64),
                message: "invalid UTF-8 byte sequence".into(),
            })
        }
    };
    let mut p = Parser::new(text);

    let (ns, root) = match p.next()? {
        Ev::Start(ns, e) => (ns, e),
        _ => return Err(p.malformed("expected the root element")),
    };
    if !(matches!(ns, Ns::Soap11 | Ns::Soap12) && root.local_name().as_ref() == b"Envelope") {
        // Still check the whole document first: a hostile or broken document gets its own error.
        p.skip()?;
        p.finish()?;
        return Err(ParseError::NotSoapEnvelope);
    }
    let env_ns = ns;

    let mut header = SoapHeader::default();
    let mut operation = None;
    let mut seen_header = false;
    while let Some((ns, e)) = p.next_child("soap:Envelope")? {
        let local = e.local_name();
        if operation.is_some() {
            // SOAP 1.1 allows trailing (qualified) elements after the Body: ignore them.
            p.skip()?;
        } else if ns == env_ns && local.as_ref() == b"Header" && !seen_header {
            seen_header = true;
            p.parse_header(&mut header)?;
        } else if ns == env_ns && local.as_ref() == b"Body" {
            operation = Some(p.parse_body()?);
        } else {
            return Err(p.schema(format!(
                "unexpected element '{}' in the SOAP Envelope (expected Header or Body)",
                qname(&e)
            )));
        }
    }
    let operation = operation.ok_or(ParseError::MissingBody)?;
    p.finish()?;
    Ok(EwsRequest { header, operation })
}

/// Reject non-UTF-8 byte order marks and strip the UTF-8 one.
fn check_encoding_prefix(body: &[u8]) -> Result<&[u8]> {
    if let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
        return Ok(rest);
    }
    if body.starts_with(b"\xFE\xFF") || body.starts_with(b"\xFF\xFE") {
        return Err(ParseError::UnsupportedEncoding("UTF-16".into()));
    }
    if body.len() >= 2 && body[1] == 0 && body[0] != 0 || body.first() == Some(&0) {
        return Err(ParseError::UnsupportedEncoding(
            "UTF-16 or UTF-32 (no byte order mark)".into(),
        ));
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Low-level reader
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Soap11,
    Soap12,
    M,
    T,
    Other,
    None,
}

enum Ev<'i> {
    Start(Ns, BytesStart<'i>),
    End,
    Text(BytesText<'i>),
    CData(BytesCData<'i>),
    Eof,
}

struct Parser<'i> {
    r: Reader<&'i [u8]>,
    src: &'i [u8],
    /// `src`, checked to be UTF-8 whole: text slices of it need no second check.
    text: &'i str,
    depth: usize,
    elements: usize,
    root_seen: bool,
    /// The namespace declarations in scope, innermost last. Resolved here, not by quick-xml's
    /// `NsReader`, so each start tag's attributes are read once (for their count and for
    /// declarations together) and a namespace name is compared with the known ones once, at
    /// its declaration, not at every element.
    bindings: Vec<Binding>,
}

/// One namespace declaration (`xmlns` or `xmlns:prefix`).
struct Binding {
    /// The declared prefix; empty for the default namespace.
    prefix: Box<[u8]>,
    ns: Ns,
    /// The namespace name, as written (namespace names are compared as written: no entity
    /// expansion, as quick-xml's resolver did).
    uri: Box<[u8]>,
    /// The depth of the element that declares it.
    depth: usize,
}

/// The namespace of a namespace name.
fn known_ns(uri: &[u8]) -> Ns {
    match uri {
        b"http://schemas.microsoft.com/exchange/services/2006/messages" => Ns::M,
        b"http://schemas.microsoft.com/exchange/services/2006/types" => Ns::T,
        b"http://schemas.xmlsoap.org/soap/envelope/" => Ns::Soap11,
        b"http://www.w3.org/2003/05/soap-envelope" => Ns::Soap12,
        b"" => Ns::None,
        _ => Ns::Other,
    }
}

/// The prefix of a qualified name (empty without one).
fn prefix_of(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == b':') {
        Some(n) => &name[..n],
        None => &[],
    }
}

fn qname(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

fn is_ws(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_whitespace)
}

/// XML end-of-line handling: `\r\n` and lone `\r` become `\n` (before entity expansion, so a
/// `&#13;` survives).
fn normalize_newlines(s: Cow<'_, str>) -> Cow<'_, str> {
    if !s.contains('\r') {
        return s;
    }
    Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
}

fn append<'i>(acc: &mut Cow<'i, str>, piece: Cow<'i, str>) {
    if acc.is_empty() {
        *acc = piece;
    } else {
        acc.to_mut().push_str(&piece);
    }
}

impl<'i> Parser<'i> {
    fn new(text: &'i str) -> Self {
        let src = text.as_bytes();
        let mut r = Reader::from_reader(src);
        let c = r.config_mut();
        c.expand_empty_elements = true;
        c.check_end_names = true;
        c.allow_unmatched_ends = false;
        c.check_comments = true;
        c.trim_text(false);
        Parser {
            r,
            src,
            text,
            depth: 0,
            elements: 0,
            root_seen: false,
            bindings: Vec::new(),
        }
    }

    fn position(&self) -> Position {
        Position::at(self.src, self.r.buffer_position())
    }

    /// The innermost declaration of `prefix` in scope (empty: the default namespace).
    fn binding(&self, prefix: &[u8]) -> Option<&Binding> {
        self.bindings.iter().rev().find(|b| &*b.prefix == prefix)
    }

    /// `bytes`, a slice of the source, as the `str` it is (the source was checked whole).
    fn as_str(&self, bytes: &'i [u8]) -> Result<&'i str> {
        let start = (bytes.as_ptr() as usize).wrapping_sub(self.src.as_ptr() as usize);
        match start
            .checked_add(bytes.len())
            .and_then(|end| self.text.get(start..end))
        {
            Some(s) if s.as_ptr() == bytes.as_ptr() => Ok(s),
            _ => std::str::from_utf8(bytes).map_err(|_| self.malformed("invalid UTF-8")),
        }
    }

    fn malformed(&self, message: impl Into<String>) -> ParseError {
        ParseError::Malformed {
            position: self.position(),
            message: message.into(),
        }
    }

    fn schema(&self, message: impl Into<String>) -> ParseError {
        ParseError::Schema {
            message: message.into(),
            position: self.position(),
        }
    }

    fn xml_error(&self, e: quick_xml::Error) -> ParseError {
        ParseError::Malformed {
            position: Position::at(self.src, self.r.error_position()),
            message: e.to_string(),
        }
    }

    /// Next significant event. Enforces limits and document-level rules.
    fn next(&mut self) -> Result<Ev<'i>> {
        loop {
            let start_pos = self.r.buffer_position();
            let ev = match self.r.read_event() {
                Ok(x) => x,
                Err(e) => return Err(self.xml_error(e)),
            };
            match ev {
                Event::Start(e) => {
                    if self.depth == 0 {
                        if self.root_seen {
                            return Err(self.malformed(format!(
                                "content after the root element: a second root element '{}'",
                                qname(&e)
                            )));
                        }
                        self.root_seen = true;
                    }
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(ParseError::TooDeep);
                    }
                    self.elements += 1;
                    if self.elements > MAX_ELEMENTS {
                        return Err(ParseError::TooManyElements);
                    }
                    let mut count = 0usize;
                    for a in e.attributes().with_checks(false) {
                        let a = match a {
                            Ok(a) => a,
                            Err(err) => {
                                return Err(self.malformed(format!(
                                    "bad attribute on element '{}': {err}",
                                    qname(&e)
                                )))
                            }
                        };
                        count += 1;
                        if count > MAX_ATTRIBUTES {
                            return Err(ParseError::TooManyAttributes);
                        }
                        let key = a.key.as_ref();
                        let prefix = if key == b"xmlns" {
                            &[][..]
                        } else if let Some(prefix) = key.strip_prefix(b"xmlns:") {
                            if a.value.is_empty() {
                                return Err(self.malformed(format!(
                                    "the namespace prefix '{}' is declared with an empty name on element '{}'",
                                    String::from_utf8_lossy(prefix),
                                    qname(&e)
                                )));
                            }
                            prefix
                        } else {
                            continue;
                        };
                        self.bindings.push(Binding {
                            prefix: prefix.into(),
                            ns: known_ns(&a.value),
                            uri: a.value.as_ref().into(),
                            depth: self.depth,
                        });
                    }
                    let ns = match self.binding(prefix_of(e.name().as_ref())) {
                        Some(b) => b.ns,
                        None if !e.name().as_ref().contains(&b':') => Ns::None,
                        None if prefix_of(e.name().as_ref()) == b"xml" => Ns::Other,
                        None => {
                            return Err(self.malformed(format!(
                                "undeclared namespace prefix '{}' on element '{}'",
                                String::from_utf8_lossy(prefix_of(e.name().as_ref())),
                                qname(&e)
                            )))
                        }
                    };
                    return Ok(Ev::Start(ns, e));
                }
                Event::End(_) => {
                    while self.bindings.last().is_some_and(|b| b.depth == self.depth) {
                        self.bindings.pop();
                    }
                    self.depth -= 1;
                    return Ok(Ev::End);
                }
                Event::Empty(_) => unreachable!("expand_empty_elements is set"),
                Event::Text(t) => {
                    if self.depth == 0 {
                        if !is_ws(&t) {
                            return Err(self.malformed(if self.root_seen {
                                "text after the root element"
                            } else {
                                "text before the root element"
                            }));
                        }
                        continue;
                    }
                    return Ok(Ev::Text(t));
                }
                Event::CData(c) => {
                    if self.depth == 0 {
                        return Err(self.malformed("CDATA section outside the root element"));
                    }
                    return Ok(Ev::CData(c));
                }
                Event::Comment(_) | Event::PI(_) => continue,
                Event::Decl(d) => {
                    if start_pos != 0 {
                        return Err(
                            self.malformed("XML declaration not at the start of the document")
                        );
                    }
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| self.malformed(e.to_string()))?;
                        if !enc.eq_ignore_ascii_case(b"utf-8") && !enc.eq_ignore_ascii_case(b"utf8")
                        {
                            return Err(ParseError::UnsupportedEncoding(
                                String::from_utf8_lossy(&enc).into_owned(),
                            ));
                        }
                    }
                    continue;
                }
                Event::DocType(_) => return Err(ParseError::DtdForbidden),
                Event::Eof => {
                    if self.depth > 0 {
                        return Err(self.malformed(format!(
                            "unexpected end of document: {} element(s) not closed (truncated request?)",
                            self.depth
                        )));
                    }
                    if !self.root_seen {
                        return Err(self.malformed("no root element"));
                    }
                    return Ok(Ev::Eof);
                }
            }
        }
    }

    /// After the root element: only whitespace, comments and PIs may follow.
    fn finish(&mut self) -> Result<()> {
        match self.next()? {
            Ev::Eof => Ok(()),
            _ => Err(self.malformed("content after the root element")),
        }
    }

    /// Next child element of a complex-content element, or `None` at its end tag.
    /// Non-whitespace text in complex content is a schema error.
    fn next_child(&mut self, parent: &str) -> Result<Option<(Ns, BytesStart<'i>)>> {
        loop {
            match self.next()? {
                Ev::Start(ns, e) => return Ok(Some((ns, e))),
                Ev::End => return Ok(None),
                Ev::Text(t) => {
                    if !is_ws(&t) {
                        return Err(self.schema(format!(
                            "the element '{parent}' cannot contain text, only child elements"
                        )));
                    }
                }
                Ev::CData(c) => {
                    if !is_ws(&c) {
                        return Err(self.schema(format!(
                            "the element '{parent}' cannot contain text, only child elements"
                        )));
                    }
                }
                Ev::Eof => return Err(self.malformed("unexpected end of document")),
            }
        }
    }

    /// Skip the rest of the element whose start tag was just read (whole subtree).
    fn skip(&mut self) -> Result<()> {
        let mut d = 0usize;
        loop {
            match self.next()? {
                Ev::Start(..) => d += 1,
                Ev::End => {
                    if d == 0 {
                        return Ok(());
                    }
                    d -= 1;
                }
                Ev::Text(t) => {
                    if t.contains(&b'&') {
                        // Still reject unknown entity references.
                        self.unescape(t)?;
                    }
                }
                Ev::CData(_) => {}
                Ev::Eof => return Err(self.malformed("unexpected end of document")),
            }
        }
    }

    fn unescape(&self, t: BytesText<'i>) -> Result<Cow<'i, str>> {
        let raw: Cow<'i, str> = match t.into_inner() {
            Cow::Borrowed(b) => Cow::Borrowed(self.as_str(b)?),
            Cow::Owned(v) => {
                Cow::Owned(String::from_utf8(v).map_err(|_| self.malformed("invalid UTF-8"))?)
            }
        };
        let raw = normalize_newlines(raw);
        let map = |e: quick_xml::escape::EscapeError| {
            self.malformed(format!("bad entity or character reference: {e}"))
        };
        match raw {
            Cow::Borrowed(s) => quick_xml::escape::unescape(s).map_err(map),
            Cow::Owned(s) => quick_xml::escape::unescape(&s)
                .map(|c| Cow::Owned(c.into_owned()))
                .map_err(map),
        }
    }

    /// Text content of a simple-content element whose start tag was just read; consumes the
    /// end tag. Child elements are a schema error.
    fn text(&mut self, el: &str) -> Result<Cow<'i, str>> {
        let mut acc: Cow<'i, str> = Cow::Borrowed("");
        loop {
            match self.next()? {
                Ev::Text(t) => {
                    let s = self.unescape(t)?;
                    append(&mut acc, s);
                }
                Ev::CData(c) => {
                    let s: Cow<'i, str> = match c.into_inner() {
                        Cow::Borrowed(b) => Cow::Borrowed(self.as_str(b)?),
                        Cow::Owned(v) => Cow::Owned(
                            String::from_utf8(v).map_err(|_| self.malformed("invalid UTF-8"))?,
                        ),
                    };
                    append(&mut acc, normalize_newlines(s));
                }
                Ev::Start(_, e) => {
                    return Err(self.schema(format!(
                        "the element '{el}' must contain text, not the child element '{}'",
                        qname(&e)
                    )))
                }
                Ev::End => return Ok(acc),
                Ev::Eof => return Err(self.malformed("unexpected end of document")),
            }
        }
    }

    fn string(&mut self, el: &str) -> Result<String> {
        Ok(self.text(el)?.into_owned())
    }

    /// Value of the unqualified attribute `name`.
    fn attr<'e>(&self, e: &'e BytesStart<'_>, name: &[u8]) -> Result<Option<Cow<'e, str>>> {
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|err| self.malformed(err.to_string()))?;
            if a.key.as_ref() == name {
                return a.unescape_value().map(Some).map_err(|err| {
                    self.malformed(format!(
                        "bad value of attribute '{}' on '{}': {err}",
                        String::from_utf8_lossy(name),
                        qname(e)
                    ))
                });
            }
        }
        Ok(None)
    }

    fn required_attr(&self, e: &BytesStart<'_>, name: &str) -> Result<String> {
        match self.attr(e, name.as_bytes())? {
            Some(v) => Ok(v.into_owned()),
            None => Err(self.schema(format!(
                "the required attribute '{name}' is missing on '{}'",
                qname(e)
            ))),
        }
    }

    fn bool(&mut self, el: &str) -> Result<bool> {
        let t = self.text(el)?;
        parse_bool(&t).ok_or_else(|| {
            self.schema(format!(
                "the value '{}' of '{el}' is not a valid boolean (true, false, 1, 0)",
                t.trim()
            ))
        })
    }

    fn datetime(&mut self, el: &str) -> Result<DateTime<Utc>> {
        let t = self.text(el)?;
        parse_xs_datetime(&t).ok_or_else(|| {
            self.schema(format!(
                "the value '{}' of '{el}' is not a valid xs:dateTime",
                t.trim()
            ))
        })
    }

    fn base64(&mut self, el: &str) -> Result<Vec<u8>> {
        let t = self.text(el)?;
        decode_base64(t.as_bytes()).map_err(|e| {
            self.schema(format!(
                "the content of '{el}' is not valid base64Binary: {e}"
            ))
        })
    }

    // -----------------------------------------------------------------------------------------
    // SOAP structure
    // -----------------------------------------------------------------------------------------

    fn parse_header(&mut self, h: &mut SoapHeader) -> Result<()> {
        while let Some((ns, e)) = self.next_child("soap:Header")? {
            match (ns, e.local_name().as_ref()) {
                (Ns::T, b"RequestServerVersion") => {
                    h.request_server_version = self.attr(&e, b"Version")?.map(Cow::into_owned);
                    self.skip()?;
                }
                (Ns::T, b"ExchangeImpersonation") => {
                    while let Some((ns, c)) = self.next_child("t:ExchangeImpersonation")? {
                        if ns == Ns::T && c.local_name().as_ref() == b"ConnectingSID" {
                            while let Some((ns, s)) = self.next_child("t:ConnectingSID")? {
                                match (ns, s.local_name().as_ref()) {
                                    (Ns::T, b"PrimarySmtpAddress") => {
                                        h.impersonated = Some(self.string("t:PrimarySmtpAddress")?)
                                    }
                                    (Ns::T, b"SmtpAddress") => {
                                        h.impersonated = Some(self.string("t:SmtpAddress")?)
                                    }
                                    // A user principal name: every user's UPN is one of its
                                    // addresses (`ConnectingIdType.PrincipalName`).
                                    (Ns::T, b"PrincipalName") => {
                                        h.impersonated = Some(self.string("t:PrincipalName")?)
                                    }
                                    _ => self.skip()?,
                                }
                            }
                        } else {
                            self.skip()?;
                        }
                    }
                }
                _ => self.skip()?,
            }
        }
        Ok(())
    }

    fn parse_body(&mut self) -> Result<Operation> {
        let Some((ns, e)) = self.next_child("soap:Body")? else {
            return Err(ParseError::EmptyBody);
        };
        let op = if ns == Ns::M {
            match e.local_name().as_ref() {
                b"CreateItem" => Operation::CreateItem(self.parse_create_item(&e)?),
                b"GetFolder" => Operation::GetFolder(self.parse_get_folder()?),
                b"ConvertId" => Operation::ConvertId {
                    source_ids: self.parse_convert_id()?,
                },
                b"CreateAttachment" => Operation::CreateAttachment(self.parse_create_attachment()?),
                other => {
                    let name = String::from_utf8_lossy(other).into_owned();
                    self.skip()?;
                    Operation::Unsupported(name)
                }
            }
        } else {
            let namespace = self
                .binding(prefix_of(e.name().as_ref()))
                .map(|b| String::from_utf8_lossy(&b.uri).into_owned())
                .unwrap_or_default();
            return Err(ParseError::UnknownOperation {
                namespace,
                name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
            });
        };
        // Anything after the operation element in the Body is ignored.
        while self.next_child("soap:Body")?.is_some() {
            self.skip()?;
        }
        Ok(op)
    }

    // -----------------------------------------------------------------------------------------
    // Operations
    // -----------------------------------------------------------------------------------------

    fn parse_create_item(&mut self, e: &BytesStart<'_>) -> Result<CreateItem> {
        let mut ci = CreateItem {
            message_disposition: self.attr(e, b"MessageDisposition")?.map(Cow::into_owned),
            ..Default::default()
        };
        while let Some((ns, c)) = self.next_child("m:CreateItem")? {
            match (ns, c.local_name().as_ref()) {
                (Ns::M, b"SavedItemFolderId") => {
                    ci.saved_item_folder = Some(self.parse_target_folder("m:SavedItemFolderId")?)
                }
                (Ns::M, b"Items") => {
                    while let Some((ns, it)) = self.next_child("m:Items")? {
                        if ns == Ns::T && it.local_name().as_ref() == b"Message" {
                            ci.items.push(self.parse_message()?);
                        } else {
                            return Err(self.schema(format!(
                                "the item type '{}' is not supported by this service: m:Items may only contain t:Message",
                                qname(&it)
                            )));
                        }
                    }
                }
                _ => self.skip()?,
            }
        }
        Ok(ci)
    }

    fn parse_get_folder(&mut self) -> Result<GetFolder> {
        let mut gf = GetFolder::default();
        let mut seen_ids = false;
        while let Some((ns, c)) = self.next_child("m:GetFolder")? {
            if ns == Ns::M && c.local_name().as_ref() == b"FolderIds" {
                seen_ids = true;
                while let Some((ns, f)) = self.next_child("m:FolderIds")? {
                    gf.folders.push(self.parse_folder_ref(ns, &f)?);
                }
            } else {
                self.skip()?;
            }
        }
        if !seen_ids {
            return Err(self.schema("m:GetFolder requires the element m:FolderIds"));
        }
        Ok(gf)
    }

    /// Counts the ids of `m:SourceIds` (`t:AlternateId` and the public folder forms): the
    /// service converts none, but answers each.
    fn parse_convert_id(&mut self) -> Result<usize> {
        let mut ids = 0;
        while let Some((ns, c)) = self.next_child("m:ConvertId")? {
            if ns == Ns::M && c.local_name().as_ref() == b"SourceIds" {
                while self.next_child("m:SourceIds")?.is_some() {
                    ids += 1;
                    self.skip()?;
                }
            } else {
                self.skip()?;
            }
        }
        Ok(ids)
    }

    fn parse_create_attachment(&mut self) -> Result<CreateAttachment> {
        let mut ca = CreateAttachment::default();
        let mut parent = None;
        while let Some((ns, c)) = self.next_child("m:CreateAttachment")? {
            match (ns, c.local_name().as_ref()) {
                (Ns::M, b"ParentItemId") => {
                    parent = Some(self.required_attr(&c, "Id")?);
                    self.skip()?;
                }
                (Ns::M, b"Attachments") => {
                    self.parse_attachments("m:Attachments", &mut ca.attachments)?
                }
                _ => self.skip()?,
            }
        }
        match parent {
            Some(p) => ca.parent_item_id = p,
            None => {
                return Err(self.schema("m:CreateAttachment requires the element m:ParentItemId"))
            }
        }
        Ok(ca)
    }

    /// `m:SavedItemFolderId` / `m:ParentFolderId`: exactly one folder id element.
    fn parse_target_folder(&mut self, el: &str) -> Result<FolderRef> {
        let mut found = None;
        while let Some((ns, f)) = self.next_child(el)? {
            if found.is_some() {
                return Err(self.schema(format!("'{el}' must contain exactly one folder id")));
            }
            found = Some(self.parse_folder_ref(ns, &f)?);
        }
        found.ok_or_else(|| {
            self.schema(format!(
                "'{el}' must contain a t:FolderId or t:DistinguishedFolderId"
            ))
        })
    }

    fn parse_folder_ref(&mut self, ns: Ns, e: &BytesStart<'_>) -> Result<FolderRef> {
        match (ns, e.local_name().as_ref()) {
            (Ns::T, b"DistinguishedFolderId") => {
                let id = self.required_attr(e, "Id")?;
                let mut mailbox = None;
                while let Some((ns, c)) = self.next_child("t:DistinguishedFolderId")? {
                    if ns == Ns::T && c.local_name().as_ref() == b"Mailbox" {
                        mailbox = self.parse_mailbox()?.email_address;
                    } else {
                        self.skip()?;
                    }
                }
                Ok(FolderRef::Distinguished { id, mailbox })
            }
            (Ns::T, b"FolderId") => {
                let id = self.required_attr(e, "Id")?;
                self.skip()?;
                Ok(FolderRef::Id(id))
            }
            _ => Err(self.schema(format!(
                "the folder id element '{}' is not supported (use t:FolderId or t:DistinguishedFolderId)",
                qname(e)
            ))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Items
    // -----------------------------------------------------------------------------------------

    fn parse_message(&mut self) -> Result<Message> {
        let mut m = Message::default();
        while let Some((ns, c)) = self.next_child("t:Message")? {
            if ns != Ns::T {
                self.skip()?;
                continue;
            }
            match c.local_name().as_ref() {
                b"MimeContent" => {
                    let character_set = self.attr(&c, b"CharacterSet")?.map(Cow::into_owned);
                    let bytes = self.base64("t:MimeContent")?;
                    m.mime_content = Some(MimeContent {
                        character_set,
                        bytes,
                    });
                }
                b"ItemClass" => m.item_class = Some(self.string("t:ItemClass")?),
                b"Subject" => m.subject = Some(self.string("t:Subject")?),
                b"Body" => {
                    let body_type = match self.attr(&c, b"BodyType")? {
                        None => BodyType::Text,
                        Some(v) if v.trim().eq_ignore_ascii_case("text") => BodyType::Text,
                        Some(v) if v.trim().eq_ignore_ascii_case("html") => BodyType::Html,
                        Some(v) => {
                            return Err(self.schema(format!(
                                "the BodyType '{v}' is invalid (expected Text or HTML)"
                            )))
                        }
                    };
                    let text = self.string("t:Body")?;
                    m.body = Some(Body { body_type, text });
                }
                b"From" => m.from = self.parse_single_mailbox("t:From")?,
                b"Sender" => m.sender = self.parse_single_mailbox("t:Sender")?,
                b"ToRecipients" => self.parse_recipients("t:ToRecipients", &mut m.to)?,
                b"CcRecipients" => self.parse_recipients("t:CcRecipients", &mut m.cc)?,
                b"BccRecipients" => self.parse_recipients("t:BccRecipients", &mut m.bcc)?,
                b"DateTimeSent" => m.date_time_sent = Some(self.datetime("t:DateTimeSent")?),
                b"DateTimeCreated" => {
                    m.date_time_created = Some(self.datetime("t:DateTimeCreated")?)
                }
                b"InternetMessageId" => {
                    m.internet_message_id = Some(self.string("t:InternetMessageId")?)
                }
                b"ExtendedProperty" => {
                    let p = self.parse_extended_property()?;
                    m.extended_properties.push(p);
                }
                b"Attachments" => self.parse_attachments("t:Attachments", &mut m.attachments)?,
                _ => self.skip()?,
            }
        }
        Ok(m)
    }

    fn parse_mailbox(&mut self) -> Result<Mailbox> {
        let mut mb = Mailbox::default();
        while let Some((ns, c)) = self.next_child("t:Mailbox")? {
            match (ns, c.local_name().as_ref()) {
                (Ns::T, b"Name") => mb.name = Some(self.string("t:Name")?),
                (Ns::T, b"EmailAddress") => mb.email_address = Some(self.string("t:EmailAddress")?),
                (Ns::T, b"RoutingType") => mb.routing_type = Some(self.string("t:RoutingType")?),
                _ => self.skip()?,
            }
        }
        Ok(mb)
    }

    fn parse_single_mailbox(&mut self, el: &str) -> Result<Option<Mailbox>> {
        let mut out = None;
        while let Some((ns, c)) = self.next_child(el)? {
            if ns == Ns::T && c.local_name().as_ref() == b"Mailbox" {
                out = Some(self.parse_mailbox()?);
            } else {
                self.skip()?;
            }
        }
        Ok(out)
    }

    fn parse_recipients(&mut self, el: &str, out: &mut Vec<Mailbox>) -> Result<()> {
        while let Some((ns, c)) = self.next_child(el)? {
            if ns == Ns::T && c.local_name().as_ref() == b"Mailbox" {
                out.push(self.parse_mailbox()?);
            } else {
                self.skip()?;
            }
        }
        Ok(())
    }

    fn parse_extended_property(&mut self) -> Result<ExtendedProperty> {
        let mut p = ExtendedProperty::default();
        let mut have_uri = false;
        while let Some((ns, c)) = self.next_child("t:ExtendedProperty")? {
            match (ns, c.local_name().as_ref()) {
                (Ns::T, b"ExtendedFieldURI") => {
                    have_uri = true;
                    self.parse_extended_field_uri(&c, &mut p)?;
                    self.skip()?;
                }
                (Ns::T, b"Value") => p.values.push(self.string("t:Value")?),
                (Ns::T, b"Values") => {
                    while let Some((ns, v)) = self.next_child("t:Values")? {
                        if ns == Ns::T && v.local_name().as_ref() == b"Value" {
                            p.values.push(self.string("t:Value")?);
                        } else {
                            return Err(self.schema(format!(
                                "t:Values may only contain t:Value, not '{}'",
                                qname(&v)
                            )));
                        }
                    }
                }
                _ => self.skip()?,
            }
        }
        if !have_uri {
            return Err(self.schema("t:ExtendedProperty requires a t:ExtendedFieldURI"));
        }
        Ok(p)
    }

    fn parse_extended_field_uri(&self, e: &BytesStart<'_>, p: &mut ExtendedProperty) -> Result<()> {
        let mut have_type = false;
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|err| self.malformed(err.to_string()))?;
            let key = a.key;
            let v = a.unescape_value().map_err(|err| {
                self.malformed(format!("bad attribute value on t:ExtendedFieldURI: {err}"))
            })?;
            match key.as_ref() {
                b"PropertyTag" => {
                    p.property_tag = Some(parse_property_tag(&v).ok_or_else(|| {
                        self.schema(format!(
                            "the PropertyTag '{v}' is invalid: it must be a hexadecimal (0x1A) or decimal (26) number"
                        ))
                    })?)
                }
                b"PropertyType" => {
                    have_type = true;
                    p.property_type = v.trim().to_owned();
                }
                b"PropertyName" => p.property_name = Some(v.into_owned()),
                b"PropertyId" => {
                    p.property_id = Some(v.trim().parse::<i64>().map_err(|_| {
                        self.schema(format!("the PropertyId '{v}' is not a valid integer"))
                    })?)
                }
                b"PropertySetId" => p.property_set_id = Some(v.into_owned()),
                b"DistinguishedPropertySetId" => {
                    p.distinguished_property_set_id = Some(v.into_owned())
                }
                _ => {}
            }
        }
        if !have_type {
            return Err(self
                .schema("the required attribute 'PropertyType' is missing on t:ExtendedFieldURI"));
        }
        Ok(())
    }

    fn parse_attachments(&mut self, el: &str, out: &mut Vec<FileAttachment>) -> Result<()> {
        while let Some((ns, c)) = self.next_child(el)? {
            match (ns, c.local_name().as_ref()) {
                (Ns::T, b"FileAttachment") => out.push(self.parse_file_attachment()?),
                (Ns::T, b"ItemAttachment") => {
                    return Err(self.schema(
                        "t:ItemAttachment is not supported by this service; use t:FileAttachment",
                    ))
                }
                _ => {
                    return Err(self.schema(format!(
                        "the attachment type '{}' is not supported; use t:FileAttachment",
                        qname(&c)
                    )))
                }
            }
        }
        Ok(())
    }

    fn parse_file_attachment(&mut self) -> Result<FileAttachment> {
        let mut a = FileAttachment::default();
        while let Some((ns, c)) = self.next_child("t:FileAttachment")? {
            if ns != Ns::T {
                self.skip()?;
                continue;
            }
            match c.local_name().as_ref() {
                b"Name" => a.name = Some(self.string("t:Name")?),
                b"ContentType" => a.content_type = Some(self.string("t:ContentType")?),
                b"ContentId" => a.content_id = Some(self.string("t:ContentId")?),
                b"IsInline" => a.is_inline = self.bool("t:IsInline")?,
                b"Content" => a.content = self.base64("t:Content")?,
                _ => self.skip()?,
            }
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------------------------

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode base64Binary, ignoring whitespace (clients wrap lines), padding optional, the last
/// symbol's unused bits zero.
///
/// The SIMD decoder (`base64-simd`, ~8x the `base64` crate's speed: a 64 KB attachment's
/// content took ~110 µs, a fifth of its request) decodes what it accepts; what it refuses is
/// decoded by the `base64` crate, whose verdict and error message stand. Both are strict
/// decoders of the same alphabet, so the first accepts nothing the second refuses
/// (`simd_and_scalar_decoding_agree`).
pub(crate) fn decode_base64(b: &[u8]) -> std::result::Result<Vec<u8>, base64::DecodeError> {
    let cleaned: Cow<'_, [u8]> = if b.iter().any(u8::is_ascii_whitespace) {
        b.iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<Vec<u8>>()
            .into()
    } else {
        b.into()
    };
    // Padded when its length is a multiple of four (or needing none), unpadded otherwise.
    let simd = if cleaned.len().is_multiple_of(4) {
        base64_simd::STANDARD
    } else {
        base64_simd::STANDARD_NO_PAD
    };
    match simd.decode_to_vec(&cleaned) {
        Ok(decoded) => Ok(decoded),
        Err(_) => BASE64.decode(&cleaned),
    }
}

/// xs:boolean: `true`, `false`, `1`, `0` (case-insensitive, surrounding whitespace ignored).
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s == "1" || s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s == "0" || s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `0x1a`, `0X0E07` (hex) or `57` (decimal).
pub(crate) fn parse_property_tag(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

/// xs:dateTime: `YYYY-MM-DDThh:mm:ss[.f+][Z|(+|-)hh:mm]`; no zone means UTC.
pub(crate) fn parse_xs_datetime(s: &str) -> Option<DateTime<Utc>> {
    let b = s.trim().as_bytes();
    fn num(b: &[u8], from: usize, len: usize) -> Option<u32> {
        let d = b.get(from..from + len)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0u32, |acc, &c| acc * 10 + (c - b'0') as u32))
    }
    // Year: 4 digits (years beyond 9999 are not meaningful here).
    let year = num(b, 0, 4)? as i32;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(b, 5, 2)?;
    let day = num(b, 8, 2)?;
    if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let hour = num(b, 11, 2)?;
    let minute = num(b, 14, 2)?;
    let second = num(b, 17, 2)?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(b, i + 1, 2)?;
            let om = num(b, i + 4, 2)?;
            if oh > 14 || om > 59 || (oh == 14 && om != 0) {
                return None;
            }
            let o = (oh * 3600 + om * 60) as i64;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let naive = if hour == 24 {
        // xs:dateTime allows 24:00:00 meaning the start of the next day.
        if minute != 0 || second != 0 || nanos != 0 {
            return None;
        }
        date.succ_opt()?.and_hms_opt(0, 0, 0)?
    } else {
        date.and_time(NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?)
    };
    let utc = naive.checked_sub_signed(Duration::seconds(offset_secs))?;
    Some(utc.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(rel: &str) -> Vec<u8> {
        let path = format!(
            "{}/../shared/conformance/ews/{rel}",
            env!("CARGO_MANIFEST_DIR")
        );
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        http_body(&raw).to_vec()
    }

    fn http_body(raw: &[u8]) -> &[u8] {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            return &raw[i + 4..];
        }
        let i = raw
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("no blank line");
        &raw[i + 2..]
    }

    const ENV_OPEN: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">"#;

    fn wrap_message(inner: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>{ENV_OPEN}<s:Body><m:CreateItem MessageDisposition="SaveOnly"><m:Items><t:Message>{inner}</t:Message></m:Items></m:CreateItem></s:Body></s:Envelope>"#
        )
    }

    fn one_message(inner: &str) -> Result<Message> {
        match parse_request(wrap_message(inner).as_bytes())?.operation {
            Operation::CreateItem(mut ci) => Ok(ci.items.remove(0)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn is_schema(r: Result<impl fmt::Debug>) -> bool {
        matches!(r, Err(ParseError::Schema { .. }))
    }

    #[test]
    fn convert_id_capture() {
        let req = parse_request(&capture("exchangelib/001-ConvertId.http")).unwrap();
        assert_eq!(req.operation, Operation::ConvertId { source_ids: 1 });
        assert_eq!(
            req.header.request_server_version.as_deref(),
            Some("Exchange2016")
        );
        assert_eq!(
            req.header.impersonated.as_deref(),
            Some("alice@contoso.com")
        );
    }

    #[test]
    fn get_folder_captures() {
        for (f, id) in [
            ("exchangelib/002-GetFolder.http", "root"),
            ("exchangelib/003-GetFolder.http", "inbox"),
            ("exchangelib-version-pinned/001-GetFolder.http", "root"),
            ("exchangelib-version-pinned/002-GetFolder.http", "inbox"),
        ] {
            let req = parse_request(&capture(f)).unwrap();
            assert_eq!(
                req.operation,
                Operation::GetFolder(GetFolder {
                    folders: vec![FolderRef::Distinguished {
                        id: id.into(),
                        mailbox: Some("alice@contoso.com".into())
                    }]
                }),
                "{f}"
            );
        }
    }

    #[test]
    fn create_item_html_attachment_props() {
        for f in [
            "exchangelib/004-CreateItem.http",
            "exchangelib-version-pinned/003-CreateItem.http",
        ] {
            let req = parse_request(&capture(f)).unwrap();
            let Operation::CreateItem(ci) = req.operation else {
                panic!()
            };
            assert_eq!(ci.message_disposition.as_deref(), Some("SaveOnly"));
            assert_eq!(
                ci.saved_item_folder,
                Some(FolderRef::Distinguished {
                    id: "inbox".into(),
                    mailbox: Some("alice@contoso.com".into())
                })
            );
            assert_eq!(ci.items.len(), 1);
            let m = &ci.items[0];
            assert_eq!(
                m.subject.as_deref(),
                Some("Tweet from @contoso: hello world & <friends>")
            );
            let body = m.body.as_ref().unwrap();
            assert_eq!(body.body_type, BodyType::Html);
            assert_eq!(
                body.text,
                "<html><body><p>Hello <b>world</b> #archiving</p></body></html>"
            );
            assert_eq!(m.attachments.len(), 1);
            assert_eq!(m.attachments[0].name.as_deref(), Some("tweet.json"));
            assert_eq!(
                m.attachments[0].content_type.as_deref(),
                Some("application/json")
            );
            assert_eq!(
                m.attachments[0].content,
                br#"{"id": 1, "text": "hello world"}"#
            );
            assert!(!m.attachments[0].is_inline);
            let tags: Vec<_> = m
                .extended_properties
                .iter()
                .map(|p| {
                    (
                        p.property_tag,
                        p.property_type.as_str(),
                        p.values[0].as_str(),
                    )
                })
                .collect();
            assert_eq!(
                tags,
                vec![
                    (Some(3591), "Integer", "1"),
                    (Some(0xe06), "SystemTime", "2024-03-01T12:00:00Z"),
                    (Some(0x39), "SystemTime", "2024-03-01T12:00:00Z"),
                    (Some(26), "String", "IPM.Note.Twitter.Tweet"),
                ]
            );
            assert_eq!(m.to.len(), 1);
            assert_eq!(m.to[0].name.as_deref(), Some("Alice"));
            assert_eq!(m.to[0].email_address.as_deref(), Some("alice@contoso.com"));
            assert_eq!(m.to[0].routing_type.as_deref(), Some("SMTP"));
            assert_eq!(m.cc[0].email_address.as_deref(), Some("bob@contoso.com"));
            assert!(m.bcc.is_empty());
            let from = m.from.as_ref().unwrap();
            assert_eq!(from.name.as_deref(), Some("Contoso (Twitter)"));
            assert_eq!(
                from.email_address.as_deref(),
                Some("contoso@twitter.example")
            );
            assert!(m.mime_content.is_none());
        }
    }

    #[test]
    fn create_item_batch() {
        let req = parse_request(&capture("exchangelib/005-CreateItem.http")).unwrap();
        let Operation::CreateItem(ci) = req.operation else {
            panic!()
        };
        assert_eq!(ci.items.len(), 3);
        for (i, m) in ci.items.iter().enumerate() {
            assert_eq!(
                m.subject.as_deref(),
                Some(&*format!("Chat message {}", i + 1))
            );
            assert_eq!(
                m.body,
                Some(Body {
                    body_type: BodyType::Text,
                    text: format!("plain text chat line {}", i + 1)
                })
            );
            assert_eq!(
                m.from.as_ref().unwrap().email_address.as_deref(),
                Some(&*format!("user{i}@chat.example"))
            );
        }
    }

    #[test]
    fn create_item_mime_content() {
        let req = parse_request(&capture("exchangelib/006-CreateItem.http")).unwrap();
        let Operation::CreateItem(ci) = req.operation else {
            panic!()
        };
        let m = &ci.items[0];
        let mime = m.mime_content.as_ref().unwrap();
        assert!(mime
            .bytes
            .starts_with(b"From: SMS Gateway <+15551234567@sms.example>\r\n"));
        let mm = crate::ews::mime::parse_mime(&mime.bytes).unwrap();
        assert_eq!(
            mm.from.unwrap().email_address.as_deref(),
            Some("+15551234567@sms.example")
        );
        assert_eq!(mm.to[0].email_address.as_deref(), Some("alice@contoso.com"));
        assert_eq!(mm.subject.as_deref(), Some("SMS from +1 555 123 4567"));
        assert_eq!(m.extended_properties[0].values, vec!["IPM.Note.SMS"]);
    }

    #[test]
    fn prefixes_and_default_namespace() {
        let docs = [
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetFolder xmlns="http://schemas.microsoft.com/exchange/services/2006/messages"><FolderIds><DistinguishedFolderId xmlns="http://schemas.microsoft.com/exchange/services/2006/types" Id="inbox"/></FolderIds></GetFolder></soap:Body></soap:Envelope>"#,
            r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:mes="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:typ="http://schemas.microsoft.com/exchange/services/2006/types"><soapenv:Header/><soapenv:Body><mes:GetFolder><mes:FolderIds><typ:DistinguishedFolderId Id="inbox"></typ:DistinguishedFolderId></mes:FolderIds></mes:GetFolder></soapenv:Body></soapenv:Envelope>"#,
            r#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
                 <Body>
                   <m:GetFolder xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
                     <m:FolderShape><t:BaseShape>AllProperties</t:BaseShape></m:FolderShape>
                     <m:FolderIds>
                       <t:DistinguishedFolderId Id="inbox"/>
                     </m:FolderIds>
                   </m:GetFolder>
                 </Body>
               </Envelope>
               <!-- trailing comment -->
               "#,
        ];
        for d in docs {
            let req = parse_request(d.as_bytes()).unwrap_or_else(|e| panic!("{e}: {d}"));
            assert_eq!(
                req.operation,
                Operation::GetFolder(GetFolder {
                    folders: vec![FolderRef::Distinguished {
                        id: "inbox".into(),
                        mailbox: None
                    }]
                })
            );
        }
        // Wrong namespace for the envelope.
        let bad = r#"<s:Envelope xmlns:s="urn:not-soap"><s:Body/></s:Envelope>"#;
        assert_eq!(
            parse_request(bad.as_bytes()),
            Err(ParseError::NotSoapEnvelope)
        );
        // Undeclared prefix.
        let bad = r#"<s:Envelope><s:Body/></s:Envelope>"#;
        assert!(matches!(
            parse_request(bad.as_bytes()),
            Err(ParseError::Malformed { .. })
        ));
        // A declaration's scope ends with its element: the prefix is undeclared after it.
        let bad = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><t:X xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"/><t:Y/></s:Header><s:Body/></s:Envelope>"#;
        let err = parse_request(bad.as_bytes()).expect_err("out of scope");
        assert!(
            err.violation().contains("undeclared namespace prefix 't'"),
            "{err:?}"
        );
        // An inner declaration of a prefix hides the outer one, until its element ends; a
        // default namespace declared empty undeclares it.
        let d = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="urn:other"><s:Body><m:GetFolder xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:FolderIds xmlns=""><t:DistinguishedFolderId xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" Id="inbox"/></m:FolderIds></m:GetFolder><m:After/></s:Body></s:Envelope>"#;
        let req = parse_request(d.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(req.operation, Operation::GetFolder(_)));
        let d = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="urn:other"><s:Body><m:GetFolder/></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_request(d.as_bytes()),
            Err(ParseError::UnknownOperation {
                namespace: "urn:other".into(),
                name: "GetFolder".into()
            })
        );
        // A prefix cannot be declared with an empty namespace name (Namespaces in XML 1.0).
        let bad = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body xmlns:m=""/></s:Envelope>"#;
        assert!(matches!(
            parse_request(bad.as_bytes()),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn folder_id_and_create_attachment() {
        let d = format!(
            r#"{ENV_OPEN}<s:Body><m:CreateAttachment><m:ParentItemId Id="AAMk=" ChangeKey="x"/><m:Attachments><t:FileAttachment><t:Name>a &amp; b.txt</t:Name><t:IsInline>TRUE</t:IsInline><t:ContentId>cid1</t:ContentId><t:Content>aGVs
bG8=</t:Content></t:FileAttachment></m:Attachments></m:CreateAttachment></s:Body></s:Envelope>"#
        );
        let req = parse_request(d.as_bytes()).unwrap();
        assert_eq!(
            req.operation,
            Operation::CreateAttachment(CreateAttachment {
                parent_item_id: "AAMk=".into(),
                attachments: vec![FileAttachment {
                    name: Some("a & b.txt".into()),
                    content_type: None,
                    content_id: Some("cid1".into()),
                    is_inline: true,
                    content: b"hello".to_vec()
                }]
            })
        );
        let d = format!(
            r#"{ENV_OPEN}<s:Body><m:CreateItem><m:SavedItemFolderId><t:FolderId Id="F1"/></m:SavedItemFolderId><m:Items/></m:CreateItem></s:Body></s:Envelope>"#
        );
        let Operation::CreateItem(ci) = parse_request(d.as_bytes()).unwrap().operation else {
            panic!()
        };
        assert_eq!(ci.saved_item_folder, Some(FolderRef::Id("F1".into())));
        assert!(ci.items.is_empty());
        let d = format!(
            r#"{ENV_OPEN}<s:Body><m:CreateAttachment><m:Attachments><t:ItemAttachment/></m:Attachments></m:CreateAttachment></s:Body></s:Envelope>"#
        );
        assert!(is_schema(parse_request(d.as_bytes())));
    }

    #[test]
    fn property_tags() {
        let m = one_message(
            r#"<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0X39" PropertyType="SystemTime"/><t:Value>2024-01-01T00:00:00Z</t:Value></t:ExtendedProperty>
               <t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0x0E07" PropertyType="Integer"/><t:Value>1</t:Value></t:ExtendedProperty>
               <t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="57" PropertyType="SystemTime"/><t:Value>x</t:Value></t:ExtendedProperty>
               <t:ExtendedProperty><t:ExtendedFieldURI DistinguishedPropertySetId="PublicStrings" PropertyName="Foo" PropertyType="StringArray"/><t:Values><t:Value>a</t:Value><t:Value><![CDATA[<b>]]></t:Value></t:Values></t:ExtendedProperty>
               <t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="00020329-0000-0000-C000-000000000046" PropertyId="34" PropertyType="Integer"/><t:Value>7</t:Value></t:ExtendedProperty>"#,
        )
        .unwrap();
        let p = &m.extended_properties;
        assert_eq!(p[0].property_tag, Some(0x39));
        assert_eq!(p[1].property_tag, Some(0xe07));
        assert_eq!(p[2].property_tag, Some(57));
        assert_eq!(p[3].property_tag, None);
        assert_eq!(p[3].property_name.as_deref(), Some("Foo"));
        assert_eq!(
            p[3].distinguished_property_set_id.as_deref(),
            Some("PublicStrings")
        );
        assert_eq!(p[3].values, vec!["a", "<b>"]);
        assert_eq!(p[4].property_id, Some(34));
        assert_eq!(
            p[4].property_set_id.as_deref(),
            Some("00020329-0000-0000-C000-000000000046")
        );
        for bad in ["0xZZ", "abc", "0x", "", "-1", "1.5"] {
            let r = one_message(&format!(
                r#"<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="{bad}" PropertyType="String"/><t:Value>v</t:Value></t:ExtendedProperty>"#
            ));
            assert!(is_schema(r), "{bad}");
        }
        assert_eq!(parse_property_tag("0x1a"), Some(26));
        assert_eq!(parse_property_tag(" 26 "), Some(26));
    }

    #[test]
    fn dates() {
        let ok = [
            ("2024-03-01T12:00:00Z", "2024-03-01T12:00:00+00:00"),
            ("2024-03-01T12:00:00", "2024-03-01T12:00:00+00:00"),
            ("2024-03-01T14:00:00+02:00", "2024-03-01T12:00:00+00:00"),
            ("2024-03-01T07:30:00-04:30", "2024-03-01T12:00:00+00:00"),
            ("2024-03-01T12:00:00.5Z", "2024-03-01T12:00:00.500+00:00"),
            (
                "2024-03-01T12:00:00.123456789123Z",
                "2024-03-01T12:00:00.123456789+00:00",
            ),
            ("2024-02-29T24:00:00Z", "2024-03-01T00:00:00+00:00"),
            (" 2024-03-01T12:00:00Z\n", "2024-03-01T12:00:00+00:00"),
        ];
        for (s, want) in ok {
            let got = parse_xs_datetime(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(got, DateTime::parse_from_rfc3339(want).unwrap(), "{s}");
        }
        for bad in [
            "",
            "yesterday",
            "2024-03-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-03-01T12:00:00.Z",
            "2024-03-01T12:00:00+2:00",
            "2024-03-01 12:00:00Z",
            "2024-03-01T12:00:00ZZ",
            "2024-03-01T25:00:00Z",
        ] {
            assert!(parse_xs_datetime(bad).is_none(), "{bad}");
        }
        let m = one_message(
            "<t:DateTimeSent>2024-03-01T13:00:00.000+01:00</t:DateTimeSent><t:DateTimeCreated>2024-03-01T12:00:00</t:DateTimeCreated>",
        )
        .unwrap();
        assert_eq!(m.date_time_sent, m.date_time_created);
        assert!(is_schema(one_message(
            "<t:DateTimeSent>not a date</t:DateTimeSent>"
        )));
    }

    #[test]
    fn booleans_and_skipped_elements() {
        for (v, want) in [
            ("0", false),
            ("1", true),
            ("true", true),
            ("FALSE", false),
            (" True ", true),
        ] {
            let m = one_message(&format!(
                "<t:Attachments><t:FileAttachment><t:IsInline>{v}</t:IsInline></t:FileAttachment></t:Attachments>"
            ))
            .unwrap();
            assert_eq!(m.attachments[0].is_inline, want, "{v}");
        }
        assert!(is_schema(one_message(
            "<t:Attachments><t:FileAttachment><t:IsInline>yes</t:IsInline></t:FileAttachment></t:Attachments>"
        )));
        let m = one_message(
            "<t:Sensitivity>Normal</t:Sensitivity><t:Categories><t:String>a</t:String><t:String>b</t:String></t:Categories><t:IsRead>whatever</t:IsRead><x:Foo xmlns:x=\"urn:x\"><x:Bar/>text</x:Foo><t:ItemClass>IPM.Note</t:ItemClass>",
        )
        .unwrap();
        assert_eq!(m.item_class.as_deref(), Some("IPM.Note"));
    }

    #[test]
    fn body_rules() {
        let m = one_message("<t:Body>plain &amp; simple\r\nline2</t:Body>").unwrap();
        assert_eq!(
            m.body,
            Some(Body {
                body_type: BodyType::Text,
                text: "plain & simple\nline2".into()
            })
        );
        let m = one_message(r#"<t:Body BodyType="html"><![CDATA[<p>hi</p>]]> &#233;</t:Body>"#)
            .unwrap();
        assert_eq!(
            m.body.unwrap(),
            Body {
                body_type: BodyType::Html,
                text: "<p>hi</p> é".into()
            }
        );
        assert!(is_schema(one_message(
            r#"<t:Body BodyType="HTML"><html><body>x</body></html></t:Body>"#
        )));
        assert!(is_schema(one_message(
            r#"<t:Body BodyType="Rtf">x</t:Body>"#
        )));
        assert!(is_schema(one_message(r#"<t:Subject><b>x</b></t:Subject>"#)));
        // Non-message items are schema errors.
        let d = format!(
            r#"{ENV_OPEN}<s:Body><m:CreateItem><m:Items><t:CalendarItem/></m:Items></m:CreateItem></s:Body></s:Envelope>"#
        );
        let e = parse_request(d.as_bytes()).unwrap_err();
        assert!(matches!(e, ParseError::Schema { .. }), "{e}");
        assert_eq!(e.response_code(), "ErrorSchemaValidation");
    }

    #[test]
    fn base64_errors() {
        let e = one_message("<t:MimeContent>!!!notbase64</t:MimeContent>").unwrap_err();
        assert!(
            matches!(&e, ParseError::Schema { message, .. } if message.contains("t:MimeContent")),
            "{e}"
        );
        let m = one_message(
            "<t:MimeContent CharacterSet=\"UTF-8\">\n  SGVsbG8g\r\n  V29ybGQ=\n</t:MimeContent>",
        )
        .unwrap();
        let mc = m.mime_content.unwrap();
        assert_eq!(mc.bytes, b"Hello World");
        assert_eq!(mc.character_set.as_deref(), Some("UTF-8"));
        assert!(is_schema(one_message(
            "<t:Attachments><t:FileAttachment><t:Content>abc$</t:Content></t:FileAttachment></t:Attachments>"
        )));
    }

    #[test]
    fn dtd_and_entities() {
        let d = format!(
            r#"<?xml version="1.0"?><!DOCTYPE s:Envelope>{ENV_OPEN}<s:Body/></s:Envelope>"#
        );
        assert_eq!(parse_request(d.as_bytes()), Err(ParseError::DtdForbidden));
        let lol = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"#;
        assert_eq!(parse_request(lol.as_bytes()), Err(ParseError::DtdForbidden));
        let xxe = r#"<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"#;
        assert_eq!(parse_request(xxe.as_bytes()), Err(ParseError::DtdForbidden));
        let e = one_message("<t:Subject>&foo;</t:Subject>").unwrap_err();
        assert!(matches!(e, ParseError::Malformed { .. }), "{e}");
        // Also in skipped content.
        let e = one_message("<t:Sensitivity>&foo;</t:Sensitivity>").unwrap_err();
        assert!(matches!(e, ParseError::Malformed { .. }), "{e}");
    }

    #[test]
    fn deep_nesting() {
        let n = 100_000;
        let mut d = String::with_capacity(n * 8);
        for _ in 0..n {
            d.push_str("<a>");
        }
        for _ in 0..n {
            d.push_str("</a>");
        }
        assert_eq!(parse_request(d.as_bytes()), Err(ParseError::TooDeep));
        let mut d = format!("{ENV_OPEN}<s:Header>");
        for _ in 0..n {
            d.push_str("<a>");
        }
        assert_eq!(parse_request(d.as_bytes()), Err(ParseError::TooDeep));
    }

    #[test]
    fn too_many_attributes() {
        let attrs: String = (0..65).map(|i| format!(" a{i}=\"x\"")).collect();
        let d = format!("{ENV_OPEN}<s:Body><m:GetFolder{attrs}/></s:Body></s:Envelope>");
        assert_eq!(
            parse_request(d.as_bytes()),
            Err(ParseError::TooManyAttributes)
        );
        assert_eq!(
            ParseError::TooManyAttributes.response_code(),
            "ErrorSchemaValidation"
        );
    }

    #[test]
    fn well_formedness() {
        let good = wrap_message("<t:Subject>x</t:Subject>");
        assert!(parse_request(good.as_bytes()).is_ok());
        // Truncated at every position must fail, never panic.
        for cut in [10, 100, good.len() / 2, good.len() - 1, good.len() - 12] {
            let e = parse_request(&good.as_bytes()[..cut]).unwrap_err();
            assert!(matches!(e, ParseError::Malformed { .. }), "cut {cut}: {e}");
        }
        for cut in 0..good.len() {
            assert!(parse_request(&good.as_bytes()[..cut]).is_err());
        }
        // Two roots, trailing text, trailing element.
        for tail in ["<s:Envelope/>", "junk", "<x/>"] {
            let d = format!("{good}{tail}");
            assert!(
                matches!(
                    parse_request(d.as_bytes()),
                    Err(ParseError::Malformed { .. })
                ),
                "{tail}"
            );
        }
        // Mismatched end tag.
        let d = good.replace("</t:Subject>", "</t:Subjec>");
        assert!(matches!(
            parse_request(d.as_bytes()),
            Err(ParseError::Malformed { .. })
        ));
        // Invalid UTF-8.
        let mut d = good.clone().into_bytes();
        let i = d.iter().position(|&b| b == b'x').unwrap();
        d[i] = 0xFF;
        let e = parse_request(&d).unwrap_err();
        assert!(matches!(e, ParseError::Malformed { .. }), "{e}");
        // Empty input.
        assert!(matches!(
            parse_request(b""),
            Err(ParseError::Malformed { .. })
        ));
        assert!(matches!(
            parse_request(b"   "),
            Err(ParseError::Malformed { .. })
        ));
        // Position is reported.
        let d = format!("{ENV_OPEN}\n<s:Body>\n<m:GetFolder></m:GetFolde></s:Body></s:Envelope>");
        match parse_request(d.as_bytes()).unwrap_err() {
            ParseError::Malformed { position, .. } => assert_eq!(position.line, 3),
            e => panic!("{e}"),
        }
        // BOM accepted.
        let mut d = b"\xEF\xBB\xBF".to_vec();
        d.extend_from_slice(good.as_bytes());
        assert!(parse_request(&d).is_ok());
    }

    #[test]
    fn encodings() {
        let body = format!("{ENV_OPEN}<s:Body><m:ConvertId/></s:Body></s:Envelope>");
        for enc in ["utf-8", "UTF-8", "Utf-8"] {
            let d = format!(r#"<?xml version="1.0" encoding="{enc}"?>{body}"#);
            assert!(parse_request(d.as_bytes()).is_ok(), "{enc}");
        }
        for enc in ["ISO-8859-1", "utf-16", "windows-1252"] {
            let d = format!(r#"<?xml version="1.0" encoding="{enc}"?>{body}"#);
            assert_eq!(
                parse_request(d.as_bytes()),
                Err(ParseError::UnsupportedEncoding(enc.into()))
            );
        }
        let mut d = b"\xFF\xFE".to_vec();
        d.extend(body.encode_utf16().flat_map(|u| u.to_le_bytes()));
        assert!(matches!(
            parse_request(&d),
            Err(ParseError::UnsupportedEncoding(_))
        ));
        // Declaration not at the start.
        let d = format!(r#" <?xml version="1.0"?>{body}"#);
        assert!(matches!(
            parse_request(d.as_bytes()),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn operations_and_body() {
        let d =
            format!("{ENV_OPEN}<s:Body><m:FindItem><m:Foo/></m:FindItem></s:Body></s:Envelope>");
        assert_eq!(
            parse_request(d.as_bytes()).unwrap().operation,
            Operation::Unsupported("FindItem".into())
        );
        let d = format!(
            "{ENV_OPEN}<s:Body><x:CreateItem xmlns:x=\"urn:other\"/></s:Body></s:Envelope>"
        );
        let e = parse_request(d.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            ParseError::UnknownOperation {
                namespace: "urn:other".into(),
                name: "CreateItem".into()
            }
        );
        assert_eq!(e.response_code(), "ErrorInvalidRequest");
        let d = format!("{ENV_OPEN}<s:Body>  </s:Body></s:Envelope>");
        assert_eq!(parse_request(d.as_bytes()), Err(ParseError::EmptyBody));
        let d = format!("{ENV_OPEN}<s:Header/></s:Envelope>");
        assert_eq!(parse_request(d.as_bytes()), Err(ParseError::MissingBody));
        assert_eq!(
            parse_request(b"<html><body/></html>"),
            Err(ParseError::NotSoapEnvelope)
        );
        // Header variants.
        let d = format!(
            r#"{ENV_OPEN}<s:Header><t:MailboxCulture>en-US</t:MailboxCulture><t:RequestServerVersion Version="Exchange2013_SP1"/><t:ExchangeImpersonation><t:ConnectingSID><t:SID>S-1-5</t:SID><t:SmtpAddress>bob@contoso.com</t:SmtpAddress></t:ConnectingSID></t:ExchangeImpersonation><t:DateTimePrecision>Milliseconds</t:DateTimePrecision><x:Unknown xmlns:x="urn:x"><x:y/></x:Unknown></s:Header><s:Body><m:ConvertId/></s:Body></s:Envelope>"#
        );
        let req = parse_request(d.as_bytes()).unwrap();
        assert_eq!(
            req.header.request_server_version.as_deref(),
            Some("Exchange2013_SP1")
        );
        assert_eq!(req.header.impersonated.as_deref(), Some("bob@contoso.com"));
        // GetFolder without FolderIds.
        let d = format!("{ENV_OPEN}<s:Body><m:GetFolder/></s:Body></s:Envelope>");
        assert!(is_schema(parse_request(d.as_bytes())));
    }

    /// The base64 crate alone, as every base64Binary was decoded before the SIMD decoder.
    fn scalar(b: &[u8]) -> std::result::Result<Vec<u8>, base64::DecodeError> {
        let cleaned: Vec<u8> = b
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        BASE64.decode(cleaned)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Strings over the alphabet, `=` and whitespace (mostly invalid): the same verdict,
        /// the same bytes, the same error.
        #[test]
        fn simd_and_scalar_decoding_agree(text in "[A-Za-z0-9+/= \r\n\t]{0,80}") {
            proptest::prop_assert_eq!(decode_base64(text.as_bytes()), scalar(text.as_bytes()));
        }

        /// Encodings of any bytes, padded or not, wrapped or not, with one symbol changed
        /// or not (most changes make a valid string of other bytes, some a non-canonical end).
        #[test]
        fn simd_and_scalar_decoding_agree_on_encodings(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            pad: bool,
            wrap in 0usize..80,
            change in proptest::option::of((proptest::prelude::any::<usize>(), 0usize..65)),
        ) {
            use base64::Engine as _;
            let mut text = if pad {
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            } else {
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes)
            }
            .into_bytes();
            if let Some((at, symbol)) = change {
                if !text.is_empty() {
                    let at = at % text.len();
                    text[at] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="[symbol];
                }
            }
            if wrap > 0 {
                text = text.chunks(wrap).collect::<Vec<_>>().join(&b"\r\n"[..]);
            }
            let decoded = decode_base64(&text);
            proptest::prop_assert_eq!(&decoded, &scalar(&text));
            if change.is_none() {
                proptest::prop_assert_eq!(decoded, Ok(bytes));
            }
        }
    }
}
