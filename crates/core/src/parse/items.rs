//! The items of a suite's inline `tests` list, read one at a time from the
//! suite's text, so a suite of a million tests never exists as one tree
//! (serde_yaml_ng's loader alone peaks at 50 times the text's size).
//!
//! JSON: `split_json` already checked the text; the array's items are cut
//! out of it one by one. YAML: yaml-rust2's event parser (which keeps
//! positions, unlike serde_yaml_ng) first checks that the document is one
//! plain mapping whose `tests` is a list and that nothing refers across
//! items (no aliases, tags or merge keys at the top); the header (the text
//! with the list cut out) is then read by serde_yaml_ng, the reader of the
//! whole-document path, and each item is built from the same events, its
//! scalars resolved as serde_yaml_ng resolves them, so a value reads the
//! same either way (reading each item's text again with serde_yaml_ng cost
//! about as much as finding it). An item with anything else in it (an
//! alias, an anchor, a tag, a merge key) has the whole document read, as
//! does any suite of another shape.

use std::str::Chars;

use serde_yaml_ng::{Mapping, Value as Yaml};
use yaml_rust2::{
    parser::{Event, Parser},
    scanner::TScalarStyle,
};

use super::{SuiteFormat, load_document, parse_yaml};
use crate::error::SuiteError;

/// The items of a JSON array, as text, one at a time.
#[derive(Clone, Copy)]
pub(super) struct JsonItems<'a> {
    rest: &'a str,
}

impl<'a> JsonItems<'a> {
    /// `array` must be a valid JSON array (checked by the caller's parse).
    pub(super) fn new(array: &'a str) -> Self {
        let rest = array.trim_start().strip_prefix('[').unwrap_or_default();
        Self { rest }
    }
}

impl<'a> Iterator for JsonItems<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start();
        let rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        if rest.is_empty() || rest.starts_with(']') {
            self.rest = "";
            return None;
        }
        let end = json_value_end(rest);
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// The length in bytes of the (valid) JSON value at the start of `text`.
fn json_value_end(text: &str) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 0 {
                    return i + 1;
                }
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' if depth == 0 => return i,
            b if depth == 0 && b.is_ascii_whitespace() => return i,
            _ => {}
        }
    }
    text.len()
}

/// What the first pass over a YAML suite found.
struct Shape {
    /// Events before the first of the `tests` list's items.
    skip: usize,
    /// The list's text, in chars (yaml-rust2 counts chars); `end` is
    /// `None` when the list is the last thing in the text.
    start: usize,
    end: Option<usize>,
    /// Known only once the list was read to its end.
    empty: bool,
}

/// A YAML suite (`text` without its BOM) split like `split_json`: every
/// top-level key but `tests` as a tree, and the items of `tests`, a list,
/// read one at a time. `None` when the suite is not that simple: the
/// whole-document path then reads it, errors included.
pub(super) fn split_yaml(text: &str) -> Option<(Mapping, YamlItems<'_>)> {
    let shape = shape(text)?;
    let start = byte_offset(text, shape.start)?;
    let end = match shape.end {
        Some(end) => byte_offset(text, end)?.max(start),
        None => text.len(),
    };
    // The list gives way to its line breaks, so `tests:` is left null and
    // everything after it keeps its lines.
    let mut header = String::with_capacity(text.len() - (end - start));
    header.push_str(&text[..start]);
    header.extend(text[start..end].chars().filter(|c| *c == '\n'));
    header.push_str(&text[end..]);
    let Ok(Yaml::Mapping(mut header)) = parse_yaml(&header) else {
        return None;
    };
    header.shift_remove("tests");
    let mut parser = Parser::new_from_str(text);
    for _ in 0..shape.skip {
        parser.next_token().ok()?;
    }
    let empty = match shape.end {
        Some(_) => shape.empty,
        None => matches!(parser.peek(), Ok((Event::SequenceEnd, _))),
    };
    let items = YamlItems {
        text,
        state: State::Events {
            parser: Box::new(parser),
        },
        read: 0,
        empty,
    };
    Some((header, items))
}

/// Whether nothing follows the block list that starts at byte `start` but
/// its own items, the list being the value of a key at column `key_col`:
/// every line from there on that starts at or left of that column is
/// blank, a comment or one of the list's `- ` entries. Another key of the
/// same mapping, a document marker or a flow list's closing `]` would; so
/// would a few things the split reads well (a multi-line scalar running
/// back to the margin), for which it answers no, and the whole text is
/// scanned first.
fn nothing_after_list(text: &str, start: usize, key_col: usize) -> bool {
    let line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    text[line_start..].split('\n').all(|line| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let content = line.trim_start_matches(' ');
        line.len() - content.len() > key_col
            || matches!(
                content.as_bytes(),
                [] | [b'#', ..] | [b'-'] | [b'-', b' ', ..]
            )
    })
}

