//! `is-sql` and `contains-sql`: the output must parse as SQL of the chosen
//! dialect (MySQL unless the value says `databaseType`), pass promptfoo's
//! extra syntax checks, and touch only `allowedTables` when given.

use std::ops::ControlFlow;

use serde_json::Value;
use sqlparser::{
    ast::{Statement, visit_relations},
    dialect::{Dialect, dialect_from_str},
    parser::Parser,
};

use super::pattern;

/// An `is-sql`/`contains-sql` value, checked at parse time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SqlOptions {
    /// promptfoo's (node-sql-parser's) name, used in reasons.
    pub database: String,
    pub allowed_tables: Option<Vec<String>>,
}

/// promptfoo `databaseType` names and the dialect each maps to.
const DATABASES: [(&str, &str); 10] = [
    ("MySQL", "mysql"),
    ("MariaDB", "mysql"),
    ("PostgresQL", "postgresql"),
    ("Postgresql", "postgresql"),
    ("Sqlite", "sqlite"),
    ("TransactSQL", "mssql"),
    ("BigQuery", "bigquery"),
    ("Snowflake", "snowflake"),
    ("Redshift", "redshift"),
    ("Hive", "hive"),
];

pub(crate) fn options(value: Option<&Value>) -> Result<SqlOptions, String> {
    let mut options = SqlOptions {
        database: "MySQL".to_owned(),
        allowed_tables: None,
    };
    let map = match value {
        None | Some(Value::Null) => return Ok(options),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("is-sql assertion must have a object value.".to_owned()),
    };
    for (key, v) in map {
        match key.as_str() {
            "databaseType" => {
                let name = v.as_str().ok_or("`databaseType` must be a string")?;
                if !DATABASES.iter().any(|(n, _)| *n == name) {
                    let known: Vec<&str> = DATABASES.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "unsupported databaseType `{name}` (supported: {})",
                        known.join(", ")
                    ));
                }
                name.clone_into(&mut options.database);
            }
            "allowedTables" => {
                let items = v
                    .as_array()
                    .filter(|items| items.iter().all(Value::is_string))
                    .ok_or("`allowedTables` must be a list of strings")?;
                let tables: Vec<String> = items
                    .iter()
                    .map(|t| t.as_str().unwrap_or_default().to_owned())
                    .collect();
                for table in &tables {
                    authority_pattern(table)
                        .map_err(|err| format!("`allowedTables` entry `{table}`: {err}"))?;
                }
                options.allowed_tables = Some(tables);
            }
            "allowedColumns" => {
                return Err("`allowedColumns` is not supported yet; use `allowedTables`".to_owned());
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected databaseType or allowedTables)"
                ));
            }
        }
    }
    Ok(options)
}

/// node-sql-parser's whitelist entries are case-insensitive patterns over
/// `{statement}::{schema}::{table}` (`select::null::users`).
fn authority_pattern(entry: &str) -> Result<regex::Regex, String> {
    pattern::compile(&format!("(?i)^(?:{entry})$"))
}

fn dialect(database: &str) -> Box<dyn Dialect> {
    let name = DATABASES
        .iter()
        .find(|(n, _)| *n == database)
        .map_or("mysql", |(_, d)| d);
    dialect_from_str(name).unwrap_or_else(|| Box::new(sqlparser::dialect::MySqlDialect {}))
}

/// `Ok(())` or promptfoo's reason the text is not acceptable SQL.
pub(crate) fn check(text: &str, options: &SqlOptions) -> Result<(), String> {
    let syntax = format!(
        "SQL statement does not conform to the provided {} database syntax.",
        options.database
    );
    let sql = text.trim();
    let mut reasons: Vec<String> = Vec::new();
    if sql.is_empty() {
        reasons.push(syntax.clone());
    }
    if sql.matches('`').count() % 2 == 1 {
        reasons.push(syntax.clone());
    }
    if likely_missing_comma(
        &strip_literals(sql, &options.database),
        is_mysql(&options.database),
    ) {
        reasons.push(syntax.clone());
    }
    if options.database == "MySQL" && mentions_generate_series(sql) {
        reasons.push(syntax.clone());
    }
    if foreign_syntax(&strip_literals(sql, &options.database), &options.database) {
        reasons.push(syntax.clone());
    }
    let statements = Parser::parse_sql(dialect(&options.database).as_ref(), text)
        .ok()
        .filter(|s| !s.is_empty());
    if statements.is_none() {
        reasons.push(syntax);
    }
    if let (Some(allowed), Some(statements)) = (&options.allowed_tables, &statements) {
        let found = table_authorities(statements);
        let patterns: Vec<regex::Regex> = allowed
            .iter()
            .filter_map(|a| authority_pattern(a).ok())
            .collect();
        if found
            .iter()
            .any(|t| !patterns.iter().any(|p| p.is_match(t)))
        {
            reasons.push(format!(
                "SQL references unauthorized table(s). Found: [{}]. Allowed: [{}].",
                found.join(", "),
                allowed.join(", ")
            ));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join(" "))
    }
}

