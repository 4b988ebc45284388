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
    /// The path inside the entry (or the request) when it is finer than
    /// `field`, in the request's own property names and indices:
    /// `values[1]`, `hostIP`; empty when `field` is the path. See
    /// [`ValidationError::path`].
    pub subpath: String,
}

impl ValidationError {
    /// An error about a field of the request itself (`name`, `k8sNamespace`, …).
    pub fn request(field: &str, message: impl Into<String>) -> Self {
        Self {
            entry: None,
            entry_type: None,
            field: field.to_owned(),
            message: message.into(),
            subpath: String::new(),
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
            subpath: String::new(),
        }
    }

    /// The same error, located at `subpath` inside its entry or the request
    /// (`values[1]`); the message and `field` stay as they are.
    #[must_use]
    pub fn at(mut self, subpath: impl Into<String>) -> Self {
        self.subpath = subpath.into();
        self
    }

    /// A stable path into the request for the value the error is about, for
    /// a form to show the error next to its field: `name`, `k8sNamespace`,
    /// `config`, `config[2]`, `config[2].host`, `config[0].values[1]`
    /// (indices into the request's arrays, then the property name exactly
    /// as in the request).
    pub fn path(&self) -> String {
        let inner = if self.subpath.is_empty() {
            self.field.as_str()
        } else {
            self.subpath.as_str()
        };
        match (self.entry, inner.is_empty()) {
            (Some(index), true) => format!("config[{index}]"),
            (Some(index), false) => format!("config[{index}].{inner}"),
            (None, _) => inner.to_owned(),
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
