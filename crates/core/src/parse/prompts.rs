//! `prompts`: inline strings, `{id, label, raw}` objects, the legacy
//! `{raw: label}` map, and `file://` references (globs included) to `.txt`
//! (split on `---` lines), `.md`, `.json`, `.jsonl` and `.yaml` files.

use sha2::{Digest, Sha256};

use super::{Files, entries, expect_str, extension, kind, unknown_key_message};
use crate::{error::SuiteError, suite::Prompt};
use serde_yaml_ng::Value as Yaml;

pub(super) struct Entry {
    pub prompt: Prompt,
    /// The file it came from, for error messages.
    pub origin: Option<String>,
    /// The suite field it was written in (`prompts[1]`), for error positions.
    pub item: String,
}

struct Draft {
    raw: String,
    label: String,
    id: Option<String>,
    origin: Option<String>,
    item: String,
}

/// File extensions promptfoo treats as prompt files even without `file://`.
const PROMPT_FILE_EXTENSIONS: [&str; 14] = [
    "txt", "md", "json", "jsonl", "yaml", "yml", "j2", "csv", "js", "cjs", "mjs", "ts", "py",
    "prompty",
];

const LABEL_LIMIT: usize = 80;

pub(super) fn parse(value: Option<&Yaml>, files: &Files) -> Result<Vec<Entry>, SuiteError> {
    let value = value
        .ok_or_else(|| SuiteError::at("prompts", "missing; the suite needs at least one prompt"))?;
    let mut drafts = Vec::new();
    match value {
        Yaml::String(s) => drafts.extend(from_string(s, None, None, "prompts", files)?),
        Yaml::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("prompts[{i}]");
                match item {
                    Yaml::String(s) => drafts.extend(from_string(s, None, None, &path, files)?),
                    Yaml::Mapping(_) => drafts.extend(from_object(item, &path, files)?),
                    other => {
                        return Err(SuiteError::at(
                            path,
                            format!(
                                "expected a prompt (a string or a mapping with `raw`), found {}",
                                kind(other)
                            ),
                        ));
                    }
                }
            }
        }
        Yaml::Mapping(map) => {
            // Legacy form: `{ "file://prompts.txt": label }`.
            for (raw, label) in entries(map, "prompts")? {
                let path = format!("prompts.{raw}");
                let label = expect_str(label, &path)?;
                drafts.extend(from_string(raw, Some(label), None, &path, files)?);
            }
        }
        Yaml::Null => {}
        other => {
            return Err(SuiteError::at(
                "prompts",
                format!("expected a list of prompts, found {}", kind(other)),
            ));
        }
    }
    if drafts.is_empty() {
        return Err(SuiteError::at(
            "prompts",
            "the suite needs at least one prompt",
        ));
    }
    assign_ids(drafts)
}

fn from_object(item: &Yaml, path: &str, files: &Files) -> Result<Vec<Draft>, SuiteError> {
    let Yaml::Mapping(map) = item else {
        unreachable!("caller matched a mapping")
    };
    let mut raw = None;
    let mut id = None;
    let mut label = None;
    for (key, value) in entries(map, path)? {
        let field = format!("{path}.{key}");
        match key {
            "raw" => raw = Some(expect_str(value, &field)?.to_owned()),
            "id" => id = Some(expect_str(value, &field)?.to_owned()),
            "label" => label = Some(expect_str(value, &field)?.to_owned()),
            "config" => {
                return Err(SuiteError::at(
                    field,
                    "per-prompt provider config is not supported; set it on the provider",
                ));
            }
            "function" => {
                return Err(SuiteError::at(
                    field,
                    "prompt functions are user code, which Gauntlet does not run",
                ));
            }
            other => {
                return Err(SuiteError::at(
                    field,
                    unknown_key_message(other, &["raw", "id", "label"]),
                ));
            }
        }
    }
    // promptfoo uses `id` as the prompt when `raw` is absent (`{id: file://x.txt, label: X}`).
    match raw {
        Some(raw) => from_string(&raw, label.as_deref(), id.as_deref(), path, files),
        None => match id {
            Some(id) => from_string(&id, label.as_deref(), None, path, files),
            None => Err(SuiteError::at(
                path,
                "a prompt object needs `raw` (the template text)",
            )),
        },
    }
}

