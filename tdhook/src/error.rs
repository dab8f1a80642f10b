//! Typed errors: each names the path, the shapes and the fix.

use crate::tensordict::TensorDictError;

/// Everything tdhook can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pattern or path matched no hook point of the model.
    #[error(
        "{what} `{pattern}` matches no hook point of the model{}; nearest paths: {}",
        if *.full_match { " (patterns must match the whole path)" } else { "" },
        format_nearest(.nearest)
    )]
    NoMatch {
        /// What was looked up (`pattern`, `path`).
        what: &'static str,
        /// The pattern as given.
        pattern: String,
        /// Whether the pattern had to match the whole path.
        full_match: bool,
        /// The closest real paths, best first.
        nearest: Vec<String>,
    },

    /// A pattern is no valid regular expression.
    #[error("pattern `{pattern}` is no valid regular expression: {source}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What the regex parser said.
        #[source]
        source: regex::Error,
    },

    /// A pattern matched only list points (`Vec` / `ModuleList`), on which hooks never fire.
    #[error(
        "`{pattern}` matches only list points ({}), which are never called, so their hooks would \
         never fire; hook their elements instead, e.g. `{}.0`",
        .paths.join(", "), .paths.first().map(String::as_str).unwrap_or("list")
    )]
    OnlyLists {
        /// The pattern as given.
        pattern: String,
        /// The list paths it matched.
        paths: Vec<String>,
    },

    /// A replacement tensor has the wrong shape.
    #[error(
        "{what} at `{path}` returned shape {got:?}, but the hook point's tensor has shape \
         {expected:?}; return a tensor of the same shape"
    )]
    ShapeMismatch {
        /// What produced it (`steer_fn`, `patch_fn`, …).
        what: &'static str,
        /// The hook path.
        path: String,
        /// The hook point's shape.
        expected: Vec<usize>,
        /// The returned shape.
        got: Vec<usize>,
    },

    /// Two inputs that must have one shape do not.
    #[error("{what}: `{a}` has shape {a_shape:?} but `{b}` has shape {b_shape:?}; they must match")]
    InputMismatch {
        /// Which method.
        what: &'static str,
        /// First key.
        a: String,
        /// Its shape.
        a_shape: Vec<usize>,
        /// Second key.
        b: String,
        /// Its shape.
        b_shape: Vec<usize>,
    },

    /// A tensor holds NaN or infinite values where finite ones are needed.
    #[error("{what} at `{path}` holds NaN or infinite values; {fix}")]
    NotFinite {
        /// What was checked.
        what: &'static str,
        /// The hook path or key.
        path: String,
        /// What to do about it.
        fix: &'static str,
    },

    /// A hook asked for input the run did not provide, or was used wrongly.
    #[error("{0}")]
    Invalid(String),

    /// A key a method reads from the input dict is absent.
    #[error("{what} reads `{key}` from the input dict, but the dict has no such entry; {fix}")]
    MissingKey {
        /// Which method.
        what: &'static str,
        /// The key, `/`-joined.
        key: String,
        /// What to do about it.
        fix: String,
    },

    /// A probe estimator could not fit or predict.
    #[error(transparent)]
    Estimator(#[from] crate::latent::probing::EstimatorError),

    /// A probe result was recorded twice without `overwrite_results`.
    #[error(
        "result for `{key}` already exists in phase `{phase}`; call reset_results() or use \
         overwrite_results(true)"
    )]
    ResultExists {
        /// `fit` or `predict`.
        phase: &'static str,
        /// The probe key, `{path}_{direction}`.
        key: String,
    },

    /// A model file or config could not be read.
    #[error("cannot load `{path}`: {reason}")]
    Load {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },

    /// A fused kernel (tdhook-kernels) rejected its arguments at a hook point.
    #[error("at `{path}`: {source}")]
    Kernel {
        /// The hook path.
        path: String,
        /// The kernel's error (it names the operand, its shape and what was expected).
        source: Box<candle_core::Error>,
    },

    /// A TensorDict operation failed.
    #[error(transparent)]
    TensorDict(#[from] TensorDictError),

    /// candle failed inside a forward or a tensor op.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn format_nearest(nearest: &[String]) -> String {
    if nearest.is_empty() {
        "(the model has no hook points)".into()
    } else {
        nearest
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