/// `contains-sql`: the SQL or unlabeled fenced code blocks, or else the
/// whole output, must hold one acceptable statement list.
pub(crate) fn contains(text: &str, options: &SqlOptions) -> Result<(), String> {
    let blocks = fenced_sql_blocks(text);
    let candidates = if blocks.is_empty() {
        vec![text.to_owned()]
    } else {
        blocks
    };
    let mut reason = "Output does not contain valid SQL".to_owned();
    for candidate in candidates {
        if candidate.trim().is_empty() {
            continue;
        }
        match check(&candidate, options) {
            Ok(()) => return Ok(()),
            Err(why) => reason = why,
        }
    }
    Err(reason)
}

/// T-SQL's `SELECT TOP n` and `[bracketed]` identifiers, which sqlparser
/// accepts in every dialect but node-sql-parser (promptfoo's parser) only in
/// the dialects that have them.
fn foreign_syntax(sql: &str, database: &str) -> bool {
    static TOP: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\bSELECT\s+(?:(?:DISTINCT|ALL)\s+)?TOP\b").expect("static regex")
    });
    static BRACKETED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?:^|[\s,(.=])\[[A-Za-z_][\w ]*\]").expect("static regex")
    });
    let top_ok = matches!(database, "TransactSQL" | "Snowflake" | "Redshift");
    let brackets_ok = matches!(database, "TransactSQL" | "Sqlite");
    (!top_ok && TOP.is_match(sql)) || (!brackets_ok && BRACKETED.is_match(sql))
}

fn is_mysql(database: &str) -> bool {
    matches!(database, "MySQL" | "MariaDB")
}

fn mentions_generate_series(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.match_indices("generate_series").any(|(at, word)| {
        let before_ok = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        before_ok && lower[at + word.len()..].trim_start().starts_with('(')
    })
}

