//! `is-xml`, `contains-xml`, `is-html` and `contains-html` with promptfoo's
//! rules: XML must be well formed (and may be required to hold element
//! paths like `analysis.sentiment`); embedded XML is found by balancing tags;
//! HTML is judged by recognized elements and stray top-level text, and
//! `contains-html` by promptfoo's count of HTML indicators.

use std::sync::LazyLock;

use regex::Regex;
use roxmltree::{Document, Node};

/// Wraps candidates that may hold several top-level elements.
const WRAPPER: &str = "gauntlet-xml-candidate";

pub(crate) struct XmlVerdict {
    pub valid: bool,
    pub reason: String,
}

/// The whole output must be one well-formed XML document.
pub(crate) fn is_xml(text: &str, required: &[String]) -> XmlVerdict {
    match Document::parse(text) {
        Ok(doc) => check_required(&[doc.root_element()], required),
        Err(err) => XmlVerdict {
            valid: false,
            reason: format!("XML parsing failed: {err}"),
        },
    }
}

/// Some balanced run of tags inside the output must be well-formed XML
/// holding every required path.
pub(crate) fn contains_xml(text: &str, required: &[String]) -> XmlVerdict {
    let candidates = xml_candidates(text);
    if candidates.is_empty() {
        return XmlVerdict {
            valid: false,
            reason: "No XML content found in the output".to_owned(),
        };
    }
    let mut well_formed: Vec<(usize, usize)> = Vec::new();
    for (start, end) in candidates {
        if well_formed.iter().any(|&(s, e)| start >= s && end <= e) {
            continue;
        }
        let wrapped = format!("<{WRAPPER}>{}</{WRAPPER}>", &text[start..end]);
        let Ok(doc) = Document::parse(&wrapped) else {
            continue;
        };
        let tops: Vec<Node> = doc
            .root_element()
            .children()
            .filter(Node::is_element)
            .collect();
        let verdict = check_required(&tops, required);
        if verdict.valid {
            return verdict;
        }
        // Well formed but lacking: its parts cannot do better.
        well_formed.push((start, end));
    }
    XmlVerdict {
        valid: false,
        reason: "No valid XML content found matching the requirements".to_owned(),
    }
}

fn check_required(tops: &[Node], required: &[String]) -> XmlVerdict {
    let missing: Vec<&str> = required
        .iter()
        .filter(|path| !has_path(tops, path))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        XmlVerdict {
            valid: true,
            reason: "XML is valid and contains all required elements".to_owned(),
        }
    } else {
        XmlVerdict {
            valid: false,
            reason: format!("XML is missing required elements: {}", missing.join(", ")),
        }
    }
}

/// Where a path walk stands in promptfoo's XML object tree.
enum At<'a, 'input> {
    Object(Vec<Node<'a, 'input>>, Option<Node<'a, 'input>>),
    List(Vec<Node<'a, 'input>>),
    Leaf,
}

fn value_of<'a, 'input>(node: Node<'a, 'input>) -> At<'a, 'input> {
    let children: Vec<Node> = node.children().filter(Node::is_element).collect();
    if children.is_empty() && node.attributes().len() == 0 {
        At::Leaf
    } else {
        At::Object(children, Some(node))
    }
}

/// A dotted path in the object tree promptfoo's XML parser builds: child
/// elements by name, several same-named siblings as a list indexed by
/// number, attributes as `@_name`, and elements with neither children nor
/// attributes as plain text (which has no children).
fn has_path(tops: &[Node], path: &str) -> bool {
    let mut at = At::Object(tops.to_vec(), None);
    for key in path.split('.') {
        at = match at {
            At::Leaf => return false,
            At::List(items) => {
                let Ok(index) = key.parse::<usize>() else {
                    return false;
                };
                if index.to_string() != key {
                    return false;
                }
                match items.get(index) {
                    Some(node) => value_of(*node),
                    None => return false,
                }
            }
            At::Object(children, owner) => {
                let named: Vec<Node> = children
                    .into_iter()
                    .filter(|n| qualified_name(n) == key)
                    .collect();
                match named.len() {
                    0 => {
                        let attribute = key.strip_prefix("@_").and_then(|name| {
                            owner.and_then(|o| o.attributes().find(|a| a.name() == name))
                        });
                        if attribute.is_none() {
                            return false;
                        }
                        At::Leaf
                    }
                    1 => value_of(named[0]),
                    _ => At::List(named),
                }
            }
        };
    }
    true
}