/// The byte offset of char `index` of `text`.
fn byte_offset(text: &str, index: usize) -> Option<usize> {
    text.char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()))
        .nth(index)
}

/// The first pass: one document, a mapping at the top with one `tests`
/// key whose value is a list, and no alias, tag or top-level merge key.
/// When the list is the last thing in the text (the usual layout), the
/// pass stops at its start: its items are read once, by [`YamlItems`],
/// and anything there the split cannot read (an alias to an anchor
/// outside the item, say) makes it read the whole document after all.
fn shape(text: &str) -> Option<Shape> {
    let mut parser = Parser::new_from_str(text);
    let mut events = 0usize;
    let mut depth = 0usize;
    let mut documents = 0;
    // At the top mapping: whether the next node is a key, and whether the
    // value being read is that of `tests`.
    let mut at_key = true;
    let mut in_tests = false;
    let mut tests_seen = false;
    let mut key_col = 0;
    let mut shape: Option<Shape> = None;
    loop {
        let (event, mark) = parser.next_token().ok()?;
        events += 1;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return None;
                }
            }
            Event::Alias(_) => return None,
            Event::Scalar(value, _, _, tag) => {
                if tag.is_some() || depth == 0 {
                    return None;
                }
                if depth == 1 {
                    if at_key {
                        if value == "<<" || (value == "tests" && tests_seen) {
                            return None;
                        }
                        in_tests = value == "tests";
                        tests_seen |= in_tests;
                        if in_tests {
                            key_col = mark.col();
                        }
                    } else if in_tests {
                        return None;
                    }
                    at_key = !at_key;
                } else if depth == 2
                    && in_tests
                    && let Some(shape) = &mut shape
                {
                    shape.empty = false;
                }
            }
            Event::SequenceStart(_, ref tag) | Event::MappingStart(_, ref tag) => {
                let is_list = matches!(event, Event::SequenceStart(..));
                if tag.is_some() || (depth == 0 && is_list) || (depth == 1 && at_key) {
                    return None;
                }
                if depth == 1 && in_tests {
                    if !is_list {
                        return None;
                    }
                    if let Some(at) = byte_offset(text, mark.index())
                        && nothing_after_list(text, at, key_col)
                    {
                        return Some(Shape {
                            skip: events,
                            start: mark.index(),
                            end: None,
                            empty: false,
                        });
                    }
                    shape = Some(Shape {
                        skip: events,
                        start: mark.index(),
                        end: Some(mark.index()),
                        empty: true,
                    });
                } else if depth == 2
                    && in_tests
                    && let Some(shape) = &mut shape
                {
                    shape.empty = false;
                }
                depth += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                depth = depth.checked_sub(1)?;
                if depth == 1 {
                    if in_tests && let Some(shape) = &mut shape {
                        // A flow list's end is marked at its `]`.
                        let mut end = mark.index();
                        if text.chars().nth(end) == Some(']') {
                            end += 1;
                        }
                        shape.end = Some(end);
                        in_tests = false;
                    }
                    at_key = true;
                }
            }
        }
    }
    shape
}

/// The items of a YAML suite's `tests` list, one at a time.
pub(super) struct YamlItems<'a> {
    text: &'a str,
    state: State<'a>,
    /// Items read so far.
    read: usize,
    empty: bool,
}

enum State<'a> {
    /// Reading events.
    Events {
        parser: Box<Parser<Chars<'a>>>,
    },
    /// The whole document was read after all (see [`YamlItems::fall_back`]).
    Tree(std::vec::IntoIter<Yaml>),
    Done,
}

impl YamlItems<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.empty
    }

    /// An item the events cannot build alone (see [`node`]), or an event
    /// yaml-rust2 refused on the second pass: the whole document is read as
    /// before the split, for its exact error, or, should it read, for the
    /// rest of its items.
    fn fall_back(&mut self) -> Option<Result<Yaml, SuiteError>> {
        self.state = State::Done;
        let mut doc = match load_document(self.text, SuiteFormat::Yaml) {
            Ok(doc) => doc,
            Err(err) => return Some(Err(err)),
        };
        if let Yaml::Mapping(map) = &mut doc
            && let Some(Yaml::Sequence(items)) = map.shift_remove("tests")
        {
            let mut rest = items.into_iter();
            rest.by_ref().take(self.read).for_each(drop);
            self.state = State::Tree(rest);
        }
        self.next()
    }
}

