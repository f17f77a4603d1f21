//! What the index sees of a text: words, as the search service's word breaker cuts them.
//!
//! - [`WordTokenizer`]: runs of letters and digits are words; each Chinese or Japanese
//!   character (ideographs, kana) is a word of its own, since those scripts put no space
//!   between words (tantivy's default tokenizer took a whole sentence for one word, and dropped
//!   it when longer than 40 bytes). A phrase of characters then finds them side by side.
//! - [`html_text`]: the text of an HTML body, without its markup (tags, comments, `<script>`
//!   and `<style>` contents), entities decoded: `style` or `color` must not match every item
//!   with `<p style="color:red">`.

use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Longest word kept, in bytes (long identifiers such as a SHA-512 in hex are kept).
const MAX_WORD_BYTES: usize = 128;

/// The analyzer of every text field: [`WordTokenizer`], lower case, words up to
/// [`MAX_WORD_BYTES`].
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer::default())
        // The filter keeps words shorter than its limit.
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES + 1))
        .filter(LowerCaser)
        .build()
}

/// Characters written without spaces between words: each is a word.
fn is_unspaced(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}'   // hiragana, katakana
        | '\u{31F0}'..='\u{31FF}' // katakana phonetic extensions
        | '\u{3400}'..='\u{4DBF}' // CJK extension A
        | '\u{4E00}'..='\u{9FFF}' // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}' // CJK compatibility ideographs
        | '\u{20000}'..='\u{2FA1F}' // CJK extensions B to F, compatibility supplement
    )
}

/// See the module notes.
#[derive(Clone, Default)]
pub struct WordTokenizer {
    token: Token,
}

pub struct WordStream<'a> {
    text: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    token: &'a mut Token,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream {
            text,
            chars: text.char_indices().peekable(),
            token: &mut self.token,
        }
    }
}

impl WordStream<'_> {
    fn emit(&mut self, from: usize, to: usize) -> bool {
        self.token.text.clear();
        self.token.text.push_str(&self.text[from..to]);
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position = self.token.position.wrapping_add(1);
        true
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        // Separators first.
        while let Some(&(offset, c)) = self.chars.peek() {
            if is_unspaced(c) {
                self.chars.next();
                return self.emit(offset, offset + c.len_utf8());
            }
            if c.is_alphanumeric() {
                break;
            }
            self.chars.next();
        }
        let Some(&(start, _)) = self.chars.peek() else {
            return false;
        };
        let mut end = start;
        while let Some(&(offset, c)) = self.chars.peek() {
            if !c.is_alphanumeric() || is_unspaced(c) {
                break;
            }
            end = offset + c.len_utf8();
            self.chars.next();
        }
        self.emit(start, end)
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The text of an HTML document or fragment: markup removed, the contents of `<script>` and
/// `<style>` dropped, the common entities and numeric references decoded, every tag a word
/// break. Not a full HTML parser: what it cannot read stays as text.
pub fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        decode_into(&rest[..open], &mut out);
        out.push(' ');
        let tag = &rest[open..];
        let skip_to = if tag.starts_with("<!--") {
            tag.find("-->").map(|end| end + 3)
        } else if let Some(name) = raw_text_element(tag) {
            // `<script ...>` or `<style ...>`: up to and past its closing tag (found without
            // copying the rest of the document: a body of many such elements stays linear).
            closing_tag(tag, name)
                .and_then(|close| tag[close..].find('>').map(|end| close + end + 1))
        } else {
            tag.find('>').map(|end| end + 1)
        };
        match skip_to {
            Some(n) => rest = &tag[n..],
            // An unclosed `<`: the rest is text.
            None => {
                decode_into(&tag[1..], &mut out);
                return out;
            }
        }
    }
    decode_into(rest, &mut out);
    out
}

/// Where `</name` (any case) first begins in `text`.
fn closing_tag(text: &str, name: &str) -> Option<usize> {
    text.match_indices("</").map(|(at, _)| at).find(|&at| {
        text.get(at + 2..at + 2 + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

/// `script` or `style` when `tag` opens one of them.
fn raw_text_element(tag: &str) -> Option<&'static str> {
    ["script", "style"].into_iter().find(|name| {
        tag.get(1..=name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && tag
                .get(name.len() + 1..)
                .and_then(|after| after.chars().next())
                .is_some_and(|c| c == '>' || c == '/' || c.is_whitespace())
    })
}

/// Appends `text` with its character references decoded.
fn decode_into(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &after[..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn words_are_letters_and_digits_and_each_ideograph() {
        assert_eq!(words("Q1 - results, ok?"), ["q1", "results", "ok"]);
        assert_eq!(
            words("bob.kelly@bloomberg.example"),
            ["bob", "kelly", "bloomberg", "example"]
        );
        assert_eq!(words("決算報告"), ["決", "算", "報", "告"]);
        assert_eq!(words("Q3の決算です"), ["q3", "の", "決", "算", "で", "す"]);
        assert_eq!(words("Größe Ünïcode"), ["größe", "ünïcode"]);
        let hash = "a".repeat(128);
        assert_eq!(
            words(&hash),
            std::slice::from_ref(&hash),
            "128 bytes are kept"
        );
        assert!(
            words(&"b".repeat(200)).is_empty(),
            "pathological words are dropped"
        );
        assert!(words("&& -- ...").is_empty());
    }

    #[test]
    fn html_loses_its_markup_and_keeps_its_text() {
        let html = r#"<html><head><style>p { color: red }</style><script type="x">var secret = 1;</script></head>
            <body><p style="color:red">Budget&nbsp;&amp; forecast</p><!-- hidden note --><b>Q&#51;</b>&#x41;<br/>tail &unknown; a < b</body></html>"#;
        let text = html_text(html);
        assert!(text.contains("Budget & forecast"), "{text}");
        assert!(text.contains("Q3"), "{text}");
        assert!(text.contains('A'), "{text}");
        assert!(text.contains("tail &unknown; a "), "{text}");
        for markup in ["style", "color", "secret", "hidden", "html", "body"] {
            assert!(!text.contains(markup), "{markup} in {text}");
        }
        assert_eq!(html_text("plain text"), "plain text");
        assert_eq!(html_text("<STYLE>x</Style>y").trim(), "y");
        // Many elements: linear (it copied the rest of the document per element before).
        let many = "<style>a{}</style>w ".repeat(200_000);
        let started = std::time::Instant::now();
        assert_eq!(html_text(&many).split_whitespace().count(), 200_000);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(
            html_text("<日本語>テキスト<scr").contains("テキスト"),
            "no panic on non-ASCII tags"
        );
        assert_eq!(
            html_text("<p>x</p><p>y</p>")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["x", "y"]
        );
    }
}
