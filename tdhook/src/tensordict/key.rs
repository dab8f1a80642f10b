//! Nested keys for [`TensorDict`](super::TensorDict).

use std::fmt;

use super::TensorDictError;

/// A nested key into a [`TensorDict`](super::TensorDict): a non-empty list of
/// string segments, the analogue of tensordict's tuple keys
/// (`td["cache", "transformer.h.0.mlp"]`).
///
/// A segment may contain dots: a hook path such as `transformer.h.0.mlp` is
/// *one* segment. A segment must be non-empty and must not contain `/`,
/// because `/` is the separator used by [`Display`](fmt::Display), by
/// [`Key::parse`] and by the safetensors file format.
///
/// Keys are built with `From`/`Into` from a `&str`, a `String`, a tuple of two
/// or three strings, an array, a slice or a `Vec` of strings. Those
/// conversions cannot fail, so they do not validate; every
/// [`TensorDict`](super::TensorDict) method validates the key it is given and
/// reports [`TensorDictError::InvalidKey`] (fallible methods) or treats it as
/// absent (lookups such as `get` and `contains`). Use [`Key::new`] or
/// [`Key::parse`] to validate eagerly.
///
/// ```
/// use tdhook::tensordict::Key;
///
/// let k = Key::from(("cache", "transformer.h.0.mlp"));
/// assert_eq!(k.to_string(), "cache/transformer.h.0.mlp");
/// assert_eq!(k.len(), 2);
/// assert_eq!(Key::parse("cache/transformer.h.0.mlp").unwrap(), k);
/// assert!(Key::new(["cache", ""]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    segments: Vec<String>,
}

impl Key {
    /// Builds a key from its segments and validates it.
    ///
    /// # Errors
    /// [`TensorDictError::InvalidKey`] if there are no segments, or a segment
    /// is empty or contains `/`.
    pub fn new<S: Into<String>>(
        segments: impl IntoIterator<Item = S>,
    ) -> Result<Self, TensorDictError> {
        let key = Self {
            segments: segments.into_iter().map(Into::into).collect(),
        };
        key.validate()?;
        Ok(key)
    }

    /// Parses a `/`-separated path (`"cache/transformer.h.0.mlp"`) into a key,
    /// the inverse of [`Display`](fmt::Display).
    ///
    /// # Errors
    /// [`TensorDictError::InvalidKey`] if the path is empty or has an empty
    /// segment (`"a//b"`, `"/a"`, `"a/"`).
    pub fn parse(path: &str) -> Result<Self, TensorDictError> {
        Self::new(path.split('/'))
    }