fn from_string(
    raw: &str,
    label: Option<&str>,
    id: Option<&str>,
    path: &str,
    files: &Files,
) -> Result<Vec<Draft>, SuiteError> {
    for scheme in [
        "portkey://",
        "langfuse://",
        "helicone://",
        "exec:",
        "package:",
    ] {
        if raw.starts_with(scheme) && !raw.contains('\n') {
            return Err(SuiteError::at(
                path,
                format!("`{scheme}` prompts are not supported; inline the prompt text"),
            ));
        }
    }
    if raw.starts_with("file://") || looks_like_prompt_file(raw) {
        let references = files.expand(raw, path)?;
        let many = references.len() > 1;
        let mut drafts = Vec::new();
        for (n, reference) in references.iter().enumerate() {
            // Each matched file gets its own id, as each file of a `.txt` does.
            let id = id.map(|id| {
                if many {
                    format!("{id}:{}", n + 1)
                } else {
                    id.to_owned()
                }
            });
            drafts.extend(from_file(reference, label, id.as_deref(), path, files)?);
        }
        return Ok(drafts);
    }
    Ok(vec![Draft {
        raw: raw.to_owned(),
        label: label.map_or_else(|| default_label(raw), str::to_owned),
        id: id.map(str::to_owned),
        origin: None,
        item: path.to_owned(),
    }])
}

/// promptfoo loads a one-line prompt ending in a file extension as a file.
fn looks_like_prompt_file(raw: &str) -> bool {
    !raw.contains('\n')
        && !raw.contains(' ')
        && PROMPT_FILE_EXTENSIONS
            .iter()
            .any(|ext| raw.to_ascii_lowercase().ends_with(&format!(".{ext}")))
}

fn from_file(
    reference: &str,
    label: Option<&str>,
    id: Option<&str>,
    path: &str,
    files: &Files,
) -> Result<Vec<Draft>, SuiteError> {
    let file = super::file_path(reference);
    let ext = extension(reference);
    if file.contains(':') && !file.contains(":\\") {
        return Err(SuiteError::at(
            path,
            format!(
                "`{reference}`: prompt functions (`file:function`) are user code, which Gauntlet does not run"
            ),
        ));
    }
    let origin = format!("file://{file}");
    let texts: Vec<String> = match ext.as_str() {
        "txt" => split_txt(&files.read(reference, path)?),
        "json" => vec![files.read(reference, path)?],
        "md" => {
            let raw = files.read(reference, path)?;
            let label = label.map_or_else(
                || format!("{file}: {}...", raw.chars().take(50).collect::<String>()),
                str::to_owned,
            );
            return Ok(vec![Draft {
                raw,
                label,
                id: id.map(str::to_owned),
                origin: Some(origin),
                item: path.to_owned(),
            }]);
        }
        "yaml" | "yml" => {
            let text = files.read(reference, path)?;
            let raw = yaml_prompt(&text).map_err(|err| {
                SuiteError::at(path, format!("`{origin}` is not valid YAML: {err}"))
            })?;
            // promptfoo labels a YAML prompt with (at most 80 characters of) its JSON.
            let label = label.map_or_else(
                || {
                    format!(
                        "{file}: {}",
                        raw.chars().take(LABEL_LIMIT).collect::<String>()
                    )
                },
                str::to_owned,
            );
            return Ok(vec![Draft {
                raw,
                label,
                id: id.map(str::to_owned),
                origin: Some(origin),
                item: path.to_owned(),
            }]);
        }
        "jsonl" => files
            .read(reference, path)?
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        "js" | "cjs" | "mjs" | "ts" | "py" => {
            return Err(SuiteError::at(
                path,
                format!(
                    "`{reference}`: prompt functions are user code, which Gauntlet does not run"
                ),
            ));
        }
        other => {
            return Err(SuiteError::at(
                path,
                format!(
                    "`{reference}`: prompt files of type `.{other}` are not supported (use .txt, .md, .json, .jsonl or .yaml)"
                ),
            ));
        }
    };
    if texts.is_empty() {
        return Err(SuiteError::at(
            path,
            format!("there are no prompts in `{origin}`"),
        ));
    }
    let many = texts.len() > 1;
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(n, raw)| {
            let full_label = match label {
                Some(label) => format!("{label}: {file}: {raw}"),
                None => format!("{file}: {raw}"),
            };
            Draft {
                id: id.map(|id| {
                    if many {
                        format!("{id}:{}", n + 1)
                    } else {
                        id.to_owned()
                    }
                }),
                label: truncate_label(&full_label),
                raw,
                origin: Some(origin.clone()),
                item: path.to_owned(),
            }
        })
        .collect())
}

