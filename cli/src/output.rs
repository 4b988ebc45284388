//! `--output table|json|yaml`, as kubectl's `-o`: a table of the columns
//! that matter (kubectl's layout: upper-case headers, columns aligned by
//! Go's tabwriter rules), or the whole object as JSON or YAML.

use std::io::Write as _;

use clap::ValueEnum;
use serde_json::Value;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns (the default).
    #[default]
    Table,
    /// The objects as JSON (a list as kubectl's `List`).
    Json,
    /// The objects as YAML (a list as kubectl's `List`).
    Yaml,
}

/// One table column: its header and how to read it from an object.
pub type Column = (&'static str, fn(&Value) -> String);

/// The text of `object[key]`: strings as they are, numbers as digits,
/// missing as `<none>` (kubectl's word).
pub fn field(object: &Value, key: &str) -> String {
    match object.get(key) {
        None | Some(Value::Null) => "<none>".to_owned(),
        Some(Value::String(text)) if text.is_empty() => "<none>".to_owned(),
        Some(Value::String(text)) => text.replace(['\n', '\t'], " "),
        Some(other) => other.to_string(),
    }
}

/// Renders `items` in `format`; `columns` are the table's.
///
/// # Errors
/// The YAML serializer refused the value (it does not for JSON values).
pub fn render(format: Format, items: &[Value], columns: &[Column]) -> anyhow::Result<String> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    match format {
        Format::Json => Ok(format!("{list:#}\n")),
        Format::Yaml => Ok(serde_saphyr::to_string(&list)?),
        Format::Table => {
            let mut writer = tabwriter::TabWriter::new(Vec::new()).padding(3);
            let headers: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
            writeln!(writer, "{}", headers.join("\t"))?;
            for item in items {
                let cells: Vec<String> = columns.iter().map(|(_, cell)| cell(item)).collect();
                writeln!(writer, "{}", cells.join("\t"))?;
            }
            Ok(String::from_utf8(writer.into_inner()?)?)
        }
    }
}

/// A single object: itself as JSON or YAML, a table of one row.
///
/// # Errors
/// As [`render`].
pub fn render_one(format: Format, item: &Value, columns: &[Column]) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(format!("{item:#}\n")),
        Format::Yaml => Ok(serde_saphyr::to_string(item)?),
        Format::Table => render(format, std::slice::from_ref(item), columns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_lists_are_kubectl_lists() {
        let columns: [Column; 2] = [
            ("NAME", |o| field(o, "name")),
            ("STATUS", |o| field(o, "s")),
        ];
        let items = [
            json!({"name": "web", "s": "RUNNING"}),
            json!({"name": "a-longer-name"}),
        ];
        let table = render(Format::Table, &items, &columns).unwrap();
        assert_eq!(
            table,
            "NAME            STATUS\nweb             RUNNING\na-longer-name   <none>\n"
        );
        let listed: Value =
            serde_json::from_str(&render(Format::Json, &items, &columns).unwrap()).unwrap();
        assert_eq!(listed["kind"], "List");
        assert_eq!(listed["items"][1]["name"], "a-longer-name");
        let yaml = render(Format::Yaml, &items[..1], &columns).unwrap();
        assert!(
            yaml.contains("kind: List") && yaml.contains("name: web"),
            "{yaml}"
        );
        let one = render_one(Format::Json, &items[0], &columns).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&one).unwrap(), items[0]);
    }
}
