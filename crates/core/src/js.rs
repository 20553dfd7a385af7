//! JavaScript's string conversions, so that numbers and values print the way
//! promptfoo (Node) prints them in prompts, assertion values and reasons.

use serde_json::Value;

/// `Number.prototype.toString()` for a finite or non-finite double.
pub(crate) fn number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // `{:e}` yields the shortest round-trip digits, as ECMAScript requires.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let (first, rest) = digits.split_at(1);
        let e = n - 1;
        let e_sign = if e >= 0 { "+" } else { "-" };
        if rest.is_empty() {
            format!("{first}e{e_sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{e_sign}{}", e.abs())
        }
    };
    format!("{sign}{body}")
}

/// `Number.prototype.toFixed(d)` for values below 1e21: like Rust's `{:.d}`
/// except that an exact tie rounds up, as JavaScript picks the larger `n`.
pub(crate) fn to_fixed(x: f64, d: usize) -> String {
    if !x.is_finite() || x.abs() >= 1e21 {
        return number_to_string(x);
    }
    let scaled = x.abs() * 10f64.powi(d as i32);
    if scaled.fract() == 0.5 {
        let up = (scaled.floor() + 1.0) / 10f64.powi(d as i32);
        let sign = if x < 0.0 { "-" } else { "" };
        return format!("{sign}{up:.d$}");
    }
    format!("{x:.d$}")
}

/// `Number.prototype.toPrecision(p)` (p ≥ 1).
pub(crate) fn to_precision(x: f64, p: usize) -> String {
    let p = p.max(1);
    if !x.is_finite() {
        return number_to_string(x);
    }
    if x == 0.0 {
        return if p == 1 {
            "0".to_owned()
        } else {
            format!("0.{}", "0".repeat(p - 1))
        };
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let sci = format!("{:.*e}", p - 1, x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let e: i32 = exp.parse().unwrap_or(0);
    let body = if e < -6 || e >= p as i32 {
        let (first, rest) = digits.split_at(1);
        let e_sign = if e >= 0 { "+" } else { "-" };
        if rest.is_empty() {
            format!("{first}e{e_sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{e_sign}{}", e.abs())
        }
    } else if e == p as i32 - 1 {
        digits
    } else if e >= 0 {
        let split = (e + 1) as usize;
        format!("{}.{}", &digits[..split], &digits[split..])
    } else {
        format!("0.{}{digits}", "0".repeat((-(e + 1)) as usize))
    };
    format!("{sign}{body}")
}

pub(crate) fn json_number_to_string(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        number_to_string(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// `String(value)` for a JSON value.
pub(crate) fn value_to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => json_number_to_string(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => value_to_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// Rewrites integral floats as integers so JSON output matches
/// `JSON.stringify` (which has a single number type).
pub(crate) fn normalize_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                Value::from(f as i64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Deep equality where numbers compare by value (`1` equals `1.0`), like
/// Node's `util.isDeepStrictEqual` on parsed JSON.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(number_to_string(1.0), "1");
        assert_eq!(number_to_string(-2.5), "-2.5");
        assert_eq!(number_to_string(0.1), "0.1");
        assert_eq!(number_to_string(1e21), "1e+21");
        assert_eq!(number_to_string(1.5e-7), "1.5e-7");
        assert_eq!(number_to_string(0.000001), "0.000001");
        assert_eq!(number_to_string(123456789.0), "123456789");
        assert_eq!(number_to_string(f64::NAN), "NaN");
    }

    #[test]
    fn to_fixed_rounds_ties_up_like_javascript() {
        assert_eq!(to_fixed(0.125, 2), "0.13");
        assert_eq!(to_fixed(0.75, 2), "0.75");
        assert_eq!(to_fixed(2.0 / 3.0, 4), "0.6667");
        assert_eq!(to_fixed(1.005, 2), "1.00");
    }

    #[test]
    fn to_precision_matches_javascript() {
        assert_eq!(to_precision(0.00123, 2), "0.0012");
        assert_eq!(to_precision(0.5, 2), "0.50");
        assert_eq!(to_precision(9.96, 2), "10");
        assert_eq!(to_precision(123.0, 2), "1.2e+2");
        assert_eq!(to_precision(0.0, 2), "0.0");
        assert_eq!(to_precision(1.5e-8, 2), "1.5e-8");
    }

    #[test]
    fn string_conversion_matches_javascript() {
        assert_eq!(value_to_string(&json!([1, null, "a", [2, 3]])), "1,,a,2,3");
        assert_eq!(value_to_string(&json!({"a": 1})), "[object Object]");
        assert_eq!(value_to_string(&json!(2.0)), "2");
    }

    #[test]
    fn json_equality_ignores_number_representation() {
        assert!(json_equal(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }
}