/// The tag name as written, prefix included.
fn qualified_name(node: &Node) -> String {
    let range = node.range();
    let source = node.document().input_text();
    let tag = &source[range.start + 1..range.end.min(source.len())];
    tag.split(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn is_name_start(c: char) -> bool {
    c == ':' || c == '_' || c.is_ascii_alphabetic() || (c as u32) >= 0xC0
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c == '-' || c == '.' || c.is_ascii_digit() || c == '\u{B7}'
}

fn read_name(text: &str, start: usize) -> Option<&str> {
    let rest = text.get(start..)?;
    let mut chars = rest.char_indices();
    let (_, first) = chars.next()?;
    if !is_name_start(first) {
        return None;
    }
    let end = chars
        .find(|(_, c)| !is_name_char(*c))
        .map_or(rest.len(), |(i, _)| i);
    Some(&rest[..end])
}

/// Index of the `>` ending the tag at `start`, skipping quoted values; a `<`
/// first means it is no tag.
fn tag_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate().skip(start + 1) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'<' => return None,
                b'>' => return Some(i),
                _ => {}
            },
        }
    }
    None
}

fn find_from(text: &str, start: usize, delimiter: &str) -> usize {
    text.get(start..)
        .and_then(|rest| rest.find(delimiter))
        .map_or(text.len() - 1, |i| start + i + delimiter.len() - 1)
}

fn declaration_end(text: &str, start: usize) -> usize {
    let rest = &text[start..];
    if rest.starts_with("<!--") {
        return find_from(text, start + 4, "-->");
    }
    if rest.starts_with("<![CDATA[") {
        return find_from(text, start + 9, "]]>");
    }
    if rest.starts_with("<?") {
        return find_from(text, start + 2, "?>");
    }
    let mut quote = None;
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(start + 2) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'[' => depth += 1,
                b']' if depth > 0 => depth -= 1,
                b'>' if depth == 0 => return i,
                _ => {}
            },
        }
    }
    text.len() - 1
}