impl Iterator for YamlItems<'_> {
    type Item = Result<Yaml, SuiteError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match &mut self.state {
            State::Done => return None,
            State::Tree(items) => items.next().map(Ok),
            State::Events { parser } => match next_item(parser) {
                Ok(Some(item)) => Some(Ok(item)),
                Ok(None) => {
                    self.state = State::Done;
                    None
                }
                Err(()) => return self.fall_back(),
            },
        };
        self.read += usize::from(item.is_some());
        item
    }
}

/// The next item of the list, built from its events; `None` at the list's
/// end, `Err` for anything the split cannot read (the caller falls back).
fn next_item(parser: &mut Parser<Chars<'_>>) -> Result<Option<Yaml>, ()> {
    let (event, _) = parser.next_token().map_err(drop)?;
    match event {
        Event::SequenceEnd => Ok(None),
        // Only its kind matters: a list is not a test.
        Event::SequenceStart(..) => {
            skip_to_end(parser)?;
            Ok(Some(Yaml::Sequence(Vec::new())))
        }
        event => node(parser, event, 0).map(Some),
    }
}

/// Nesting deeper than this is left to the whole document (serde_yaml_ng
/// refuses it there, as it does past 128 levels).
const MAX_DEPTH: usize = 128;

/// The node that `event` starts, read from its events as serde_yaml_ng
/// reads it in place (scalars resolved by [`plain`]). `Err` for what only
/// the whole document can read: aliases, anchors, tags, merge keys, a key
/// repeated (an error there), deep nesting.
fn node(parser: &mut Parser<Chars<'_>>, event: Event, depth: usize) -> Result<Yaml, ()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    let next = |parser: &mut Parser<Chars<'_>>| parser.next_token().map(|(e, _)| e).map_err(drop);
    match event {
        Event::Scalar(value, TScalarStyle::Plain, 0, None) => plain(value),
        Event::Scalar(value, _, 0, None) => Ok(Yaml::String(value)),
        Event::SequenceStart(0, None) => {
            let mut items = Vec::new();
            loop {
                match next(parser)? {
                    Event::SequenceEnd => return Ok(Yaml::Sequence(items)),
                    event => items.push(node(parser, event, depth + 1)?),
                }
            }
        }
        Event::MappingStart(0, None) => {
            let mut map = Mapping::new();
            loop {
                let key = match next(parser)? {
                    Event::MappingEnd => return Ok(Yaml::Mapping(map)),
                    event => node(parser, event, depth + 1)?,
                };
                if key.as_str() == Some("<<") || map.contains_key(&key) {
                    return Err(());
                }
                let event = next(parser)?;
                map.insert(key, node(parser, event, depth + 1)?);
            }
        }
        _ => Err(()),
    }
}

/// A plain scalar as serde_yaml_ng resolves it: null, a boolean, a number
/// or a string. One that starts with a letter (keys and words, the most of
/// them) is resolved here as it does (no number starts with a letter: only
/// `null` and the booleans, in their three spellings, are not strings);
/// the rest are read by serde_yaml_ng alone.
fn plain(value: String) -> Result<Yaml, ()> {
    if value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Ok(match value.as_str() {
            "null" | "Null" | "NULL" => Yaml::Null,
            "true" | "True" | "TRUE" => Yaml::Bool(true),
            "false" | "False" | "FALSE" => Yaml::Bool(false),
            _ => Yaml::String(value),
        });
    }
    match serde_yaml_ng::from_str(&value) {
        Ok(scalar @ (Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_))) => Ok(scalar),
        _ => Err(()),
    }
}

