//! Manifest problems: what, where (file:line:col and a caret snippet), and what to do.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::error::UserError;

/// One place in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// Byte range in the file's text.
    pub span: Range<usize>,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong, e.g. `invalid size "12Q"`.
    pub message: String,
    /// Where; `None` for problems with no position (an unreadable file, an empty directory).
    pub at: Option<Location>,
    /// A short label under the caret.
    pub label: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Other places that matter (the first definition of a duplicate), with a label each.
    pub also: Vec<(Location, String)>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            at: None,
            label: String::new(),
            hint: None,
            also: Vec::new(),
        }
    }

    pub fn at(mut self, file: &Path, span: Range<usize>) -> Self {
        self.at = Some(Location {
            file: file.to_path_buf(),
            span,
        });
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn hint(mut self, hint: Option<impl Into<String>>) -> Self {
        self.hint = hint.map(Into::into);
        self
    }

    pub fn also(mut self, file: &Path, span: Range<usize>, label: impl Into<String>) -> Self {
        self.also.push((
            Location {
                file: file.to_path_buf(),
                span,
            },
            label.into(),
        ));
        self
    }
}

/// Every problem found while loading a manifest, with the sources to render them against.
#[derive(Debug, Clone, Default)]
pub struct ManifestErrors {
    pub problems: Vec<Problem>,
    sources: BTreeMap<PathBuf, String>,
    /// Files whose text is shown in snippets (the manifests); problems in other files (env
    /// files) get their position only.
    shown: Option<std::collections::BTreeSet<PathBuf>>,
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

impl ManifestErrors {
    /// Problems are kept in reading order: by file, then by position.
    pub(crate) fn new(mut problems: Vec<Problem>, sources: BTreeMap<PathBuf, String>) -> Self {
        problems.sort_by(|a, b| match (&a.at, &b.at) {
            (Some(x), Some(y)) => (&x.file, x.span.start).cmp(&(&y.file, y.span.start)),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        ManifestErrors {
            problems,
            sources,
            shown: None,
        }
    }

    /// Shows snippets of these files only; other files' problems name the file, line and
    /// column, never a line of their content.
    pub(crate) fn show_only(mut self, files: &[PathBuf]) -> Self {
        self.shown = Some(files.iter().cloned().collect());
        self
    }

    fn is_shown(&self, file: &Path) -> bool {
        self.shown.as_ref().is_none_or(|s| s.contains(file))
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// `file:line:col` of a problem, or just the file, or nothing.
    pub fn position(&self, p: &Problem) -> Option<String> {
        let at = p.at.as_ref()?;
        match self.sources.get(&at.file) {
            Some(text) => {
                let (l, c) = line_col(text, at.span.start);
                Some(format!("{}:{l}:{c}", at.file.display()))
            }
            None => Some(at.file.display().to_string()),
        }
    }

    /// Renders every problem like rustc/cargo do, then a count. `color` for a terminal.
    pub fn render(&self, color: bool) -> String {
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&renderer.render(&[self.group(p)]));
            out.push_str("\n\n");
        }
        let n = self.problems.len();
        out.push_str(&format!(
            "error: the manifest has {n} problem{}; nothing was changed",
            if n == 1 { "" } else { "s" }
        ));
        out
    }

    fn snippet<'a>(
        &'a self,
        loc: &Location,
        label: &'a str,
        kind: AnnotationKind,
    ) -> Option<Snippet<'a, annotate_snippets::Annotation<'a>>> {
        if !self.is_shown(&loc.file) {
            return None;
        }
        let text = self.sources.get(&loc.file)?;
        let mut span = loc.span.start.min(text.len())..loc.span.end.min(text.len());
        if span.end < span.start {
            span.end = span.start;
        }
        // Keep multi-line spans (a whole table) to their first line.
        if let Some(nl) = text[span.clone()].find('\n') {
            span.end = span.start + nl;
        }
        let mut ann = kind.span(span);
        if !label.is_empty() {
            ann = ann.label(label);
        }
        Some(
            Snippet::source(text.as_str())
                .path(loc.file.display().to_string())
                .annotation(ann),
        )
    }

    fn group<'a>(&'a self, p: &'a Problem) -> Group<'a> {
        let title = Level::ERROR.primary_title(p.message.as_str());
        let mut elements: Vec<annotate_snippets::Element<'a>> = Vec::new();
        if let Some(loc) = &p.at {
            match self.snippet(loc, &p.label, AnnotationKind::Primary) {
                Some(s) => elements.push(s.into()),
                None => elements.push(
                    annotate_snippets::Origin::path(
                        self.position(p)
                            .unwrap_or_else(|| loc.file.display().to_string()),
                    )
                    .into(),
                ),
            }
        }
        for (loc, label) in &p.also {
            if let Some(s) = self.snippet(loc, label, AnnotationKind::Context) {
                elements.push(s.into());
            }
        }
        if let Some(h) = &p.hint {
            elements.push(Level::HELP.message(h.as_str()).into());
        }
        title.elements(elements)
    }

    /// The problems as JSON, for `--format json`: a list of `{file, line, column, end_line,
    /// end_column, message, label, hint, related: [{file, line, column, label}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let pos = |loc: &Location| {
            let text = self.sources.get(&loc.file).map_or("", String::as_str);
            (line_col(text, loc.span.start), line_col(text, loc.span.end))
        };
        let list: Vec<serde_json::Value> = self
            .problems
            .iter()
            .map(|p| {
                let (file, start, end) = match &p.at {
                    Some(loc) => {
                        let (s, e) = pos(loc);
                        (Some(loc.file.display().to_string()), Some(s), Some(e))
                    }
                    None => (None, None, None),
                };
                serde_json::json!({
                    "file": file,
                    "line": start.map(|s| s.0),
                    "column": start.map(|s| s.1),
                    "end_line": end.map(|e| e.0),
                    "end_column": end.map(|e| e.1),
                    "message": p.message,
                    "label": p.label,
                    "hint": p.hint,
                    "related": p.also.iter().map(|(loc, label)| {
                        let (s, _) = pos(loc);
                        serde_json::json!({
                            "file": loc.file.display().to_string(),
                            "line": s.0,
                            "column": s.1,
                            "label": label,
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// A [`UserError`] for the CLI. Its message is the full rendering (which already starts
    /// each problem with `error:`), so a CLI may rather print [`render`](Self::render) to
    /// stderr as it is and exit 1.: the rendered problems as the message.
    pub fn to_user_error(&self, color: bool) -> UserError {
        UserError::new(self.render(color))
            .hint("fix the problems above, then run `wharf validate -f PATH` to check again")
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for ManifestErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let t = "ab\ncé x\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 7), (2, 4));
    }
}