/// Byte spans of balanced elements, in the order promptfoo tries them: runs
/// of top-level siblings first, then each outermost element.
fn xml_candidates(text: &str) -> Vec<(usize, usize)> {
    struct Candidate {
        start: usize,
        end: usize,
        parent: Option<usize>,
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<(&str, usize)> = Vec::new();
    let mut found: Vec<Candidate> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'!' | b'?' => {
                i = declaration_end(text, i) + 1;
                continue;
            }
            b'/' => {
                if let (Some(name), Some(end)) = (read_name(text, i + 2), tag_end(bytes, i)) {
                    match stack.last() {
                        Some(&(open, start)) if open == name => {
                            stack.pop();
                            found.push(Candidate {
                                start,
                                end: end + 1,
                                parent: stack.last().map(|s| s.1),
                            });
                        }
                        _ => stack.clear(),
                    }
                    i = end + 1;
                    continue;
                }
            }
            _ => {
                if let (Some(name), Some(end)) = (read_name(text, i + 1), tag_end(bytes, i)) {
                    if text[i..end].trim_end().ends_with('/') {
                        found.push(Candidate {
                            start: i,
                            end: end + 1,
                            parent: stack.last().map(|s| s.1),
                        });
                    } else {
                        stack.push((name, i));
                    }
                    i = end + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    let starts: std::collections::HashSet<usize> = found.iter().map(|c| c.start).collect();
    let mut groups: Vec<(Option<usize>, Vec<&Candidate>)> = Vec::new();
    for c in &found {
        match groups.iter_mut().find(|(p, _)| *p == c.parent) {
            Some((_, siblings)) => siblings.push(c),
            None => groups.push((c.parent, vec![c])),
        }
    }
    let mut ordered: Vec<(usize, usize)> = Vec::new();
    let add = |span: (usize, usize), ordered: &mut Vec<(usize, usize)>| {
        if !ordered.contains(&span) {
            ordered.push(span);
        }
    };
    for (parent, siblings) in &mut groups {
        if siblings.len() <= 1 || parent.is_some_and(|p| starts.contains(&p)) {
            continue;
        }
        siblings.sort_by(|a, b| a.start.cmp(&b.start).then(a.end.cmp(&b.end)));
        let span = (siblings[0].start, siblings[siblings.len() - 1].end);
        add(span, &mut ordered);
    }
    let mut maximal: Vec<&Candidate> = found
        .iter()
        .filter(|c| c.parent.is_none_or(|p| !starts.contains(&p)))
        .collect();
    maximal.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    for c in maximal {
        add((c.start, c.end), &mut ordered);
    }
    ordered
}

/// HTML elements promptfoo recognizes (custom elements, with a `-`, count too).
const HTML_ELEMENTS: [&str; 113] = [
    "html",
    "head",
    "title",
    "base",
    "link",
    "meta",
    "style",
    "body",
    "article",
    "section",
    "nav",
    "aside",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "footer",
    "address",
    "p",
    "hr",
    "pre",
    "blockquote",
    "ol",
    "ul",
    "li",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "main",
    "div",
    "a",
    "em",
    "strong",
    "small",
    "s",
    "cite",
    "q",
    "dfn",
    "abbr",
    "ruby",
    "rt",
    "rp",
    "data",
    "time",
    "code",
    "var",
    "samp",
    "kbd",
    "sub",
    "sup",
    "i",
    "b",
    "u",
    "mark",
    "bdi",
    "bdo",
    "span",
    "br",
    "wbr",
    "img",
    "iframe",
    "embed",
    "object",
    "param",
    "picture",
    "source",
    "video",
    "audio",
    "track",
    "map",
    "area",
    "svg",
    "math",
    "script",
    "noscript",
    "canvas",
    "ins",
    "del",
    "table",
    "caption",
    "colgroup",
    "col",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "td",
    "th",
    "form",
    "label",
    "input",
    "button",
    "select",
    "datalist",
    "optgroup",
    "option",
    "textarea",
    "output",
    "progress",
    "meter",
    "fieldset",
    "legend",
    "details",
    "summary",
    "dialog",
    "menu",
    "slot",
    "template",
];

/// Elements that never have content, so they do not nest what follows.
const VOID_ELEMENTS: [&str; 14] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// `Ok(())` or promptfoo's reason why the output is not an HTML document or
/// fragment.
pub(crate) fn is_html(text: &str) -> Result<(), &'static str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("Output is empty");
    }
    if trimmed.len() > 10 * 1024 * 1024 {
        return Err("Output exceeds maximum size limit");
    }
    if trimmed
        .get(..5)
        .is_some_and(|head| head.eq_ignore_ascii_case("<?xml"))
    {
        return Err("Output appears to be XML, not HTML");
    }
    let bytes = trimmed.as_bytes();
    let mut depth = 0usize;
    let mut explicit_body = false;
    let mut recognized = false;
    let mut stray_text = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            let next = trimmed[i..].find('<').map_or(trimmed.len(), |n| i + n);
            if depth == 0 && !trimmed[i..next].trim().is_empty() {
                stray_text = true;
            }
            i = next.max(i + 1);
            continue;
        }
        let rest = &trimmed[i..];
        if rest.starts_with("<!") || rest.starts_with("<?") {
            i = declaration_end(trimmed, i) + 1;
            continue;
        }
        let closing = rest.starts_with("</");
        let name_at = i + if closing { 2 } else { 1 };
        let name = match read_name(trimmed, name_at) {
            Some(name) if name.starts_with(|c: char| c.is_ascii_alphabetic()) => name,
            // A lone `<` is text.
            _ => {
                if depth == 0 {
                    stray_text = true;
                }
                i += 1;
                continue;
            }
        };
        let Some(end) = tag_end(bytes, i) else {
            i += 1;
            continue;
        };
        let lower = name.to_ascii_lowercase();
        let wrapper = matches!(lower.as_str(), "html" | "head" | "body");
        if closing {
            if !wrapper && depth > 0 {
                depth -= 1;
            }
        } else {
            if lower == "body" {
                explicit_body = true;
            }
            if HTML_ELEMENTS.contains(&lower.as_str()) || lower.contains('-') {
                recognized = true;
            }
            let self_closing = trimmed[i..end].trim_end().ends_with('/');
            if !wrapper && !self_closing && !VOID_ELEMENTS.contains(&lower.as_str()) {
                depth += 1;
                if lower == "script" || lower == "style" {
                    // Raw text up to the closing tag.
                    let close = format!("</{lower}");
                    let after = &trimmed[end + 1..];
                    match after.to_ascii_lowercase().find(&close) {
                        Some(at) => {
                            i = end + 1 + at;
                            continue;
                        }
                        None => break,
                    }
                }
            }
        }
        i = end + 1;
    }
    if stray_text && !explicit_body {
        return Err("Output must be wrapped in HTML tags");
    }
    if !recognized {
        return Err("Output does not contain recognized HTML elements");
    }
    Ok(())
}