/// Reads past the end of the collection just opened.
fn skip_to_end(parser: &mut Parser<Chars<'_>>) -> Result<(), ()> {
    let mut depth = 1usize;
    loop {
        match parser.next_token().map_err(drop)?.0 {
            Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
            Event::SequenceEnd | Event::MappingEnd => {
                depth -= 1;
                if depth == 0 {
                    return Ok(());
                }
            }
            Event::StreamEnd => return Err(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_items_are_cut_whole() {
        let items: Vec<&str> =
            JsonItems::new(" [ {\"a\": [1, \"]\"]}, \"x\\\"y\" ,3,true, null , [] ] ").collect();
        assert_eq!(
            items,
            [
                "{\"a\": [1, \"]\"]}",
                "\"x\\\"y\"",
                "3",
                "true",
                "null",
                "[]"
            ]
        );
        assert_eq!(JsonItems::new("[ ]").count(), 0);
    }

    fn items(text: &str) -> Option<(Mapping, Vec<Yaml>)> {
        let (header, items) = split_yaml(text)?;
        Some((header, items.map(Result::unwrap).collect()))
    }

    #[test]
    fn yaml_items_read_as_the_whole_document_reads_them() {
        let text = "prompts: [x]\ntests:\n  - vars: {x: 1}\n    assert: []\n  # c\n  - \"file://a.csv\"\n  - 'q'\n  - 12\n  -\n    vars:\n      y: |\n        hi\n  - {a: 1,\n     b: 2}\n  - [a]\nproviders: [echo]\n";
        let (header, got) = items(text).unwrap();
        let whole = parse_yaml(text).unwrap();
        let Yaml::Sequence(want) = &whole["tests"] else {
            panic!()
        };
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            if !w.is_sequence() {
                assert_eq!(g, w);
            }
        }
        assert_eq!(header.len(), 2);
        assert_eq!(header["providers"], whole["providers"]);
    }

    #[test]
    fn scalars_resolve_as_serde_yaml_ng_resolves_them_in_place() {
        let scalars = [
            "x",
            "type",
            "null",
            "Null",
            "NULL",
            "nULL",
            "~",
            "true",
            "True",
            "TRUE",
            "tRUE",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "0",
            "12",
            "-3",
            "+4",
            "012",
            "-012",
            "0x1F",
            "0o17",
            "0b1",
            "1.5",
            "-.5",
            "1e3",
            "1_000",
            ".inf",
            "-.Inf",
            ".NaN",
            "inf",
            "nan",
            "infinity",
            "1.0.0",
            "2024-01-01",
            "12:30",
            "a b  c",
            "é",
            "3 apples",
            "'q'",
            "\"d\\n\"",
            "\"\\u00e9\"",
            "a:b",
            "x#y",
        ];
        let mut text = String::from("prompts: [x]\ntests:\n");
        for s in scalars {
            text.push_str(&format!(
                "  - vars: {{k: {s}}}\n    v:\n      {s}: {s}\n      l: [{s}, {s}]\n"
            ));
            text.push_str(&format!("  - {s}\n"));
        }
        text.push_str("  - vars:\n      b: |\n        one\n         two\n\n      f: >-\n        a\n        b\n      m: x\n        y\n      e:\n      q: ''\n      c: [a, {}, [], ~, \"\"]\n    ? [k, 1]\n    : complex\n  -\n  - ~\n");
        let (_, got) = items(&text).unwrap();
        let whole = parse_yaml(&text).unwrap();
        let Yaml::Sequence(want) = &whole["tests"] else {
            panic!()
        };
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn items_with_anchors_tags_merges_or_repeated_keys_read_as_the_whole_document() {
        for text in [
            "prompts: [x]\ntests:\n  - vars: &v {x: 1}\n    y: *v\n  - vars: {x: 2}\n",
            "prompts: [x]\ntests:\n  - vars: !!map {x: 1}\n",
            "prompts: [x]\ntests:\n  - vars: {x: !!str 1}\n",
            "prompts: [x]\ntests:\n  - vars:\n      <<: {x: 1}\n      y: 2\n",
        ] {
            let (_, got) = items(text).unwrap();
            let whole = parse_yaml(text).unwrap();
            assert_eq!(Yaml::Sequence(got), whole["tests"], "{text}");
        }
        // A repeated key is the whole document's error.
        let text = "prompts: [x]\ntests:\n  - vars: {x: 1, x: 2}\n";
        let (_, mut items) = split_yaml(text).unwrap();
        assert!(matches!(items.next(), Some(Err(_))), "{text}");
    }

    #[test]
    fn flow_and_indentless_lists_split_too() {
        for text in [
            "tests: [{vars: {x: 1}}, 'file://t.csv', {}]\nprompts: [x]\n",
            "tests:\n- vars: {x: 1}\n- \"file://t.csv\"\n- {}\nprompts: [x]\n",
            "{\"prompts\": [\"x\"], \"tests\": [{\"vars\": {\"x\": 1}}, \"file://t.csv\", {}]}",
        ] {
            let (header, got) = items(text).unwrap();
            let whole = parse_yaml(text).unwrap();
            assert_eq!(Yaml::Sequence(got), whole["tests"], "{text}");
            assert_eq!(header["prompts"], whole["prompts"], "{text}");
        }
    }

    #[test]
    fn suites_not_shaped_for_the_split_are_not_split() {
        for text in [
            "d: &d {x: 1}\ntests:\n  - vars: *d\nprompts: [x]\n",
            "tests:\n  - !t {vars: {x: 1}}\nprompts: [x]\n",
            "tests: file://t.csv\n",
            "tests: []\ntests: []\n",
            "- a\n",
            "a: 1\n---\nb: 2\n",
        ] {
            assert!(split_yaml(text).is_none(), "{text}");
        }
    }

    #[test]
    fn items_that_refer_outside_themselves_are_read_from_the_whole_document() {
        // The list is last, so the first pass stopped at its start; each
        // item then reads alone, or the whole document is read for it.
        for text in [
            "prompts: [x]\nd: &d {x: 1}\ntests:\n  - vars: {x: 0}\n  - vars: *d\n  - vars: {x: 2}\n",
            "prompts: [x]\ntests:\n  - &a {vars: {x: 1}}\n  - *a\n",
            "prompts: [x]\nb: &b {x: 1}\ntests:\n  - vars:\n      <<: *b\n      y: 2\n",
            "prompts: [x]\ntests:\n  - !t {vars: {x: 1}}\n  - vars: {x: 2}\n",
        ] {
            let (header, got) = items(text).unwrap();
            let whole = parse_yaml(text).unwrap();
            assert_eq!(Yaml::Sequence(got), whole["tests"], "{text}");
            assert_eq!(header["prompts"], whole["prompts"], "{text}");
        }
    }

    #[test]
    fn keys_after_the_list_are_found_however_the_mapping_is_indented() {
        for (text, after) in [
            (
                "prompts: [x]\ntests:\n- vars: {x: 1}\n# done\n\nproviders: [echo]\n",
                true,
            ),
            (
                "  prompts: [x]\n  tests:\n    - vars: {x: 1}\n  providers: [echo]\n",
                true,
            ),
            (
                "prompts: [x]\ntests:\n  - vars: {x: 1}\n-providers: [echo]\n",
                true,
            ),
            ("prompts: [x]\ntests:\n  - vars: {x: 1}\n---\n", true),
            (
                "prompts: [x]\ntests:\n- vars: {x: 1}\n  # c\n\n- vars: {x: 2}\n",
                false,
            ),
            ("prompts: [x]\ntests:\r\n  - vars: {x: 1}\r\n", false),
        ] {
            let start = text.find("- ").unwrap();
            let key_col = text[..text.find("tests").unwrap()]
                .rsplit('\n')
                .next()
                .unwrap()
                .len();
            assert_eq!(!nothing_after_list(text, start, key_col), after, "{text}");
            if let Some((header, got)) = items(text) {
                let whole = parse_yaml(text).unwrap();
                assert_eq!(Yaml::Sequence(got), whole["tests"], "{text}");
                for key in ["prompts", "providers", "-providers"] {
                    assert_eq!(header.get(key), whole.get(key), "{text}");
                }
            }
        }
    }

    #[test]
    fn an_item_only_the_whole_document_refuses_gives_its_error() {
        let text = "tests:\n  - vars: {x: 1}\n  - vars: {x: 1}\n    vars: {x: 2}\n";
        let (_, items) = split_yaml(text).unwrap();
        let got: Vec<_> = items.collect();
        assert!(got[0].is_ok());
        let err = got[1].as_ref().unwrap_err();
        assert!(err.message.contains("duplicate entry"), "{err}");
        assert_eq!(err, &load_document(text, SuiteFormat::Yaml).unwrap_err());
    }

    #[test]
    fn items_that_do_not_start_at_their_first_key_are_read_whole() {
        for text in [
            "tests:\n  - ? vars\n    : {x: 1}\n  - vars: {x: 2}\n",
            "tests:\n  - &a vars: {x: 1}\n  - vars: {x: 2}\n",
        ] {
            let (_, got) = items(text).unwrap();
            let whole = parse_yaml(text).unwrap();
            assert_eq!(Yaml::Sequence(got), whole["tests"], "{text}");
        }
    }

    #[test]
    fn every_cut_of_a_suite_parses_or_fails_without_panicking() {
        let text = "prompts: ['Say {{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: 'é1'}\n    assert: [{type: contains, value: '{{x}}'}]\n  - \"file://t.csv\"\n  -\n    vars:\n      x: |\n        ü\n  - {vars: {x: [a, b]}}\ntests2: [{a: 1}]\n";
        for (at, _) in text.char_indices() {
            let cut = &text[..at];
            let _ = super::super::parse_suite(cut, SuiteFormat::Auto);
            let _ = split_yaml(cut).map(|(_, items)| items.count());
        }
    }
}
