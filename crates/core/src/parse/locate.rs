//! Finds the line and column of the field a [`SuiteError`] names
//! (`tests[2].assert[0].value`) in the suite's text, so errors point into the
//! file. serde_yaml_ng keeps no positions, so the text is scanned a second
//! time, only when there is an error, with yaml-rust2's marked events,
//! keeping only the nodes on the error's path.

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

use crate::error::SuiteError;

/// A node's position (1-based) and, when it lies on the path looked for,
/// its children on that path: a suite of a million tests is scanned with
/// memory for one path, not a tree of every node.
#[derive(Debug)]
struct Node {
    line: usize,
    column: usize,
    children: Children,
}

#[derive(Debug)]
enum Children {
    Leaf,
    /// The items on the path (with their index), and whether every item
    /// is a mapping.
    Seq {
        items: Vec<(usize, Node)>,
        all_maps: bool,
    },
    /// The entries on the path, each positioned at its key.
    Map(Vec<(String, Node)>),
}

enum Frame {
    Seq {
        node: Node,
        path: String,
        keep: bool,
        len: usize,
        items: Vec<(usize, Node)>,
        all_maps: bool,
    },
    Map {
        node: Node,
        path: String,
        keep: bool,
        entries: Vec<(String, Node)>,
        key: Option<(String, usize, usize)>,
        /// Where its first key is.
        first_key: Option<(usize, usize)>,
    },
}

/// Whether the node at `path` is `target` or one of its ancestors.
fn on_path(target: &str, path: &str) -> bool {
    path.is_empty()
        || target
            .strip_prefix(path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

struct Builder<'a> {
    target: &'a str,
    stack: Vec<Frame>,
    root: Option<Node>,
}

impl Builder<'_> {
    /// The path of the next node in the innermost collection, when that
    /// node is on the target path (`None` for a mapping's key).
    fn next_path(&self) -> Option<String> {
        let path = match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq {
                keep: true,
                path,
                len,
                ..
            }) => format!("{path}[{len}]"),
            Some(Frame::Map {
                keep: true,
                path,
                key: Some((key, ..)),
                ..
            }) => {
                if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                }
            }
            Some(_) => return None,
        };
        on_path(self.target, &path).then_some(path)
    }

    fn emit(&mut self, node: Node, key_text: Option<String>) {
        let kept = self.next_path().is_some();
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq {
                len,
                items,
                all_maps,
                ..
            }) => {
                *all_maps &= matches!(node.children, Children::Map(_));
                if kept {
                    items.push((*len, node));
                }
                *len += 1;
            }
            Some(Frame::Map {
                entries,
                key,
                first_key,
                ..
            }) => match key.take() {
                None => {
                    first_key.get_or_insert((node.line, node.column));
                    *key = Some((key_text.unwrap_or_default(), node.line, node.column));
                }
                Some((text, line, column)) => {
                    if kept {
                        entries.push((
                            text,
                            Node {
                                line,
                                column,
                                children: node.children,
                            },
                        ));
                    }
                }
            },
        }
    }

    fn open(&mut self, node: Node, seq: bool) {
        let path = self.next_path();
        let keep = path.is_some();
        let path = path.unwrap_or_default();
        self.stack.push(if seq {
            Frame::Seq {
                node,
                path,
                keep,
                len: 0,
                items: Vec::new(),
                all_maps: true,
            }
        } else {
            Frame::Map {
                node,
                path,
                keep,
                entries: Vec::new(),
                key: None,
                first_key: None,
            }
        });
    }

    /// Closes the innermost open collection.
    fn end(&mut self) {
        let node = match self.stack.pop() {
            Some(Frame::Seq {
                mut node,
                items,
                all_maps,
                ..
            }) => {
                node.children = Children::Seq { items, all_maps };
                node
            }
            Some(Frame::Map {
                mut node,
                entries,
                first_key,
                ..
            }) => {
                // A block mapping's start is marked after its first key; the
                // key is where a reader looks.
                if let Some(first) = first_key
                    && first < (node.line, node.column)
                {
                    (node.line, node.column) = first;
                }
                node.children = Children::Map(entries);
                node
            }
            None => return,
        };
        self.emit(node, None);
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let at = |children| Node {
            line: mark.line(),
            column: mark.col() + 1,
            children,
        };
        match event {
            Event::Scalar(text, ..) => self.emit(at(Children::Leaf), Some(text)),
            Event::Alias(_) => self.emit(at(Children::Leaf), None),
            Event::SequenceStart(..) => self.open(at(Children::Leaf), true),
            Event::MappingStart(..) => self.open(at(Children::Leaf), false),
            Event::SequenceEnd | Event::MappingEnd => self.end(),
            _ => {}
        }
    }
}

