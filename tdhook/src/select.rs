//! Selecting hook points: exact paths and full-match regex patterns, resolved once against a
//! model's point table, with class filters (`classes_to_hook` / `classes_to_skip`).

use crate::error::{Error, Result};
use crate::hookable::{HookPath, PointKind};
use crate::points::HookPointInfo;
use std::sync::{Arc, OnceLock};

/// How a [`Selector`] names points.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pattern {
    /// A regular expression that must match the **whole** path. tdhook uses `re.match`, a
    /// prefix match, so there `h.1` also selects `h.10`; here it does not.
    Regex(String),
    /// One exact path (typed paths become this).
    Exact(String),
}

/// Which hook points a hook applies to. Strings are full-match regexes; typed paths and
/// [`HookPath`]s are exact.
///
/// `classes_to_hook` keeps only points whose class is listed; `classes_to_skip` drops points whose
/// class is listed. A point's class is its Rust type's name without module path or generics
/// (`Linear`, `LayerNorm`, `Block`), a struct's `#[hook(class = "...")]` when given (so a model can
/// answer to PyTorch's class names, e.g. `GPT2Block`), `ModuleList` for lists and `HookPoint` for
/// markers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The path pattern.
    pattern: Pattern,
    /// Keep only points of these classes (empty: all).
    classes_to_hook: Vec<String>,
    /// Drop points of these classes.
    classes_to_skip: Vec<String>,
    /// The compiled regex, kept so preparing a method again (`prepare` per request) does not
    /// recompile it; clones share it.
    compiled: CompiledRegex,
}

/// A lazily compiled full-match regex and the pattern it came from; ignored by `==`. Clones
/// share it (methods resolve clones of their selectors).
#[derive(Clone, Debug, Default)]
struct CompiledRegex(Arc<OnceLock<(String, regex::Regex)>>);

impl PartialEq for CompiledRegex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CompiledRegex {}

impl CompiledRegex {
    /// The full-match regex for `pat`, compiled on first use.
    fn get(&self, pat: &str) -> Result<regex::Regex> {
        if let Some((src, re)) = self.0.get()
            && src == pat
        {
            return Ok(re.clone());
        }
        let re =
            regex::Regex::new(&format!("^(?:{pat})$")).map_err(|source| Error::BadPattern {
                pattern: pat.to_string(),
                source,
            })?;
        let _ = self.0.set((pat.to_string(), re.clone()));
        Ok(re)
    }
}

impl Selector {
    /// A full-match regular expression.
    pub fn regex(pattern: impl Into<String>) -> Self {
        Self::new(Pattern::Regex(pattern.into()))
    }

    /// One exact path.
    pub fn exact(path: impl Into<String>) -> Self {
        Self::new(Pattern::Exact(path.into()))
    }

    fn new(pattern: Pattern) -> Self {
        Self {
            pattern,
            classes_to_hook: vec![],
            classes_to_skip: vec![],
            compiled: CompiledRegex::default(),
        }
    }

    /// Keep only points of these classes.
    pub fn classes_to_hook<S: Into<String>>(
        mut self,
        classes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.classes_to_hook = classes.into_iter().map(Into::into).collect();
        self
    }

    /// Drop points of these classes.
    pub fn classes_to_skip<S: Into<String>>(
        mut self,
        classes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.classes_to_skip = classes.into_iter().map(Into::into).collect();
        self
    }

    /// The path pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The classes kept (empty: all).
    pub fn hooked_classes(&self) -> &[String] {
        &self.classes_to_hook
    }

    /// The classes dropped.
    pub fn skipped_classes(&self) -> &[String] {
        &self.classes_to_skip
    }

    /// The pattern text.
    pub fn text(&self) -> &str {
        match &self.pattern {
            Pattern::Regex(s) | Pattern::Exact(s) => s,
        }
    }

    /// Indices into `points` (whose paths carry any prefix already) of the points selected.
    /// Errors when nothing matches (listing the nearest paths) or only lists match.
    pub fn resolve(&self, points: &[HookPointInfo]) -> Result<Vec<usize>> {
        let class_ok = |p: &HookPointInfo| {
            (self.classes_to_hook.is_empty() || self.classes_to_hook.iter().any(|c| c == p.class))
                && !self.classes_to_skip.iter().any(|c| c == p.class)
        };
        let matched: Vec<usize> = match &self.pattern {
            Pattern::Exact(path) => points
                .iter()
                .position(|p| &p.path == path)
                .into_iter()
                .filter(|&i| class_ok(&points[i]))
                .collect(),
            Pattern::Regex(pat) => {
                let re = self.compiled.get(pat)?;
                points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| re.is_match(&p.path) && class_ok(p))
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        if matched.is_empty() {
            return Err(Error::NoMatch {
                what: if matches!(self.pattern, Pattern::Exact(_)) {
                    "path"
                } else {
                    "pattern"
                },
                pattern: self.text().to_string(),
                full_match: matches!(self.pattern, Pattern::Regex(_)),
                nearest: nearest(self.text(), points, 5),
            });
        }
        let callable: Vec<usize> = matched
            .iter()
            .copied()
            .filter(|&i| points[i].kind != PointKind::List)
            .collect();
        if callable.is_empty() {
            return Err(Error::OnlyLists {
                pattern: self.text().to_string(),
                paths: matched.iter().map(|&i| points[i].path.clone()).collect(),
            });
        }
        Ok(callable)
    }
}

/// The `n` paths closest to `text` by edit distance (ties: table order).
pub fn nearest(text: &str, points: &[HookPointInfo], n: usize) -> Vec<String> {
    let mut scored: Vec<(usize, usize)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (strsim::levenshtein(text, &p.path), i))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(n)
        .map(|(_, i)| points[i].path.clone())
        .collect()
}

impl From<&str> for Selector {
    fn from(s: &str) -> Self {
        Selector::regex(s)
    }
}

impl From<String> for Selector {
    fn from(s: String) -> Self {
        Selector::regex(s)
    }
}

impl From<&String> for Selector {
    fn from(s: &String) -> Self {
        Selector::regex(s.clone())
    }
}

impl From<HookPath> for Selector {
    fn from(p: HookPath) -> Self {
        Selector::exact(p.as_str())
    }
}

impl From<&HookPath> for Selector {
    fn from(p: &HookPath) -> Self {
        Selector::exact(p.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[&str]) -> Vec<HookPointInfo> {
        paths
            .iter()
            .map(|p| HookPointInfo {
                path: p.to_string(),
                class: "Linear",
                kind: PointKind::Module,
                route: vec![],
            })
            .collect()
    }

    #[test]
    fn the_cached_regex_is_shared_by_clones() -> Result<()> {
        let points = table(&["h.0", "h.1", "h.10"]);
        let sel = Selector::regex(r"h\.1");
        let copy = sel.clone();
        assert_eq!(copy.resolve(&points)?, [1]); // compiles into the shared cache
        assert!(
            sel.compiled.0.get().is_some(),
            "the clone filled the shared cache"
        );
        assert_eq!(sel.resolve(&points)?, [1]);
        assert_eq!(Selector::regex(r"h\.1\d*").resolve(&points)?, [1, 2]);
        let bad = Selector::regex("h.(").resolve(&points).unwrap_err();
        assert!(matches!(bad, Error::BadPattern { .. }), "{bad}");
        Ok(())
    }
}