/// Quoted text becomes ` ? ` and comments a space, so the heuristics only
/// see SQL structure.
fn strip_literals(sql: &str, database: &str) -> String {
    let brackets = matches!(database, "TransactSQL" | "Sqlite");
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if matches!(c, '\'' | '"' | '`') || (c == '[' && brackets) {
            let close = if c == '[' { ']' } else { c };
            let mut j = i + 1;
            while j < chars.len() {
                if close != ']' && chars[j] == '\\' {
                    j += 2;
                    continue;
                }
                if chars[j] == close {
                    if chars.get(j + 1) == Some(&close) {
                        j += 2;
                        continue;
                    }
                    j += 1;
                    break;
                }
                j += 1;
            }
            out.push_str(" ? ");
            i = j.min(chars.len());
        } else if (c == '-' && next == Some('-')) || c == '#' {
            while i < chars.len() && chars[i] != '\n' && chars[i] != '\r' {
                i += 1;
            }
            out.push(' ');
        } else if c == '/' && next == Some('*') {
            let rest: String = chars[i + 2..].iter().collect();
            i = rest
                .find("*/")
                .map_or(chars.len(), |at| i + 2 + rest[..at].chars().count() + 2);
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

const STANDARD_MODIFIERS: [&str; 2] = ["all", "distinct"];
const MYSQL_MODIFIERS: [&str; 11] = [
    "all",
    "distinct",
    "distinctrow",
    "high_priority",
    "straight_join",
    "sql_big_result",
    "sql_buffer_result",
    "sql_cache",
    "sql_calc_found_rows",
    "sql_no_cache",
    "sql_small_result",
];

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `SELECT a b FROM t`: two bare names in a row before FROM, which parsers
/// accept as an alias but is almost always a missing comma.
fn likely_missing_comma(sql: &str, mysql: bool) -> bool {
    let modifiers: &[&str] = if mysql {
        &MYSQL_MODIFIERS
    } else {
        &STANDARD_MODIFIERS
    };
    let words: Vec<&str> = sql.split_whitespace().collect();
    words.iter().enumerate().any(|(i, word)| {
        // `\bselect` then whitespace: the word must end exactly in `select`.
        let lower = word.to_ascii_lowercase();
        let Some(prefix) = lower.strip_suffix("select") else {
            return false;
        };
        if prefix
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return false;
        }
        let mut rest = words[i + 1..].iter().map(|w| w.to_ascii_lowercase());
        let mut first = rest.next();
        while first.as_deref().is_some_and(|w| modifiers.contains(&w)) {
            first = rest.next();
        }
        let (Some(a), Some(b), Some(from)) = (first, rest.next(), rest.next()) else {
            return false;
        };
        is_identifier(&a)
            && is_identifier(&b)
            && from.starts_with("from")
            && !from[4..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Every table a statement touches as `{statement}::{schema or null}::{table}`.
fn table_authorities(statements: &[Statement]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for statement in statements {
        let kind = match statement {
            Statement::Query(_) => "select".to_owned(),
            Statement::Insert(_) => "insert".to_owned(),
            Statement::Update { .. } => "update".to_owned(),
            Statement::Delete(_) => "delete".to_owned(),
            other => other
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        let _ = visit_relations(statement, |name| {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|part| {
                    part.as_ident()
                        .map_or_else(|| part.to_string(), |id| id.value.clone())
                })
                .collect();
            let (schema, table) = match parts.as_slice() {
                [.., schema, table] => (schema.clone(), table.clone()),
                [table] => ("null".to_owned(), table.clone()),
                [] => ("null".to_owned(), String::new()),
            };
            let entry = format!("{kind}::{schema}::{table}");
            if !found.contains(&entry) {
                found.push(entry);
            }
            ControlFlow::<()>::Continue(())
        });
    }
    found
}

/// Bodies of fenced code blocks labeled `sql` or not labeled at all.
fn fenced_sql_blocks(text: &str) -> Vec<String> {
    struct Open {
        fence: char,
        len: usize,
        sql: bool,
        body: Vec<String>,
    }
    let fence_of = |line: &str| -> Option<(char, usize, String)> {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent > 3 {
            return None;
        }
        let rest = &line[indent..];
        let fence = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let len = rest.chars().take_while(|c| *c == fence).count();
        (len >= 3).then(|| (fence, len, rest[len..].trim().to_owned()))
    };
    let mut blocks = Vec::new();
    let mut open: Option<Open> = None;
    for line in text.split("\r\n").flat_map(|l| l.split(['\n', '\r'])) {
        match &mut open {
            None => {
                if let Some((fence, len, info)) = fence_of(line) {
                    let lang = info.to_lowercase();
                    open = Some(Open {
                        fence,
                        len,
                        sql: lang.is_empty() || lang == "sql",
                        body: Vec::new(),
                    });
                }
            }
            Some(block) => match fence_of(line) {
                Some((fence, len, info))
                    if info.is_empty() && fence == block.fence && len >= block.len =>
                {
                    if block.sql {
                        blocks.push(block.body.join("\n").trim().to_owned());
                    }
                    open = None;
                }
                _ => block.body.push(line.to_owned()),
            },
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mysql() -> SqlOptions {
        options(None).unwrap()
    }

    #[test]
    fn valid_and_invalid_statements() {
        assert!(check("SELECT id, name FROM users WHERE id = 1", &mysql()).is_ok());
        assert_eq!(
            check("SELEC * FROM users", &mysql()).unwrap_err(),
            "SQL statement does not conform to the provided MySQL database syntax."
        );
        // An alias parses, but promptfoo flags the likely missing comma.
        assert!(check("SELECT id name FROM users", &mysql()).is_err());
        assert!(check("SELECT DISTINCT name FROM users", &mysql()).is_ok());
        assert!(check("SELECT 'a b' FROM users", &mysql()).is_ok());
        assert!(check("SELECT * FROM generate_series(1, 3)", &mysql()).is_err());
        assert!(check("", &mysql()).is_err());
    }

    #[test]
    fn dialects_and_allowed_tables() {
        let pg = options(Some(&json!({"databaseType": "PostgresQL"}))).unwrap();
        assert!(check("SELECT * FROM generate_series(1, 3)", &pg).is_ok());
        let only_users = options(Some(&json!({"allowedTables": ["select::null::users"]}))).unwrap();
        assert!(check("SELECT * FROM users", &only_users).is_ok());
        assert_eq!(
            check("SELECT * FROM orders", &only_users).unwrap_err(),
            "SQL references unauthorized table(s). Found: [select::null::orders]. Allowed: [select::null::users]."
        );
        let pattern = options(Some(
            &json!({"allowedTables": ["(select|update)::null::users"]}),
        ))
        .unwrap();
        assert!(check("UPDATE users SET a = 1", &pattern).is_ok());
        assert!(check("DELETE FROM users", &pattern).is_err());
        assert!(options(Some(&json!({"databaseType": "Oracle"}))).is_err());
        assert!(options(Some(&json!("x"))).is_err());
    }

    #[test]
    fn contains_sql_prefers_fenced_blocks() {
        let text = "Here you go:\n```sql\nSELECT * FROM t;\n```\nEnjoy.";
        assert!(contains(text, &mysql()).is_ok());
        assert!(contains("```python\nprint(1)\n```\nSELECT 1", &mysql()).is_err());
        assert!(contains("SELECT 1", &mysql()).is_ok());
        assert_eq!(
            contains("no sql", &mysql()).unwrap_err(),
            "SQL statement does not conform to the provided MySQL database syntax."
        );
    }
}