/// The document's position tree along `target`, as far as it parses.
fn tree(text: &str, target: &str) -> Option<Node> {
    let mut builder = Builder {
        target,
        stack: Vec::new(),
        root: None,
    };
    let mut parser = Parser::new_from_str(text);
    // On a scan error the events so far still stand; close what is open.
    let _ = parser.load(&mut builder, false);
    while !builder.stack.is_empty() {
        builder.end();
    }
    builder.root
}

/// The deepest node on `path` below `node` (`None` when not even the first
/// step matches).
fn find<'a>(node: &'a Node, path: &str) -> Option<&'a Node> {
    let path = path.strip_prefix('.').unwrap_or(path);
    if path.is_empty() {
        return Some(node);
    }
    let (child, rest) = match &node.children {
        Children::Seq { items, .. } => {
            let inner = path.strip_prefix('[')?;
            let end = inner.find(']')?;
            let index: usize = inner[..end].parse().ok()?;
            let (_, item) = items.iter().find(|(i, _)| *i == index)?;
            (item, &inner[end + 1..])
        }
        Children::Map(entries) => entries
            .iter()
            .filter(|(key, _)| {
                path.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(key, child)| (child, &path[key.len()..]))?,
        Children::Leaf => return None,
    };
    Some(find(child, rest).unwrap_or(child))
}

/// Line and column (1-based) of the field at `path`, or of its nearest
/// ancestor that exists in the text.
pub(super) fn position(text: &str, path: &str) -> Option<(usize, usize)> {
    if path.is_empty() {
        return None;
    }
    let root = tree(text, path)?;
    // Tests read from files are numbered after the document's own items, so
    // an index under `tests` only names a document item when no item is a file.
    if path.starts_with("tests[")
        && let Children::Map(entries) = &root.children
        && let Some((_, tests)) = entries.iter().find(|(k, _)| k == "tests")
        && !matches!(&tests.children, Children::Seq { all_maps: true, .. })
    {
        return None;
    }
    find(&root, path).map(|node| (node.line, node.column))
}

/// Fills in the line and column of an error about the suite's own text.
pub(super) fn locate(text: &str, mut err: SuiteError) -> SuiteError {
    if err.line.is_some() || err.file.is_some() {
        return err;
    }
    if let Some((line, column)) = position(text, &err.path) {
        err.line = Some(line);
        err.column = Some(column);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = "prompts:\n  - 'Hi {{x}}'\nproviders: [echo, {id: b, config: {t: 1}}]\ntests:\n  - vars: {x: a}\n  - vars:\n      x: b\n    assert:\n      - type: contains\n        value: a\n      - type: regex\n        value: 'a(b'\n";

    #[test]
    fn block_and_flow_paths_resolve_to_their_keys() {
        assert_eq!(position(SUITE, "prompts[0]"), Some((2, 5)));
        assert_eq!(position(SUITE, "providers[1].config.t"), Some((3, 36)));
        assert_eq!(position(SUITE, "tests[1].assert[1].value"), Some((12, 9)));
        assert_eq!(position(SUITE, "tests[1].vars.x"), Some((7, 7)));
    }

    #[test]
    fn missing_fields_fall_back_to_the_nearest_ancestor() {
        assert_eq!(position(SUITE, "tests[1].assert[0].weight"), Some((9, 9)));
        assert_eq!(position(SUITE, "tests[7]"), Some((4, 1)));
        assert_eq!(position(SUITE, "nowhere"), None);
        assert_eq!(position(SUITE, ""), None);
    }

    #[test]
    fn keys_with_dots_and_colons_match_whole() {
        let text = "providers:\n  - ollama:llama3.1: {config: {a: 1}}\n";
        assert_eq!(
            position(text, "providers[0].ollama:llama3.1.config"),
            Some((2, 23))
        );
    }

    #[test]
    fn test_indices_are_not_located_when_files_shift_them() {
        let text = "tests:\n  - file://a.csv\n  - vars: {x: 1}\n";
        assert_eq!(position(text, "tests[1].vars"), None);
        assert_eq!(position(text, "tests"), Some((1, 1)));
    }

    #[test]
    fn json_documents_are_located_too() {
        let text = "{\n  \"prompts\": [\"a\"],\n  \"tests\": [{\"vars\": {\"x\": 1}}]\n}";
        assert_eq!(position(text, "tests[0].vars.x"), Some((3, 23)));
    }

    #[test]
    fn broken_text_never_panics() {
        for text in ["", "[", "a: [b", "- {", ": :", "\t\u{feff}x: 1"] {
            let _ = position(text, "tests[0].vars");
        }
    }
}
