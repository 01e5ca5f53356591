//! [`FieldError`]: a refusal that names the one field at fault (`params.lr`,
//! `template.argv[3]`), so the relay can answer 400 with it and a form can mark the field.

use serde::{Deserialize, Serialize};

/// A value refused, with the field it came from. Displays as `params.lr: must be …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field: `params.lr`, `template.argv[3]`, `template.env.HOME`.
    pub field: String,
    /// What is wrong with it, in words for the person who typed it.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field` saying `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
