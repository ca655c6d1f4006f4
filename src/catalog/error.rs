use std::fmt;

/// One problem in the project's definitions, located by file and key
/// (`metrics/bank.yaml: metrics.overdue_ratio.numerator: unknown measure 'x'`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{file}: {}{reason}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct CatalogError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl CatalogError {
    pub fn new(file: impl Into<String>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Everything wrong with a project, reported together so an analyst fixes all of it in one pass.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl CatalogErrors {
    pub fn push(
        &mut self,
        file: impl Into<String>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.0.push(CatalogError::new(file, key, reason));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ends a validation phase: later phases assume earlier ones passed.
    pub fn check(&mut self) -> Result<(), CatalogErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(self))
        }
    }
}

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CatalogErrors {}

impl From<CatalogError> for CatalogErrors {
    fn from(e: CatalogError) -> Self {
        Self(vec![e])
    }
}
