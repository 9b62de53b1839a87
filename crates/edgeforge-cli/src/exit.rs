//! Sorting failures into exit codes: bad input (2) versus our own or the environment's fault (3).

pub enum Failure {
    /// Exit 2: a model file, text, or argument the user can fix.
    BadInput(anyhow::Error),
    /// Exit 3: I/O while writing, runtime invariants.
    Internal(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => 2,
            Failure::Internal(_) => 3,
        }
    }

    /// One line: the error and its causes joined, newlines flattened.
    pub fn message(&self) -> String {
        let e = match self {
            Failure::BadInput(e) | Failure::Internal(e) => e,
        };
        let mut parts: Vec<String> = vec![e.to_string()];
        for cause in e.chain().skip(1) {
            let s = cause.to_string();
            if !parts.iter().any(|p| p.contains(&s)) {
                parts.push(s);
            }
        }
        parts.join(": ").replace('\n', " ")
    }
}

impl From<edgeforge_core::Error> for Failure {
    fn from(e: edgeforge_core::Error) -> Self {
        Failure::BadInput(e.into())
    }
}

impl From<edgeforge_eval::EvalError> for Failure {
    fn from(e: edgeforge_eval::EvalError) -> Self {
        match e {
            edgeforge_eval::EvalError::Runtime(_) => Failure::Internal(e.into()),
            _ => Failure::BadInput(e.into()),
        }
    }
}

impl From<edgeforge_export::ExportError> for Failure {
    fn from(e: edgeforge_export::ExportError) -> Self {
        match e {
            edgeforge_export::ExportError::Model(_) | edgeforge_export::ExportError::Exists { .. } => {
                Failure::BadInput(e.into())
            }
            _ => Failure::Internal(e.into()),
        }
    }
}
