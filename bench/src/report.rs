//! Writing results: JSON files and the marked sections of BENCHMARKS.md.

use std::path::Path;

use anyhow::Context;

pub fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Rewrites one marked section of the Markdown file at `path` (see `replace_section`).
pub fn update_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    std::fs::write(path, replace_section(&current, name, body))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->` (or
/// appends the marked section), so each benchmark rewrites only its own part of
/// BENCHMARKS.md.
pub fn replace_section(document: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (document.find(&begin), document.find(&end)) {
        (Some(start), Some(stop)) if start < stop => {
            format!("{}{section}{}", &document[..start], &document[stop + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", document.trim_end()),
    }
}

/// A JSON number or null as a table cell.
pub fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "not measured".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A tally (`{"A": 1, "B": 2}`) as "A 1, B 2"; "none" when empty.
pub fn counts(tally: &serde_json::Value) -> String {
    match tally.as_object() {
        Some(map) if !map.is_empty() => {
            map.iter().map(|(label, n)| format!("{label} {n}")).collect::<Vec<_>>().join(", ")
        }
        _ => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn a_section_is_replaced_in_place_and_the_rest_is_kept() {
        let doc = "# B\n\n<!-- x:begin -->\nold\n<!-- x:end -->\n\n## Other\nkept\n";
        let updated = replace_section(doc, "x", "new\n");
        assert_eq!(updated, "# B\n\n<!-- x:begin -->\nnew\n<!-- x:end -->\n\n## Other\nkept\n");
        assert_eq!(replace_section("# B\n", "y", "body"), "# B\n\n<!-- y:begin -->\nbody\n<!-- y:end -->\n");
    }
}
