//! `providers` (or `targets`): id strings, `{id, label, config}` objects and
//! the `{id: {config…}}` map form. Ids are kept verbatim; the providers crate
//! interprets them.

use serde_json::Map;
use serde_yaml_ng::{Mapping, Value as Yaml};

use super::{entries, expect_map, expect_str, kind, to_json, unknown_key_message};
use crate::{error::SuiteError, suite::ProviderSpec};

pub(super) fn parse(value: Option<(&str, &Yaml)>) -> Result<Vec<ProviderSpec>, SuiteError> {
    let Some((key, value)) = value else {
        return Err(SuiteError::at(
            "providers",
            "missing; the suite needs at least one provider",
        ));
    };
    let providers = match value {
        Yaml::String(id) => vec![from_id(id, key)?],
        Yaml::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{key}[{i}]");
                match item {
                    Yaml::String(id) => from_id(id, &path),
                    Yaml::Mapping(map) => from_object(map, &path),
                    other => Err(SuiteError::at(
                        path,
                        format!(
                            "expected a provider id or a mapping with `id`, found {}",
                            kind(other)
                        ),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        Yaml::Null => Vec::new(),
        other => {
            return Err(SuiteError::at(
                key,
                format!("expected a list of providers, found {}", kind(other)),
            ));
        }
    };
    if providers.is_empty() {
        return Err(SuiteError::at(key, "the suite needs at least one provider"));
    }
    Ok(providers)
}

fn from_id(id: &str, path: &str) -> Result<ProviderSpec, SuiteError> {
    check_id(id, path)?;
    Ok(ProviderSpec {
        id: id.to_owned(),
        label: None,
        config: Map::new(),
    })
}

fn check_id(id: &str, path: &str) -> Result<(), SuiteError> {
    if id.trim().is_empty() {
        return Err(SuiteError::at(path, "the provider id is empty"));
    }
    if id.starts_with("file://") {
        return Err(SuiteError::at(
            path,
            format!(
                "`{id}`: providers loaded from files are not supported; write the provider inline"
            ),
        ));
    }
    Ok(())
}

fn from_object(map: &Mapping, path: &str) -> Result<ProviderSpec, SuiteError> {
    let has_id = map.keys().any(|k| k.as_str() == Some("id"));
    if !has_id && map.len() == 1 {
        // `{ "openai:gpt-4.1": { config: …, label: … } }`
        let (id, options) = entries(map, path)?[0];
        let inner_path = format!("{path}.{id}");
        let mut spec = options_of(expect_map(options, &inner_path)?, &inner_path, Some(id))?;
        if spec.id.is_empty() {
            spec.id = id.to_owned();
        }
        check_id(&spec.id, &inner_path)?;
        return Ok(spec);
    }
    let spec = options_of(map, path, None)?;
    if spec.id.is_empty() {
        return Err(SuiteError::at(path, "a provider needs an `id`"));
    }
    check_id(&spec.id, &format!("{path}.id"))?;
    Ok(spec)
}

fn options_of(
    map: &Mapping,
    path: &str,
    map_key: Option<&str>,
) -> Result<ProviderSpec, SuiteError> {
    let mut spec = ProviderSpec {
        id: map_key.unwrap_or_default().to_owned(),
        label: None,
        config: Map::new(),
    };
    for (key, value) in entries(map, path)? {
        let field = format!("{path}.{key}");
        match key {
            "id" => spec.id = expect_str(value, &field)?.to_owned(),
            "label" => spec.label = Some(expect_str(value, &field)?.to_owned()),
            "config" => match to_json(value, &field)? {
                serde_json::Value::Object(config) => spec.config = config,
                serde_json::Value::Null => {}
                _ => {
                    return Err(SuiteError::at(
                        field,
                        format!("expected a mapping, found {}", kind(value)),
                    ));
                }
            },
            // Pacing between calls does not change results.
            "delay" => {}
            "prompts" => {
                return Err(SuiteError::at(
                    field,
                    "restricting a provider to some prompts is not supported; every provider runs every prompt",
                ));
            }
            "transform" => {
                return Err(SuiteError::at(
                    field,
                    "output transforms are user code, which Gauntlet does not run",
                ));
            }
            "env" => {
                return Err(SuiteError::at(
                    field,
                    "per-provider environment overrides are not supported; configure credentials on the Gauntlet worker",
                ));
            }
            other => {
                return Err(SuiteError::at(
                    field,
                    unknown_key_message(other, &["id", "label", "config", "delay"]),
                ));
            }
        }
    }
    Ok(spec)
}
