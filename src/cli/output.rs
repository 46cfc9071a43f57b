//! Rendering: docker-style tables (no borders, columns three spaces apart) and JSON.

use std::io::Write;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde::Serialize;

/// A table in docker's look: upper-case headers, no borders, left-aligned columns.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().map(|h| h.to_string()));
    for row in rows {
        t.add_row(row);
    }
    for col in t.column_iter_mut() {
        col.set_cell_alignment(CellAlignment::Left);
        col.set_padding((0, 3));
    }
    // comfy-table pads the last column too; docker doesn't.
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints a table (with a trailing newline) to stdout.
pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    println!("{}", table(headers, rows));
}

/// Prints a value as pretty JSON to stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_borders_and_no_trailing_space() {
        let t = table(
            &["REPOSITORY", "TAG"],
            vec![
                vec!["app".into(), "1.0".into()],
                vec!["longer-name".into(), "x".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "REPOSITORY    TAG");
        assert_eq!(lines[1], "app           1.0");
        assert_eq!(lines[2], "longer-name   x");
    }
}
