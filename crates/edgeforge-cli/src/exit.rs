//! Sorting failures into exit codes: bad input (2) versus our own or the environment's fault (3).

pub enum Failure {
    /// Exit 2: a model file, text, or argument the user can fix.
    BadInput(anyhow::Error),
    /// Exit 3: I/O while writing, runtime invariants.
    Internal(anyhow::Error),
    /// Exit 1: a gate or check failed.
    GateFailed(anyhow::Error),
    /// Exit 130: stopped by Ctrl-C after the last complete checkpoint.
    Interrupted(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::GateFailed(_) => 1,
            Failure::BadInput(_) => 2,
            Failure::Internal(_) => 3,
            Failure::Interrupted(_) => 130,
        }
    }

    /// One line: the error and its causes joined, newlines flattened.
    pub fn message(&self) -> String {
        let e = match self {
            Failure::BadInput(e) | Failure::Internal(e) | Failure::GateFailed(e) | Failure::Interrupted(e) => e,
        };
        let mut parts: Vec<String> = vec![e.to_string()];
        for cause in e.chain().skip(1) {
            let s = cause.to_string();
            if !parts.iter().any(|p| p.contains(&s)) {
                parts.push(s);
            }
        }
        // Recipe diagnostics are one line each; everything else is flattened to one line.
        if e.downcast_ref::<edgeforge_recipe::RecipeError>().is_some_and(|r| matches!(r, edgeforge_recipe::RecipeError::Invalid(_))) {
            return e.to_string();
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
            // The network's or the server's fault, not the user's input.
            edgeforge_eval::EvalError::Runtime(_) | edgeforge_eval::EvalError::Download { .. } => Failure::Internal(e.into()),
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
