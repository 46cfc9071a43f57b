//! Errors a user can act on, and the exit codes wharf returns.
//!
//! Library code returns `anyhow::Result`. When a failure is the user's to fix (a bad reference,
//! a missing image, a hostile tarball), it carries a [`UserError`] somewhere in its chain: the
//! CLI finds it, prints its message and hint, and exits with its code. Any other error is
//! wharf's own failure or the host's, and is printed with its whole context chain.

use std::fmt;

/// Exit codes, as docker uses them for `run` and friends.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A general error (bad input, a missing object, a failed operation).
    pub const ERROR: i32 = 1;
    /// wharf itself failed before the container's command ran.
    pub const RUNTIME: i32 = 125;
    /// The container's command was found but could not be executed.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The container's command was not found.
    pub const NOT_FOUND: i32 = 127;
}

/// An error the user can fix: what went wrong, and (optionally) what to do about it.
#[derive(Debug, Clone)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        UserError {
            message: message.into(),
            hint: None,
            code: exit::ERROR,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Shorthand: `Err(user("no such image: x").hint("see `wharf images`"))?`.
pub fn user(message: impl Into<String>) -> UserError {
    UserError::new(message)
}

/// Finds the [`UserError`] in an error chain, if there is one.
pub fn find_user_error(err: &anyhow::Error) -> Option<&UserError> {
    err.chain().find_map(|e| e.downcast_ref::<UserError>())
}

/// The exit code for an error: the user error's own, or 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    find_user_error(err).map_or(exit::ERROR, |u| u.code)
}

/// Renders an error for the terminal the way cargo does: `error: what`, then the causes,
/// then `hint: what to do`.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        // A UserError wrapped in context is the root message; don't repeat its text.
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    if let Some(hint) = find_user_error(err).and_then(|u| u.hint.as_deref()) {
        out.push_str(&format!("\n  hint: {hint}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_error_code_and_hint_survive_context() {
        let err = anyhow::Error::new(
            user("no such image: x")
                .hint("run `wharf images`")
                .code(125),
        )
        .context("cannot run container");
        assert_eq!(exit_code(&err), 125);
        let text = render(&err);
        assert!(text.starts_with("error: cannot run container"), "{text}");
        assert!(text.contains("caused by: no such image: x"), "{text}");
        assert!(text.ends_with("hint: run `wharf images`"), "{text}");
    }

    #[test]
    fn other_errors_exit_1() {
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), 1);
    }
}
