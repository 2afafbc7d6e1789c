//! How a command fails: an error chain, the exit status it maps to, and hints. The
//! chain is rendered once, here, as `error:` / `caused by:` / `hint:` lines.

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;

/// The fixed exit statuses of `ship`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything succeeded.
    Success = 0,
    /// A host failed or an artifact did not verify.
    Failure = 1,
    /// Usage, config or internal error.
    Error = 2,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// A failed command.
#[derive(Debug)]
pub struct CliError {
    status: ExitStatus,
    context: Option<String>,
    cause: Option<Box<dyn Error + Send + Sync>>,
    hints: Vec<String>,
}

impl CliError {
    /// A usage or config problem (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            status: ExitStatus::Error,
            context: Some(message.into()),
            cause: None,
            hints: Vec::new(),
        }
    }

    /// The operation failed on its subject (exit 1), because of `cause`.
    pub fn failure(
        context: impl Into<String>,
        cause: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        CliError {
            status: ExitStatus::Failure,
            context: Some(context.into()),
            cause: Some(cause.into()),
            hints: Vec::new(),
        }
    }

    /// One or more hosts failed (exit 1); the table above says which and why.
    pub fn failed_hosts(message: impl Into<String>) -> Self {
        CliError {
            status: ExitStatus::Failure,
            context: Some(message.into()),
            cause: None,
            hints: Vec::new(),
        }
    }

    /// A usage or config problem (exit 2) explained by `cause`.
    pub fn config(
        context: impl Into<String>,
        cause: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        CliError {
            status: ExitStatus::Error,
            ..CliError::failure(context, cause)
        }
    }

    /// Adds a `hint:` line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// The exit status this error maps to.
    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// The rendered message: `error: …`, one `caused by: …` per source, `hint: …`.
    pub fn render(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        lines.extend(self.context.clone());
        if let Some(cause) = &self.cause {
            lines.push(cause.to_string());
            lines.extend(agent::protocol::causes(cause.as_ref()));
        }
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let label = if i == 0 { "error: " } else { "  caused by: " };
            let _ = writeln!(out, "{label}{line}");
        }
        for hint in &self.hints {
            let _ = writeln!(out, "hint: {hint}");
        }
        out
    }
}
