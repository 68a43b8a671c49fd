//! The `tojson` filter as Hugging Face's chat templates expect it: Python's `json.dumps` (no HTML
//! escaping, `", "` and `": "` separators, optional `indent`, `sort_keys`, `ensure_ascii`,
//! `separators`), replacing minijinja's HTML-safe variant.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Formatting options, named as in `json.dumps`.
struct Options {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// `value | tojson(indent=None, sort_keys=False, ensure_ascii=False, separators=None)`.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) => Some(" ".repeat(usize::try_from(v)?)),
    };
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let (item_separator, key_separator) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be two strings",
            ))
        }
        // Python drops the space after ',' when indenting (the newline does that job).
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let options = Options {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_value(value, &options, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_value(
    value: &Value,
    options: &Options,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(value, out),
        ValueKind::String => write_string(value.as_str().unwrap_or_default(), options, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(('[', ']'), items.len(), options, depth, out, |i, out| {
                let item = items.get(i).cloned().unwrap_or_default();
                write_value(&item, options, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if options.sort_keys {
                keys.sort();
            }
            write_container(('{', '}'), keys.len(), options, depth, out, |i, out| {
                let key = keys.get(i).cloned().unwrap_or_default();
                let key_text = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                write_string(&key_text, options, out);
                out.push_str(&options.key_separator);
                write_value(&value.get_item(&key)?, options, depth + 1, out)
            })?;
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot serialize a {} to JSON", value.kind()),
            ))
        }
    }
    Ok(())
}

/// Writes `[a, b]` / `{...}` with Python's layout, calling `item` for each element.
fn write_container(
    (open, close): (char, char),
    len: usize,
    options: &Options,
    depth: usize,
    out: &mut String,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&options.item_separator);
        }
        if let Some(indent) = &options.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        item(i, out)?;
    }
    if let Some(indent) = &options.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn write_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        out.push_str(&value.to_string());
    } else {
        let float = f64::try_from(value.clone()).unwrap_or(f64::NAN);
        out.push_str(&python_float(float));
    }
}

/// A float as Python's `repr` writes it for ordinary magnitudes (`1.0`, `0.5`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        // Debug keeps a trailing ".0" on integral values, as Python does.
        format!("{f:?}")
    }
}

fn write_string(s: &str, options: &Options, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (options.ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use minijinja::{context, Environment};

    fn render(template: &str, value: serde_json::Value) -> String {
        let mut env = Environment::new();
        env.add_filter("tojson", super::tojson);
        env.render_str(template, context! { v => value }).unwrap()
    }

    #[test]
    fn matches_python_json_dumps() {
        let value = serde_json::json!({"name": "get <weather> & 'x'", "args": [1, 2.5, true, null], "é": "ü\n"});
        // json.dumps(value, ensure_ascii=False): keys in their order, as Python's dicts keep it
        // (Hugging Face's tojson does not sort them)
        assert_eq!(
            render("{{ v | tojson }}", value.clone()),
            r#"{"name": "get <weather> & 'x'", "args": [1, 2.5, true, null], "é": "ü\n"}"#
        );
        // json.dumps(value, indent=2)
        assert_eq!(
            render(
                "{{ v | tojson(indent=2) }}",
                serde_json::json!({"a": [1, {}], "b": []})
            ),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"
        );
        // json.dumps("é☃😀", ensure_ascii=True)
        assert_eq!(
            render(
                "{{ v | tojson(ensure_ascii=true) }}",
                serde_json::json!("é☃😀")
            ),
            r#""\u00e9\u2603\ud83d\ude00""#
        );
        assert_eq!(
            render(
                "{{ v | tojson(separators=[',', ':']) }}",
                serde_json::json!({"a": [1, 2]})
            ),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(render("{{ v | tojson }}", serde_json::json!(1.0)), "1.0");
    }
}
