//! The KQL subset Content Search documents for third-party data: a hand-written lexer and
//! recursive-descent parser into an [`Expr`], with syntax errors that name the position (1-based,
//! in characters) and what was expected.
//!
//! Grammar (precedence: NOT/`-` > AND/implicit AND > OR; operators upper case as in KQL, a
//! lower-case `and`/`or`/`not` is a word):
//!
//! ```text
//! query       := ε | or
//! or          := and ("OR" and)*
//! and         := unary (("AND")? unary)*
//! unary       := ("NOT" | "-") unary | "+"? primary
//! primary     := "(" or ")" | restriction | value
//! restriction := NAME (":" | "=" | "<" | ">" | "<=" | ">=" | "<>") value
//! value       := WORD | WORD* | "phrase" | "phrase*" | FROM..TO
//! ```

use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// The empty query (or `*`): every item.
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// Words or a phrase in a text property (free text: subject, body and participants).
    Text {
        field: TextField,
        text: String,
        /// A quoted phrase (else one word, which may still analyse into several tokens).
        phrase: bool,
        /// Ends with `*`: the last token is a prefix.
        prefix: bool,
    },
    /// `kind:` (lower case).
    Kind {
        value: String,
        prefix: bool,
    },
    /// `itemclass:` (lower case; matches the class as sent and as searched).
    ItemClass {
        value: String,
        prefix: bool,
    },
    HasAttachment(bool),
    /// `sent`/`received` in `[from, to)`, microseconds since the epoch.
    Date {
        field: DateField,
        from: Option<i64>,
        to: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// Free text: subject, body and participants.
    Any,
    Subject,
    Body,
    From,
    To,
    Cc,
    Bcc,
    Participants,
    AttachmentNames,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateField {
    Sent,
    Received,
}

/// The properties a restriction may name.
pub const PROPERTIES: &[&str] = &[
    "kind",
    "itemclass",
    "subject",
    "body",
    "from",
    "to",
    "cc",
    "bcc",
    "participants",
    "attachmentnames",
    "hasattachment",
    "sent",
    "received",
];

/// A syntax error: 1-based character position and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Syntax error at position {}: {}",
            self.position, self.message
        )
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Colon,
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
    Ne,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Colon => ":",
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Ne => "<>",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Minus,
    Plus,
    Word(String),
    Phrase(String),
    Op(Op),
    And,
    Or,
    Not,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Plus => "'+'".into(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Phrase(p) => format!("\"{p}\""),
            Tok::Op(op) => format!("'{}'", op.text()),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
            Tok::End => "the end of the query".into(),
        }
    }
}

/// A token with its 1-based character position.
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\u{201C}' | '\u{201D}')
}

fn is_op_char(c: char) -> bool {
    matches!(c, ':' | '=' | '<' | '>')
}

fn lex(input: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let after_op = matches!(
            out.last(),
            Some(Token {
                tok: Tok::Op(_),
                ..
            })
        );
        let at_term_start = !after_op;
        match c {
            '(' => {
                out.push(Token {
                    tok: Tok::LParen,
                    pos,
                });
                i += 1;
            }
            ')' => {
                out.push(Token {
                    tok: Tok::RParen,
                    pos,
                });
                i += 1;
            }
            c if is_quote(c) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && !is_quote(chars[end]) {
                    end += 1;
                }
                if end >= chars.len() {
                    return Err(SyntaxError {
                        position: chars.len() + 1,
                        message: format!(
                            "expected '\"' to close the phrase opened at position {pos}"
                        ),
                    });
                }
                let mut text: String = chars[start..end].iter().collect();
                i = end + 1;
                // A `*` right after the closing quote also makes the phrase a prefix.
                if i < chars.len() && chars[i] == '*' {
                    text.push('*');
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Phrase(text),
                    pos,
                });
            }
            '-' | '+'
                if at_term_start
                    && i + 1 < chars.len()
                    && !chars[i + 1].is_whitespace()
                    && chars[i + 1] != ')' =>
            {
                out.push(Token {
                    tok: if c == '-' { Tok::Minus } else { Tok::Plus },
                    pos,
                });
                i += 1;
            }
            c if is_op_char(c) && !after_op => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    (':', _) => (Op::Colon, 1),
                    ('=', _) => (Op::Eq, 1),
                    ('<', _) => (Op::Lt, 1),
                    _ => (Op::Gt, 1),
                };
                out.push(Token {
                    tok: Tok::Op(op),
                    pos,
                });
                i += len;
            }
            _ => {
                // A word. After an operator it is a value and runs to whitespace or a
                // parenthesis (so `sent>=2024-01-01T10:00:00Z` is one value).
                let start = i;
                while i < chars.len() {
                    let d = chars[i];
                    if d.is_whitespace() || d == '(' || d == ')' || is_quote(d) {
                        break;
                    }
                    if !after_op && is_op_char(d) {
                        break;
                    }
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let tok = match word.as_str() {
                    "AND" if !after_op => Tok::And,
                    "OR" if !after_op => Tok::Or,
                    "NOT" if !after_op => Tok::Not,
                    _ => Tok::Word(word),
                };
                out.push(Token { tok, pos });
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        pos: chars.len() + 1,
    });
    Ok(out)
}

