//! Why a request is invalid: one [`ValidationError`] per violated rule,
//! gathered in [`ValidationErrors`] so that a person can fix a request in one
//! round. The model reports reading errors here and the validator rule
//! violations; neither depends on the other for them.

use std::fmt;

/// One violated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Index of the `config` entry, `None` for the request's own fields.
    pub entry: Option<usize>,
    /// The entry's `type`, when known.
    pub entry_type: Option<String>,
    /// The field, e.g. `port`; empty when the error is about the whole entry.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ValidationError {
    /// An error about a field of the request itself (`name`, `k8sNamespace`, …).
    pub fn request(field: &str, message: impl Into<String>) -> Self {
        Self {
            entry: None,
            entry_type: None,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// An error about `field` of `config[index]`.
    pub fn entry(
        index: usize,
        entry_type: Option<&str>,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            entry: Some(index),
            entry_type: entry_type.map(str::to_owned),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.entry, &self.entry_type) {
            (Some(index), Some(kind)) => write!(f, "config[{index}] ({kind})")?,
            (Some(index), None) => write!(f, "config[{index}]")?,
            (None, _) => {}
        }
        match (self.entry.is_some(), self.field.is_empty()) {
            (true, false) => write!(f, ".{}", self.field)?,
            (false, false) => write!(f, "{}", self.field)?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// All the violations of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors {
    /// In request order.
    pub errors: Vec<ValidationError>,
}

impl ValidationErrors {
    /// Wraps a non-empty list.
    pub fn new(errors: Vec<ValidationError>) -> Self {
        Self { errors }
    }

    /// A single error.
    pub fn one(error: ValidationError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(
            f,
            "invalid request ({count} error{})",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            write!(f, "\n  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
