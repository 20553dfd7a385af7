//! JavaScript regular expressions (as promptfoo's `regex` assertion compiles
//! them with `new RegExp(value)`) translated to the `regex` crate's syntax.
//! JavaScript's `\d`, `\w` and `\b` are ASCII-only; look-around and
//! backreferences have no equivalent and are rejected.

use std::{cell::RefCell, collections::HashMap};

use regex::Regex;

const CACHE_LIMIT: usize = 512;

thread_local! {
    // Graders see the same few patterns over and over; compiling is the
    // expensive part.
    static CACHE: RefCell<HashMap<String, Result<Regex, String>>> = RefCell::new(HashMap::new());
}

/// Compiles a JavaScript pattern, caching per thread.
pub(crate) fn compile(pattern: &str) -> Result<Regex, String> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(hit) = cache.get(pattern) {
            return hit.clone();
        }
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let compiled = translate(pattern).and_then(|translated| {
            Regex::new(&translated).map_err(|err| {
                // The crate's message embeds the translated pattern; keep the first line.
                let text = err.to_string();
                text.lines()
                    .rev()
                    .find(|line| line.starts_with("error:"))
                    .map(|line| line.trim_start_matches("error:").trim().to_owned())
                    .unwrap_or_else(|| text.clone())
            })
        });
        cache.insert(pattern.to_owned(), compiled.clone());
        compiled
    })
}

fn translate(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&next) = chars.get(i + 1) else {
                return Err("the pattern ends with a lone `\\`".to_owned());
            };
            i += 2;
            match (next, in_class) {
                ('d', false) => out.push_str("[0-9]"),
                ('D', false) => out.push_str("[^0-9]"),
                ('w', false) => out.push_str("[0-9A-Za-z_]"),
                ('W', false) => out.push_str("[^0-9A-Za-z_]"),
                ('d', true) => out.push_str("0-9"),
                ('w', true) => out.push_str("0-9A-Za-z_"),
                ('D', true) => out.push_str("[^0-9]"),
                ('W', true) => out.push_str("[^0-9A-Za-z_]"),
                ('b', false) => out.push_str(r"(?-u:\b)"),
                ('B', false) => out.push_str(r"(?-u:\B)"),
                ('b', true) => out.push_str(r"\x08"),
                ('0', _) if !chars.get(i).is_some_and(char::is_ascii_digit) => {
                    out.push_str(r"\x00");
                }
                ('1'..='9', false) => {
                    return Err("backreferences (`\\1`) are not supported".to_owned());
                }
                ('k', false) if chars.get(i) == Some(&'<') => {
                    return Err("named backreferences (`\\k<name>`) are not supported".to_owned());
                }
                ('c', _) => {
                    let Some(letter) = chars.get(i).filter(|l| l.is_ascii_alphabetic()) else {
                        return Err("`\\c` must be followed by a letter".to_owned());
                    };
                    i += 1;
                    out.push_str(&format!(r"\x{:02X}", (*letter as u8) % 32));
                }
                (other, _) if other.is_ascii_alphanumeric() => {
                    out.push('\\');
                    out.push(other);
                }
                (other, _) => push_literal(&mut out, other),
            }
            continue;
        }
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '-' if chars.get(i + 1) == Some(&'-') => out.push_str(r"\-"),
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                if chars.get(i + 1) == Some(&']') {
                    // JavaScript's `[]` matches nothing.
                    out.push_str(r"[^\x00-\x{10FFFF}]");
                    i += 2;
                    continue;
                }
                if chars.get(i + 1) == Some(&'^') && chars.get(i + 2) == Some(&']') {
                    out.push_str("(?s:.)");
                    i += 3;
                    continue;
                }
                in_class = true;
                out.push('[');
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A leading `]` is literal in Rust but closes an (empty) class in
                // JavaScript; handled above, so escape nothing here.
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                let rest: String = chars[i + 2..].iter().take(2).collect();
                if rest.starts_with('=') || rest.starts_with('!') || rest == "<=" || rest == "<!" {
                    return Err(
                        "look-around assertions (`(?=`, `(?!`, `(?<=`, `(?<!`) are not supported"
                            .to_owned(),
                    );
                }
                out.push('(');
            }
            '{' => {
                let end = quantifier_end(&chars, i);
                match end {
                    Some(end) => {
                        out.extend(&chars[i..=end]);
                        i = end;
                    }
                    None => out.push_str(r"\{"),
                }
            }
            '}' => out.push_str(r"\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    if in_class {
        return Err("unterminated character class `[`".to_owned());
    }
    Ok(out)
}

/// Index of the `}` closing a `{n}`, `{n,}` or `{n,m}` quantifier at `start`.
fn quantifier_end(chars: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let digits_start = i;
    while chars.get(i).is_some_and(char::is_ascii_digit) {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
    }
    (chars.get(i) == Some(&'}')).then_some(i)
}

fn push_literal(out: &mut String, c: char) {
    if regex_syntax_meta(c) {
        out.push('\\');
    }
    out.push(c);
}

fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(pattern: &str, text: &str) -> bool {
        compile(pattern).unwrap().is_match(text)
    }

    #[test]
    fn ascii_classes_like_javascript() {
        assert!(!is_match(r"^\d$", "٣"));
        assert!(is_match(r"^\d+$", "123"));
        assert!(!is_match(r"^\w$", "é"));
        assert!(is_match(r"[\d,]+", "1,2"));
        assert!(is_match(r"\bcat\b", "a cat!"));
    }

    #[test]
    fn javascript_literal_braces_and_escapes() {
        assert!(is_match(r"{name}", "hello {name}"));
        assert!(is_match(r"a{2}", "aa"));
        assert!(is_match(r"\/path\/", "/path/"));
        assert!(is_match(r"[a-c&&]", "&"));
        assert!(is_match(r"(?<year>\d{4})", "in 2024"));
    }

    #[test]
    fn unsupported_features_are_explained() {
        assert!(compile("foo(?=bar)").unwrap_err().contains("look-around"));
        assert!(compile(r"(a)\1").unwrap_err().contains("backreferences"));
        assert!(compile("[abc").is_err());
        assert!(compile("a(b").is_err());
    }

    #[test]
    fn empty_classes_follow_javascript() {
        assert!(!is_match("a[]", "a]"));
        assert!(is_match("a[^]b", "a\nb"));
    }
}