/// Parses a KQL query. An empty query is [`Expr::All`].
pub fn parse(input: &str) -> Result<Expr, SyntaxError> {
    let tokens = lex(input)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    if parser.peek().tok == Tok::End {
        return Ok(Expr::All);
    }
    let expr = parser.or()?;
    let next = parser.peek();
    if next.tok != Tok::End {
        let expected = if next.tok == Tok::RParen {
            "expected the end of the query (this ')' closes nothing)".to_string()
        } else {
            format!(
                "expected the end of the query, found {}",
                next.tok.describe()
            )
        };
        return Err(SyntaxError {
            position: next.pos,
            message: expected,
        });
    }
    Ok(expr)
}

/// How deep parentheses and negations may nest. The parser (and every walk of the tree it
/// builds) recurses once per level, so without a bound a query of 100,000 `(` would overflow the
/// stack and abort the whole server. Real queries nest a few levels.
pub const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Parentheses and negations open around the current token.
    depth: usize,
}

fn err<T>(pos: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        position: pos,
        message: message.into(),
    })
}

impl Parser {
    /// Parses one nested level (a `(…)` or a negated term) with `parse`, within [`MAX_NESTING`].
    fn nested<T>(
        &mut self,
        pos: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, SyntaxError>,
    ) -> Result<T, SyntaxError> {
        if self.depth >= MAX_NESTING {
            return err(
                pos,
                format!("the query nests parentheses and negations more than {MAX_NESTING} deep"),
            );
        }
        self.depth += 1;
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.and()?];
        while self.peek().tok == Tok::Or {
            let or = self.next();
            parts.push(self.term_after(&or, "OR")?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Expr::Or(parts)
        })
    }

    /// The operand after a binary operator, `AND` rather than `and` (those are words).
    fn term_after(&mut self, op: &Token, name: &str) -> Result<Expr, SyntaxError> {
        let next = self.peek().clone();
        if !starts_term(&next.tok) {
            return err(
                next.pos,
                format!(
                    "expected a search term after {name} (at position {}), found {}",
                    op.pos,
                    next.tok.describe()
                ),
            );
        }
        if name == "OR" {
            self.and()
        } else {
            self.unary()
        }
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.unary()?];
        loop {
            let next = self.peek().clone();
            match next.tok {
                Tok::And => {
                    self.next();
                    parts.push(self.term_after(&next, "AND")?);
                }
                ref t if starts_term(t) => parts.push(self.unary()?),
                _ => break,
            }
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Not | Tok::Minus => {
                self.next();
                let next = self.peek().clone();
                if !starts_term(&next.tok) {
                    let what = if token.tok == Tok::Not { "NOT" } else { "'-'" };
                    return err(
                        next.pos,
                        format!(
                            "expected a search term after {what}, found {}",
                            next.tok.describe()
                        ),
                    );
                }
                let negated = self.nested(token.pos, Self::unary)?;
                Ok(Expr::Not(Box::new(negated)))
            }
            Tok::Plus => {
                self.next();
                self.primary()
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        let token = self.next();
        match token.tok {
            Tok::LParen => {
                let next = self.peek().clone();
                if next.tok == Tok::RParen {
                    return err(
                        next.pos,
                        "expected a search term inside the parentheses, found ')'",
                    );
                }
                let inner = self.nested(token.pos, Self::or)?;
                let close = self.peek().clone();
                if close.tok != Tok::RParen {
                    return err(
                        close.pos,
                        format!(
                            "expected ')' to close the '(' at position {}, found {}",
                            token.pos,
                            close.tok.describe()
                        ),
                    );
                }
                self.next();
                Ok(inner)
            }
            Tok::Phrase(text) => Ok(free_text(&text, true)),
            Tok::Word(word) => {
                if let Tok::Op(op) = self.peek().tok {
                    let op_token = self.next();
                    let value = self.next();
                    let (text, phrase) = match value.tok {
                        Tok::Word(w) => (w, false),
                        Tok::Phrase(p) => (p, true),
                        other => {
                            return err(
                                value.pos,
                                format!(
                                    "expected a value after '{word}{}', found {}",
                                    op.text(),
                                    other.describe()
                                ),
                            )
                        }
                    };
                    restriction(&word, token.pos, op, op_token.pos, &text, phrase, value.pos)
                } else if word == "*" {
                    Ok(Expr::All)
                } else {
                    Ok(free_text(&word, false))
                }
            }
            Tok::Op(op) => err(
                token.pos,
                format!(
                    "expected a property name before '{}' (or quote the text)",
                    op.text()
                ),
            ),
            other => err(
                token.pos,
                format!("expected a search term, found {}", other.describe()),
            ),
        }
    }
}

