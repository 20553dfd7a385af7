//! JSON References inside a suite (`$ref: '#/assertionTemplates/polite'`),
//! replaced by what they point at before anything is validated, as promptfoo
//! does when it loads a config. Keys written beside a `$ref` are laid over
//! the target. Tool and function `parameters` in provider config are left
//! alone: their `$ref`s are JSON Schema's, for the model to read.

use serde_yaml_ng::Value as Yaml;

use super::{join, kind};
use crate::error::SuiteError;

/// A reference chain longer than this is taken for a cycle.
const MAX_DEPTH: usize = 32;
/// Most references one suite may resolve, so a few lines cannot expand into
/// an enormous document.
const MAX_REFS: usize = 10_000;

pub(super) fn resolve(doc: &mut Yaml) -> Result<(), SuiteError> {
    if !has_ref(doc) {
        return Ok(());
    }
    let root = doc.clone();
    let mut budget = MAX_REFS;
    resolve_in(doc, &root, "", 0, &mut budget)
}

fn has_ref(value: &Yaml) -> bool {
    match value {
        Yaml::Mapping(map) => map
            .iter()
            .any(|(k, v)| k.as_str() == Some("$ref") || has_ref(v)),
        Yaml::Sequence(items) => items.iter().any(has_ref),
        Yaml::Tagged(tagged) => has_ref(&tagged.value),
        _ => false,
    }
}

fn resolve_in(
    value: &mut Yaml,
    root: &Yaml,
    path: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<(), SuiteError> {
    match value {
        Yaml::Mapping(map) => {
            if let Some(target) = map.get("$ref") {
                let field = join(path, "$ref");
                let pointer = target.as_str().ok_or_else(|| {
                    SuiteError::at(
                        &field,
                        format!("expected a reference string, found {}", kind(target)),
                    )
                })?;
                let Some(fragment) = pointer.strip_prefix('#') else {
                    return Err(SuiteError::at(
                        field,
                        format!(
                            "`{pointer}`: only references within the suite (`#/…`) are supported; use `file://` to load a file"
                        ),
                    ));
                };
                if depth >= MAX_DEPTH {
                    return Err(SuiteError::at(
                        field,
                        format!("`{pointer}` is part of a reference cycle"),
                    ));
                }
                if *budget == 0 {
                    return Err(SuiteError::at(
                        field,
                        format!("the suite uses more than {MAX_REFS} references"),
                    ));
                }
                *budget -= 1;
                let mut replacement = lookup(root, fragment)
                    .ok_or_else(|| {
                        SuiteError::at(&field, format!("`{pointer}` points at nothing"))
                    })?
                    .clone();
                let siblings: Vec<(Yaml, Yaml)> = map
                    .iter()
                    .filter(|(k, _)| k.as_str() != Some("$ref"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !siblings.is_empty() {
                    let Yaml::Mapping(target) = &mut replacement else {
                        return Err(SuiteError::at(
                            field,
                            format!(
                                "`{pointer}` points at {}, so no other keys can be given beside it",
                                kind(&replacement)
                            ),
                        ));
                    };
                    for (k, v) in siblings {
                        target.insert(k, v);
                    }
                }
                *value = replacement;
                return resolve_in(value, root, path, depth + 1, budget);
            }
            for (k, v) in map.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                if key == "parameters" && path.contains(".config.") {
                    continue;
                }
                let child = join(path, key);
                resolve_in(v, root, &child, depth, budget)?;
            }
        }
        Yaml::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_in(item, root, &format!("{path}[{i}]"), depth, budget)?;
            }
        }
        Yaml::Tagged(tagged) => resolve_in(&mut tagged.value, root, path, depth, budget)?,
        _ => {}
    }
    Ok(())
}

/// RFC 6901 JSON Pointer (`/assertionTemplates/polite`, `~1` for `/`).
fn lookup<'a>(root: &'a Yaml, pointer: &str) -> Option<&'a Yaml> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut node = root;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token
            .replace("%20", " ")
            .replace("~1", "/")
            .replace("~0", "~");
        node = match node {
            Yaml::Mapping(map) => map.iter().find_map(|(k, v)| {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => return None,
                };
                (key == token).then_some(v)
            })?,
            Yaml::Sequence(items) => items.get(token.parse::<usize>().ok()?)?,
            Yaml::Tagged(tagged) => return lookup(&tagged.value, &format!("/{token}")),
            _ => return None,
        };
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Result<Yaml, SuiteError> {
        let mut doc: Yaml = serde_yaml_ng::from_str(text).unwrap();
        resolve(&mut doc).map(|()| doc)
    }

    #[test]
    fn references_are_replaced_and_siblings_laid_over() {
        let doc = resolved(
            "assertionTemplates:\n  polite: {type: icontains, value: please}\ntests:\n  - assert:\n      - $ref: '#/assertionTemplates/polite'\n      - {$ref: '#/assertionTemplates/polite', weight: 2}\n",
        )
        .unwrap();
        let asserts = &doc["tests"][0]["assert"];
        assert_eq!(asserts[0]["type"], Yaml::from("icontains"));
        assert_eq!(asserts[1]["weight"], Yaml::from(2));
        assert_eq!(asserts[1]["value"], Yaml::from("please"));
    }

    #[test]
    fn bad_references_name_their_field() {
        let cases = [
            "tests: [{assert: [{$ref: '#/nowhere'}]}]",
            "tests: [{assert: [{$ref: 'other.yaml#/x'}]}]",
            "tests: [{assert: [{$ref: 3}]}]",
            "a: {$ref: '#/b'}\nb: {$ref: '#/a'}\ntests: [{assert: [{$ref: '#/a'}]}]",
        ];
        for text in cases {
            let err = resolved(text).unwrap_err();
            assert!(err.path.ends_with("$ref"), "{text}: {err}");
        }
    }

    #[test]
    fn tool_parameters_keep_their_schema_refs() {
        let doc = resolved(
            "providers:\n  - id: x\n    config:\n      tools:\n        - function: {parameters: {$ref: '#/defs/a'}}\n",
        )
        .unwrap();
        let params = &doc["providers"][0]["config"]["tools"][0]["function"]["parameters"];
        assert_eq!(params["$ref"], Yaml::from("#/defs/a"));
    }

    #[test]
    fn pointers_unescape_and_index_lists() {
        let doc: Yaml = serde_yaml_ng::from_str("a/b: [x, {c~d: y}]").unwrap();
        assert_eq!(lookup(&doc, "/a~1b/1/c~0d"), Some(&Yaml::from("y")));
        assert_eq!(lookup(&doc, "/a~1b/9"), None);
        assert_eq!(lookup(&doc, "nope"), None);
    }
}