/// promptfoo's YAML prompt files: the document re-serialized as compact JSON
/// (a chat array, usually), keys in their written order.
fn yaml_prompt(text: &str) -> Result<String, String> {
    let doc: Yaml = serde_yaml_ng::from_str(text).map_err(|err| err.to_string())?;
    let mut out = String::new();
    write_json(&doc, &mut out)?;
    Ok(out)
}

fn write_json(value: &Yaml, out: &mut String) -> Result<(), String> {
    match value {
        Yaml::Null => out.push_str("null"),
        Yaml::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                match n.as_f64() {
                    Some(x) if x.is_finite() => out.push_str(&crate::js::number_to_string(x)),
                    // JSON.stringify writes NaN and Infinity as null.
                    _ => out.push_str("null"),
                }
            }
        }
        Yaml::String(s) => out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?),
        Yaml::Sequence(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out)?;
            }
            out.push(']');
        }
        Yaml::Mapping(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    Yaml::Null => "null".to_owned(),
                    Yaml::Bool(_) | Yaml::Number(_) => {
                        let mut k = String::new();
                        write_json(key, &mut k)?;
                        k
                    }
                    _ => return Err("mapping keys must be strings".to_owned()),
                };
                out.push_str(&serde_json::to_string(&key).map_err(|e| e.to_string())?);
                out.push(':');
                write_json(item, out)?;
            }
            out.push('}');
        }
        Yaml::Tagged(tagged) => write_json(&tagged.value, out)?,
    }
    Ok(())
}

/// promptfoo's `.txt` prompt files: prompts separated by lines of `---`, each trimmed.
fn split_txt(content: &str) -> Vec<String> {
    let mut prompts = Vec::new();
    let mut buffer: Vec<&str> = Vec::new();
    let mut flush = |buffer: &mut Vec<&str>| {
        let raw = buffer.join("\n").trim().to_owned();
        if !raw.is_empty() {
            prompts.push(raw);
        }
        buffer.clear();
    };
    for line in content.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim() == "---" {
            flush(&mut buffer);
        } else {
            buffer.push(line);
        }
    }
    flush(&mut buffer);
    prompts
}

fn default_label(raw: &str) -> String {
    truncate_label(raw)
}

fn truncate_label(text: &str) -> String {
    if text.chars().count() <= LABEL_LIMIT {
        return text.to_owned();
    }
    let mut label: String = text.chars().take(LABEL_LIMIT - 3).collect();
    label.push_str("...");
    label
}

fn assign_ids(drafts: Vec<Draft>) -> Result<Vec<Entry>, SuiteError> {
    let mut taken: Vec<String> = Vec::with_capacity(drafts.len());
    let mut out = Vec::with_capacity(drafts.len());
    for (k, draft) in drafts.into_iter().enumerate() {
        let id = match draft.id {
            Some(id) => {
                if let Some(j) = taken.iter().position(|t| *t == id) {
                    return Err(SuiteError::at(
                        format!("prompts[{k}]"),
                        format!("duplicate prompt id `{id}` (also prompts[{j}])"),
                    ));
                }
                id
            }
            None => {
                let hash = hex::encode(Sha256::digest(draft.raw.as_bytes()));
                if taken.contains(&hash) {
                    format!("{hash}-{k}")
                } else {
                    hash
                }
            }
        };
        taken.push(id.clone());
        out.push(Entry {
            prompt: Prompt {
                id,
                label: draft.label,
                raw: draft.raw,
            },
            origin: draft.origin,
            item: draft.item,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_files_split_on_dash_lines_and_trim() {
        assert_eq!(
            split_txt("A {{x}}\n\n---\r\n  B\n --- \n\n---\nC\n"),
            vec!["A {{x}}", "B", "C"]
        );
        // A `---` inside a line does not split.
        assert_eq!(split_txt("a --- b"), vec!["a --- b"]);
    }

    #[test]
    fn long_labels_are_truncated() {
        let raw = "x".repeat(200);
        let label = default_label(&raw);
        assert_eq!(label.chars().count(), LABEL_LIMIT);
        assert!(label.ends_with("..."));
        assert_eq!(default_label("short"), "short");
    }

    #[test]
    fn prompt_file_detection_follows_promptfoo() {
        assert!(looks_like_prompt_file("prompts/main.txt"));
        assert!(looks_like_prompt_file("prompt.json"));
        assert!(!looks_like_prompt_file("Summarize this in one sentence."));
        assert!(!looks_like_prompt_file("Read notes.txt\nthen answer"));
    }
}