fn starts_term(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::LParen
            | Tok::Minus
            | Tok::Plus
            | Tok::Word(_)
            | Tok::Phrase(_)
            | Tok::Not
            | Tok::Op(_)
    )
}

/// Splits a trailing `*` (prefix wildcard) off a value.
fn wildcard(text: &str) -> (String, bool) {
    let trimmed = text.trim();
    match trimmed.strip_suffix('*') {
        Some(rest) => (rest.trim_end_matches('*').to_string(), true),
        None => (trimmed.to_string(), false),
    }
}

fn free_text(text: &str, phrase: bool) -> Expr {
    let (text, prefix) = wildcard(text);
    if text.is_empty() && prefix {
        return Expr::All;
    }
    Expr::Text {
        field: TextField::Any,
        text,
        phrase,
        prefix,
    }
}

fn restriction(
    name: &str,
    name_pos: usize,
    op: Op,
    op_pos: usize,
    value: &str,
    phrase: bool,
    value_pos: usize,
) -> Result<Expr, SyntaxError> {
    let property = name.to_ascii_lowercase();
    let text_field = match property.as_str() {
        "subject" => Some(TextField::Subject),
        "body" => Some(TextField::Body),
        "from" => Some(TextField::From),
        "to" => Some(TextField::To),
        "cc" => Some(TextField::Cc),
        "bcc" => Some(TextField::Bcc),
        "participants" => Some(TextField::Participants),
        "attachmentnames" | "attachmentname" => Some(TextField::AttachmentNames),
        _ => None,
    };
    let date_field = match property.as_str() {
        "sent" => Some(DateField::Sent),
        "received" => Some(DateField::Received),
        _ => None,
    };
    if let Some(field) = date_field {
        return date_restriction(field, name, op, value, value_pos);
    }
    if !PROPERTIES.contains(&property.as_str()) && text_field.is_none() {
        return err(
            name_pos,
            format!(
                "unknown property '{name}'; expected one of {} (or quote the text to search for it)",
                PROPERTIES.join(", ")
            ),
        );
    }
    let negate = match op {
        Op::Colon | Op::Eq => false,
        Op::Ne => true,
        other => {
            return err(
                op_pos,
                format!(
                    "expected ':' or '=' after '{name}' ('{}' compares dates: sent, received)",
                    other.text()
                ),
            )
        }
    };
    let (text, prefix) = wildcard(value);
    let expr = if let Some(field) = text_field {
        if text.is_empty() && prefix {
            Expr::All
        } else {
            Expr::Text {
                field,
                text,
                phrase,
                prefix,
            }
        }
    } else {
        match property.as_str() {
            "kind" => Expr::Kind {
                value: text.to_lowercase(),
                prefix,
            },
            "itemclass" => Expr::ItemClass {
                value: text.to_lowercase(),
                prefix,
            },
            _ => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" if !prefix => Expr::HasAttachment(true),
                "false" | "no" | "0" if !prefix => Expr::HasAttachment(false),
                _ => {
                    return err(
                        value_pos,
                        format!("expected true or false after '{name}{}'", op.text()),
                    )
                }
            },
        }
    };
    Ok(if negate {
        Expr::Not(Box::new(expr))
    } else {
        expr
    })
}