    /// Checks that the key has at least one segment and that every segment is
    /// non-empty and free of `/`.
    ///
    /// # Errors
    /// [`TensorDictError::InvalidKey`] naming the offending segment.
    pub fn validate(&self) -> Result<(), TensorDictError> {
        if self.segments.is_empty() {
            return Err(TensorDictError::InvalidKey {
                key: format!("{:?}", self.segments),
                reason: "a key needs at least one segment".to_string(),
            });
        }
        for seg in &self.segments {
            if seg.is_empty() {
                return Err(TensorDictError::InvalidKey {
                    key: format!("{:?}", self.segments),
                    reason: "key segments must be non-empty".to_string(),
                });
            }
            if seg.contains('/') {
                return Err(TensorDictError::InvalidKey {
                    key: format!("{:?}", self.segments),
                    reason: format!(
                        "segment {seg:?} contains `/`, which separates segments; \
                         pass the segments separately (e.g. a tuple or array key) \
                         or use `Key::parse({seg:?})`"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether [`validate`](Self::validate) would succeed.
    pub fn is_valid(&self) -> bool {
        self.validate().is_ok()
    }

    /// The segments of the key, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Number of segments (the nesting depth of the entry it names).
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// `true` only for a key with no segments, which is never valid.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The last segment (the entry's name inside its parent dict), if any.
    pub fn last(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The key of the parent sub-dict, or `None` for a top-level key.
    pub fn parent(&self) -> Option<Key> {
        match self.segments.len() {
            0 | 1 => None,
            n => Some(Key {
                segments: self.segments[..n - 1].to_vec(),
            }),
        }
    }

    /// A new key with `segment` appended (`cache` + `x` -> `cache/x`).
    pub fn join(&self, segment: impl Into<String>) -> Key {
        let mut segments = self.segments.clone();
        segments.push(segment.into());
        Key { segments }
    }

    /// Consumes the key, returning its segments.
    pub fn into_segments(self) -> Vec<String> {
        self.segments
    }

    pub(crate) fn from_segments_unchecked(segments: Vec<String>) -> Self {
        Key { segments }
    }
}

impl fmt::Display for Key {
    /// Joins the segments with `/`: `cache/transformer.h.0.mlp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(seg)?;
        }
        Ok(())
    }
}

impl From<&str> for Key {
    /// A one-segment key; dots are kept (`"transformer.h.0"` is one segment).
    fn from(s: &str) -> Self {
        Key {
            segments: vec![s.to_string()],
        }
    }
}

impl From<String> for Key {
    /// A one-segment key.
    fn from(s: String) -> Self {
        Key { segments: vec![s] }
    }
}

impl From<&String> for Key {
    /// A one-segment key.
    fn from(s: &String) -> Self {
        Key {
            segments: vec![s.clone()],
        }
    }
}

impl From<&Key> for Key {
    /// Clones the key, so `&Key` can be passed wherever `impl Into<Key>` is
    /// expected.
    fn from(k: &Key) -> Self {
        k.clone()
    }
}

impl<A: Into<String>, B: Into<String>> From<(A, B)> for Key {
    /// A two-segment key: `("cache", "transformer.h.0.mlp")`.
    fn from((a, b): (A, B)) -> Self {
        Key {
            segments: vec![a.into(), b.into()],
        }
    }
}

impl<A: Into<String>, B: Into<String>, C: Into<String>> From<(A, B, C)> for Key {
    /// A three-segment key: `("cache", "attn", "k")`.
    fn from((a, b, c): (A, B, C)) -> Self {
        Key {
            segments: vec![a.into(), b.into(), c.into()],
        }
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for Key {
    /// One segment per array element: `["cache", "attn", "k"]`.
    fn from(segments: [S; N]) -> Self {
        Key {
            segments: segments.into_iter().map(Into::into).collect(),
        }
    }
}

impl<S: AsRef<str>, const N: usize> From<&[S; N]> for Key {
    /// One segment per array element: `&["cache", "attn", "k"]`.
    fn from(segments: &[S; N]) -> Self {
        Key::from(&segments[..])
    }
}

impl<S: AsRef<str>> From<&[S]> for Key {
    /// One segment per slice element.
    fn from(segments: &[S]) -> Self {
        Key {
            segments: segments.iter().map(|s| s.as_ref().to_string()).collect(),
        }
    }
}

impl<S: Into<String>> From<Vec<S>> for Key {
    /// One segment per element.
    fn from(segments: Vec<S>) -> Self {
        Key {
            segments: segments.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_build_expected_segments() {
        let cases: Vec<(Key, Vec<&str>)> = vec![
            (Key::from("a.b"), vec!["a.b"]),
            (Key::from(String::from("x")), vec!["x"]),
            (Key::from(("cache", "h.0.mlp")), vec!["cache", "h.0.mlp"]),
            (
                Key::from(("a", String::from("b"), "c")),
                vec!["a", "b", "c"],
            ),
            (Key::from(["p", "q"]), vec!["p", "q"]),
            (Key::from(&["p", "q", "r"]), vec!["p", "q", "r"]),
            (Key::from(&["s", "t"][..]), vec!["s", "t"]),
            (Key::from(vec![String::from("u")]), vec!["u"]),
        ];
        for (key, want) in cases {
            assert_eq!(key.segments(), want.as_slice(), "{key:?}");
            assert!(key.is_valid());
        }
        let k = Key::from(("a", "b"));
        assert_eq!(Key::from(&k), k);
    }

    #[test]
    fn display_and_parse_round_trip() {
        let k = Key::from(("cache", "transformer.h.0.mlp"));
        assert_eq!(k.to_string(), "cache/transformer.h.0.mlp");
        assert_eq!(Key::parse(&k.to_string()).unwrap(), k);
        assert_eq!(k.parent(), Some(Key::from("cache")));
        assert_eq!(Key::from("cache").parent(), None);
        assert_eq!(Key::from("cache").join("x"), Key::from(("cache", "x")));
        assert_eq!(k.last(), Some("transformer.h.0.mlp"));
    }

    #[test]
    fn invalid_keys_are_rejected_with_reason() {
        let err = Key::new(["a/b"]).unwrap_err().to_string();
        assert!(err.contains("contains `/`"), "{err}");
        assert!(err.contains("Key::parse"), "{err}");

        let err = Key::new(["a", ""]).unwrap_err().to_string();
        assert!(err.contains("non-empty"), "{err}");

        let err = Key::new(Vec::<String>::new()).unwrap_err().to_string();
        assert!(err.contains("at least one segment"), "{err}");

        assert!(Key::parse("a//b").is_err());
        assert!(Key::parse("").is_err());
        assert!(Key::parse("/a").is_err());
        assert!(!Key::from("x/y").is_valid());
    }
}