static HTML_INDICATORS: LazyLock<[(Regex, u32); 6]> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).expect("html indicator compiles");
    [
        (re(r"<[a-zA-Z][a-zA-Z0-9-]*(?:\s[^>]*)?/>"), 1),
        (re(r"&(?:[a-zA-Z]+|#[0-9]+|#x[0-9a-fA-F]+);"), 1),
        (re(r"(?i)<!DOCTYPE\s+html"), 2),
        (re(r"<!--[^-]*(?:-[^-]+)*-->"), 1),
        (re(r#"\s[a-zA-Z-]+=\s*["'][^"']*["']"#), 1),
        (
            re(
                r"(?i)<(html|head|body|div|span|p|a|img|h[1-6]|ul|ol|li|table|tr|td|th|form|input|button|script|style|link|meta|br|hr)(?-u:\b)",
            ),
            2,
        ),
    ]
});

static OPENING_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<[a-zA-Z][a-zA-Z0-9-]*(?:\s[^>]*)?>").expect("compiles"));
static CLOSING_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"</[a-zA-Z][a-zA-Z0-9-]*\s*>").expect("compiles"));

/// promptfoo's heuristic: at least two points of HTML evidence.
pub(crate) fn contains_html(text: &str) -> bool {
    if text.len() > 10 * 1024 * 1024 {
        return false;
    }
    let opening = OPENING_TAG.is_match(text);
    let closing = CLOSING_TAG.is_match(text);
    let mut score = match (opening, closing) {
        (true, true) => 2,
        (true, false) | (false, true) => 1,
        _ => 0,
    };
    for (pattern, points) in HTML_INDICATORS.iter() {
        if pattern.is_match(text) {
            score += points;
        }
    }
    score >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn is_xml_checks_well_formedness_and_paths() {
        let xml = r#"<analysis id="7"><sentiment>positive</sentiment><item>a</item><item>b</item></analysis>"#;
        assert!(is_xml(xml, &[]).valid);
        assert!(
            is_xml(
                xml,
                &req(&["analysis.sentiment", "analysis.item.1", "analysis.@_id"])
            )
            .valid
        );
        let missing = is_xml(xml, &req(&["analysis.summary", "analysis.sentiment.x"]));
        assert!(!missing.valid);
        assert_eq!(
            missing.reason,
            "XML is missing required elements: analysis.summary, analysis.sentiment.x"
        );
        let broken = is_xml("<a><b></a>", &[]);
        assert!(
            broken.reason.starts_with("XML parsing failed:"),
            "{}",
            broken.reason
        );
        assert!(!is_xml("Here: <a/>", &[]).valid);
    }

    #[test]
    fn contains_xml_finds_embedded_elements() {
        let text = "Sure! <result><score>5</score></result> Hope that helps.";
        assert!(contains_xml(text, &req(&["result.score"])).valid);
        assert!(!contains_xml(text, &req(&["result.reason"])).valid);
        // Top-level siblings are tried together.
        assert!(contains_xml("<a>1</a> and <b>2</b>", &req(&["a", "b"])).valid);
        assert_eq!(
            contains_xml("no markup here", &[]).reason,
            "No XML content found in the output"
        );
        assert!(!contains_xml("<a><b></a>", &[]).valid);
    }

    #[test]
    fn is_html_wants_recognized_elements_and_no_stray_text() {
        assert!(is_html("<div><p>Hello</p></div>").is_ok());
        assert!(is_html("<!DOCTYPE html><html><body>Hi</body></html>").is_ok());
        assert_eq!(
            is_html("Text <b>bold</b> more"),
            Err("Output must be wrapped in HTML tags")
        );
        assert_eq!(
            is_html("<foo>bar</foo>"),
            Err("Output does not contain recognized HTML elements")
        );
        assert_eq!(
            is_html("<?xml version=\"1.0\"?><a/>"),
            Err("Output appears to be XML, not HTML")
        );
        assert_eq!(is_html("   "), Err("Output is empty"));
        assert!(is_html("<my-widget>ok</my-widget>").is_ok());
        assert!(is_html("<script>if (a < b) {}</script>").is_ok());
    }

    #[test]
    fn contains_html_counts_indicators() {
        assert!(contains_html("Here is <div>some</div> text"));
        assert!(contains_html("a <br/> b"));
        assert!(!contains_html("5 < 6 and 7 > 3"));
        assert!(!contains_html("just &amp; text"));
    }
}