const DATE_FORMS: &str =
    "a date (YYYY-MM-DD, MM/DD/YYYY or YYYY-MM-DDThh:mm:ssZ) or a range FROM..TO";

/// A date value: `(start, end)` in microseconds; a day spans `[midnight, next midnight)`, an
/// instant spans `[t, t + 1µs)`.
fn date_span(text: &str) -> Option<(i64, i64)> {
    let text = text.trim();
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%m/%d/%Y"))
        .ok();
    if let Some(day) = day {
        let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?);
        // The last day chrono knows has no next midnight: not a date we can search.
        let end = start.checked_add_signed(Duration::days(1))?;
        return Some((start.timestamp_micros(), end.timestamp_micros()));
    }
    let instant = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .map(|t| Utc.from_utc_datetime(&t))
        })?;
    let t = instant.timestamp_micros();
    Some((t, t + 1))
}

fn date_restriction(
    field: DateField,
    name: &str,
    op: Op,
    value: &str,
    value_pos: usize,
) -> Result<Expr, SyntaxError> {
    let bad = |pos: usize| {
        err::<Expr>(
            pos,
            format!("expected {DATE_FORMS} after '{name}{}'", op.text()),
        )
    };
    if let Some((a, b)) = value.split_once("..") {
        if !matches!(op, Op::Colon | Op::Eq) {
            return err(
                value_pos,
                format!("expected a single date after '{name}{}' (a range FROM..TO goes after ':' or '=')", op.text()),
            );
        }
        let Some((from, _)) = date_span(a) else {
            return bad(value_pos);
        };
        let Some((_, to)) = date_span(b) else {
            return bad(value_pos + a.chars().count() + 2);
        };
        return Ok(Expr::Date {
            field,
            from: Some(from),
            to: Some(to),
        });
    }
    let Some((start, end)) = date_span(value) else {
        return bad(value_pos);
    };
    let (from, to) = match op {
        Op::Colon | Op::Eq => (Some(start), Some(end)),
        Op::Lt => (None, Some(start)),
        Op::Le => (None, Some(end)),
        Op::Gt => (Some(end), None),
        Op::Ge => (Some(start), None),
        Op::Ne => {
            return Ok(Expr::Not(Box::new(Expr::Date {
                field,
                from: Some(start),
                to: Some(end),
            })))
        }
    };
    Ok(Expr::Date { field, from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    fn text(field: TextField, t: &str) -> Expr {
        Expr::Text {
            field,
            text: t.into(),
            phrase: false,
            prefix: false,
        }
    }

    fn word(t: &str) -> Expr {
        text(TextField::Any, t)
    }

    fn error(q: &str) -> SyntaxError {
        parse(q).expect_err(q)
    }

    #[test]
    fn nesting_is_bounded_not_a_stack_overflow() {
        let at_limit = "(".repeat(MAX_NESTING) + "a" + &")".repeat(MAX_NESTING);
        assert_eq!(parse(&at_limit).unwrap(), word("a"));
        let negations = "-".repeat(MAX_NESTING) + "a";
        assert!(parse(&negations).is_ok());
        for deep in [
            "(".repeat(MAX_NESTING + 1) + "a" + &")".repeat(MAX_NESTING + 1),
            "(".repeat(100_000) + "a",
            "-".repeat(100_000) + "a",
            "NOT (".repeat(50_000) + "a",
        ] {
            let e = error(&deep);
            assert!(e.message.contains("nests"), "{}", e.message);
        }
        assert_eq!(
            error(&("(".repeat(100_000) + "a")).position,
            MAX_NESTING + 1
        );
    }

    #[test]
    fn the_last_day_of_the_calendar_is_not_a_date() {
        assert!(error("sent:+262142-12-31")
            .message
            .contains("expected a date"));
        assert!(parse("sent:2024-02-29").is_ok());
    }

    #[test]
    fn empty_and_star_match_all() {
        assert_eq!(parse("").unwrap(), Expr::All);
        assert_eq!(parse("   ").unwrap(), Expr::All);
        assert_eq!(parse("*").unwrap(), Expr::All);
    }

    #[test]
    fn implicit_and_and_precedence() {
        assert_eq!(
            parse("a b OR c").unwrap(),
            Expr::Or(vec![Expr::And(vec![word("a"), word("b")]), word("c")])
        );
        assert_eq!(
            parse("a AND b OR c AND d").unwrap(),
            Expr::Or(vec![
                Expr::And(vec![word("a"), word("b")]),
                Expr::And(vec![word("c"), word("d")])
            ])
        );
        assert_eq!(
            parse("a AND (b OR c)").unwrap(),
            Expr::And(vec![word("a"), Expr::Or(vec![word("b"), word("c")])])
        );
    }

    #[test]
    fn lower_case_operators_are_words() {
        assert_eq!(
            parse("cats and dogs").unwrap(),
            Expr::And(vec![word("cats"), word("and"), word("dogs")])
        );
        assert_eq!(
            parse("a or not b").unwrap(),
            Expr::And(vec![word("a"), word("or"), word("not"), word("b")])
        );
    }

    #[test]
    fn not_and_leading_minus() {
        assert_eq!(
            parse("a NOT b").unwrap(),
            Expr::And(vec![word("a"), Expr::Not(Box::new(word("b")))])
        );
        assert_eq!(
            parse("-subject:x").unwrap(),
            Expr::Not(Box::new(text(TextField::Subject, "x")))
        );
        assert_eq!(
            parse("NOT (a OR b)").unwrap(),
            Expr::Not(Box::new(Expr::Or(vec![word("a"), word("b")])))
        );
        // A hyphen inside a word is part of it.
        assert_eq!(parse("e-mail").unwrap(), word("e-mail"));
        assert_eq!(parse("+a").unwrap(), word("a"));
    }

    #[test]
    fn phrases_and_wildcards() {
        assert_eq!(
            parse("\"hello world\"").unwrap(),
            Expr::Text {
                field: TextField::Any,
                text: "hello world".into(),
                phrase: true,
                prefix: false
            }
        );
        assert_eq!(
            parse("subject:\"quarterly rep*\"").unwrap(),
            Expr::Text {
                field: TextField::Subject,
                text: "quarterly rep".into(),
                phrase: true,
                prefix: true
            }
        );
        assert_eq!(
            parse("hel*").unwrap(),
            Expr::Text {
                field: TextField::Any,
                text: "hel".into(),
                phrase: false,
                prefix: true
            }
        );
    }

    #[test]
    fn properties_are_case_insensitive() {
        assert_eq!(
            parse("KIND:ExternalData").unwrap(),
            Expr::Kind {
                value: "externaldata".into(),
                prefix: false
            }
        );
        assert_eq!(
            parse("ItemClass:IPM.ExternalData.Twitter*").unwrap(),
            Expr::ItemClass {
                value: "ipm.externaldata.twitter".into(),
                prefix: true
            }
        );
        assert_eq!(
            parse("itemclass=IPM.NOTE.Twitter.Tweet").unwrap(),
            Expr::ItemClass {
                value: "ipm.note.twitter.tweet".into(),
                prefix: false
            }
        );
        for (q, field) in [
            ("from:a", TextField::From),
            ("to:a", TextField::To),
            ("cc:a", TextField::Cc),
            ("bcc:a", TextField::Bcc),
            ("participants:a", TextField::Participants),
            ("attachmentnames:a", TextField::AttachmentNames),
            ("body:a", TextField::Body),
        ] {
            assert_eq!(parse(q).unwrap(), text(field, "a"), "{q}");
        }
        assert_eq!(
            parse("from:alice@contoso.com").unwrap(),
            text(TextField::From, "alice@contoso.com")
        );
        assert_eq!(
            parse("hasattachment:TRUE").unwrap(),
            Expr::HasAttachment(true)
        );
        assert_eq!(
            parse("hasattachment=false").unwrap(),
            Expr::HasAttachment(false)
        );
        assert_eq!(
            parse("subject<>x").unwrap(),
            Expr::Not(Box::new(text(TextField::Subject, "x")))
        );
    }

    #[test]
    fn dates() {
        let day = |d: &str| micros(&format!("{d}T00:00:00Z"));
        let date = |field, from, to| Expr::Date { field, from, to };
        use DateField::*;
        assert_eq!(
            parse("sent>=2024-01-01").unwrap(),
            date(Sent, Some(day("2024-01-01")), None)
        );
        assert_eq!(
            parse("sent>2024-01-01").unwrap(),
            date(Sent, Some(day("2024-01-02")), None)
        );
        assert_eq!(
            parse("sent<2024-01-01").unwrap(),
            date(Sent, None, Some(day("2024-01-01")))
        );
        assert_eq!(
            parse("received<=2024-01-01").unwrap(),
            date(Received, None, Some(day("2024-01-02")))
        );
        assert_eq!(
            parse("sent=2024-01-01").unwrap(),
            date(Sent, Some(day("2024-01-01")), Some(day("2024-01-02")))
        );
        assert_eq!(
            parse("sent:2024-01-01..2024-02-01").unwrap(),
            date(Sent, Some(day("2024-01-01")), Some(day("2024-02-02")))
        );
        assert_eq!(
            parse("sent>=01/31/2024").unwrap(),
            date(Sent, Some(day("2024-01-31")), None)
        );
        let t = micros("2024-01-01T10:00:00Z");
        assert_eq!(
            parse("sent>=2024-01-01T10:00:00Z").unwrap(),
            date(Sent, Some(t), None)
        );
        assert_eq!(
            parse("sent>2024-01-01T10:00:00Z").unwrap(),
            date(Sent, Some(t + 1), None)
        );
        assert_eq!(
            parse("sent<>2024-01-01").unwrap(),
            Expr::Not(Box::new(date(
                Sent,
                Some(day("2024-01-01")),
                Some(day("2024-01-02"))
            )))
        );
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let e = error("(subject:a OR b");
        assert_eq!(e.position, 16);
        assert!(e.message.starts_with("expected ')'"), "{e}");
        assert_eq!(
            e.to_string(),
            "Syntax error at position 16: expected ')' to close the '(' at position 1, found the end of the query"
        );

        let e = error("a OR");
        assert_eq!(e.position, 5);
        assert!(e.message.contains("expected a search term after OR"), "{e}");

        let e = error("a AND AND b");
        assert_eq!(e.position, 7);

        let e = error("a)");
        assert_eq!(e.position, 2);
        assert!(
            e.message.starts_with("expected the end of the query"),
            "{e}"
        );

        let e = error("subject:");
        assert_eq!(e.position, 9);
        assert!(
            e.message.contains("expected a value after 'subject:'"),
            "{e}"
        );

        let e = error("subject:\"abc");
        assert_eq!(e.position, 13);
        assert!(e.message.starts_with("expected '\"'"), "{e}");

        let e = error("colour:red");
        assert_eq!(e.position, 1);
        assert!(e.message.contains("unknown property 'colour'"), "{e}");

        let e = error("sent>=yesterday-ish");
        assert_eq!(e.position, 7);
        assert!(e.message.starts_with("expected a date"), "{e}");

        let e = error("sent:2024-01-01..2024-13-01");
        assert_eq!(e.position, 18);

        let e = error("hasattachment:maybe");
        assert_eq!(e.position, 15);
        assert!(e.message.contains("expected true or false"), "{e}");

        let e = error("subject>abc");
        assert_eq!(e.position, 8);
        assert!(e.message.starts_with("expected ':' or '='"), "{e}");

        let e = error("()");
        assert_eq!(e.position, 2);

        let e = error("NOT");
        assert_eq!(e.position, 4);
        assert!(e.message.contains("after NOT"), "{e}");

        let e = error("OR a");
        assert_eq!(e.position, 1);
        assert!(e.message.starts_with("expected a search term"), "{e}");

        let e = error(":x");
        assert_eq!(e.position, 1);
        assert!(e.message.contains("property name"), "{e}");
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let e = error("é (a");
        assert_eq!(e.position, 5);
    }

    #[test]
    fn values_after_operators_keep_colons() {
        let t = micros("2024-01-01T10:00:00Z");
        assert_eq!(
            parse("received<2024-01-01T10:00:00Z").unwrap(),
            Expr::Date {
                field: DateField::Received,
                from: None,
                to: Some(t)
            }
        );
    }
}
