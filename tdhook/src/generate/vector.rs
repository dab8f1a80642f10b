//! `SteeringVector`: per-path directions with arithmetic, normalisation, and a file format
//! (safetensors holding the tensors, with a JSON spec in its metadata).

use super::steer::SteerScope;
use crate::error::{Error, Result};
use crate::latent::TokenReduction;
use crate::tensordict::TensorDict;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::{Add, Mul, Neg, Sub};
use std::path::Path;

const SPEC_KEY: &str = "tdhook.steering_spec";

/// How a vector is meant to be applied; saved beside the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SteeringSpec {
    /// The hook paths, in order.
    pub paths: Vec<String>,
    /// Multiplies every vector when applied.
    pub coefficient: f64,
    /// How the token dim was reduced when the vector was made (`per_position`, `last_token`,
    /// `mean_tokens`).
    pub reduction: String,
    /// Which tokens are steered.
    pub scope: SteerScope,
}

/// Directions keyed by hook path (`[D]`, or `[T, D]` per position), plus how to apply them.
///
/// ```
/// use tdhook::generate::SteeringVector;
/// use candle_core::{Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let a = SteeringVector::new([("transformer.h.1", Tensor::new(&[3f32, 4.], &Device::Cpu)?)])?;
/// let b = (a.clone() * 2.0)?;
/// let c = ((b - a)? + SteeringVector::new([("transformer.h.1", Tensor::new(&[0f32, 1.], &Device::Cpu)?)])?)?;
/// assert_eq!(c.get("transformer.h.1").unwrap().to_vec1::<f32>()?, [3., 5.]);
/// let unit = c.normalized()?;
/// let norm = unit.get("transformer.h.1").unwrap().sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
/// assert!((norm - 1.0).abs() < 1e-6);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SteeringVector {
    vectors: BTreeMap<String, Tensor>,
    /// How to apply it.
    pub spec: SteeringSpec,
}

fn check_finite(path: &str, v: &Tensor) -> Result<()> {
    crate::util::check_finite(v, "steering vector", path, crate::util::STEERING_NOT_FINITE)
}

impl SteeringVector {
    /// From `(path, vector)` pairs; every vector must be finite. Coefficient 1, scope all tokens.
    pub fn new<P: Into<String>>(vectors: impl IntoIterator<Item = (P, Tensor)>) -> Result<Self> {
        let vectors: BTreeMap<String, Tensor> =
            vectors.into_iter().map(|(p, v)| (p.into(), v)).collect();
        if vectors.is_empty() {
            return Err(Error::Invalid(
                "a steering vector needs at least one path".into(),
            ));
        }
        for (p, v) in &vectors {
            check_finite(p, v)?;
        }
        let paths = vectors.keys().cloned().collect();
        Ok(Self {
            vectors,
            spec: SteeringSpec {
                paths,
                coefficient: 1.0,
                reduction: "per_position".into(),
                scope: SteerScope::All,
            },
        })
    }

    /// From ActivationAddition's output (`out.get_dict("steer")`), recording the reduction used.
    pub fn from_addition(steer: &TensorDict, reduction: TokenReduction) -> Result<Self> {
        let mut v = Self::new(steer.leaves().map(|(k, t)| (k.to_string(), t.clone())))?;
        v.spec.reduction = match reduction {
            TokenReduction::PerPosition => "per_position",
            TokenReduction::LastToken => "last_token",
            TokenReduction::MeanTokens => "mean_tokens",
        }
        .into();
        Ok(v)
    }

    /// The vector at `path`.
    pub fn get(&self, path: &str) -> Option<&Tensor> {
        self.vectors.get(path)
    }

    /// `(path, vector)` pairs in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.vectors.iter().map(|(p, v)| (p.as_str(), v))
    }

    /// The paths.
    pub fn paths(&self) -> Vec<&str> {
        self.vectors.keys().map(String::as_str).collect()
    }

    /// Set the coefficient applied on use.
    pub fn with_coefficient(mut self, coefficient: f64) -> Self {
        self.spec.coefficient = coefficient;
        self
    }

    /// Set which tokens are steered.
    pub fn with_scope(mut self, scope: SteerScope) -> Self {
        self.spec.scope = scope;
        self
    }

    /// Every vector scaled to unit L2 norm (over its last dim). A zero vector is an error.
    pub fn normalized(&self) -> Result<Self> {
        let mut out = self.clone();
        for (p, v) in out.vectors.iter_mut() {
            let norm = v.sqr()?.sum_keepdim(v.rank() - 1)?.sqrt()?;
            let min = norm.flatten_all()?.min(0)?.to_scalar::<f32>()?;
            if min == 0.0 {
                return Err(Error::Invalid(format!(
                    "the steering vector at `{p}` is zero; it has no direction to normalise"
                )));
            }
            *v = v.broadcast_div(&norm)?;
        }
        Ok(out)
    }

    /// The vectors times the coefficient: what is added.
    pub fn scaled(&self) -> Result<Vec<(String, Tensor)>> {
        self.vectors
            .iter()
            .map(|(p, v)| Ok((p.clone(), (v * self.spec.coefficient)?)))
            .collect()
    }

    fn zip(
        self,
        other: Self,
        what: &str,
        f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Self> {
        if self.vectors.keys().ne(other.vectors.keys()) {
            return Err(Error::Invalid(format!(
                "cannot {what} steering vectors over different paths: {:?} vs {:?}",
                self.paths(),
                other.paths()
            )));
        }
        let mut out = self.clone();
        for (p, v) in out.vectors.iter_mut() {
            let w = &other.vectors[p];
            if v.dims() != w.dims() {
                return Err(Error::ShapeMismatch {
                    what: "steering vector",
                    path: p.clone(),
                    expected: v.dims().to_vec(),
                    got: w.dims().to_vec(),
                });
            }
            *v = f(v, w)?;
        }
        Ok(out)
    }

    /// Save to one safetensors file; the spec goes into its metadata as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut td = TensorDict::unbatched();
        for (p, v) in &self.vectors {
            td.insert(p.as_str(), v.clone())?;
        }
        let spec = serde_json::to_string(&self.spec).map_err(|e| Error::Invalid(e.to_string()))?;
        // The spec rides in a sidecar tensor-free file next to the tensors' metadata-less dict.
        td.save(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let with_meta = add_metadata(&bytes, SPEC_KEY, &spec)?;
        std::fs::write(path, with_meta).map_err(|e| Error::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// Load what [`SteeringVector::save`] wrote.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let meta = read_metadata(&bytes).map_err(|reason| Error::Load {
            path: path.display().to_string(),
            reason,
        })?;
        let td = TensorDict::load(path, device)?;
        let mut v = Self::new(td.leaves().map(|(k, t)| (k.to_string(), t.clone())))?;
        if let Some(spec) = meta.get(SPEC_KEY) {
            v.spec = serde_json::from_str(spec).map_err(|e| Error::Load {
                path: path.display().to_string(),
                reason: format!("bad steering spec: {e}"),
            })?;
        }
        Ok(v)
    }
}

/// The `__metadata__` map of a safetensors file.
fn read_metadata(bytes: &[u8]) -> std::result::Result<HashMap<String, String>, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Rewrite a safetensors buffer with one more metadata entry.
fn add_metadata(bytes: &[u8], key: &str, value: &str) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(
        bytes[..8]
            .try_into()
            .map_err(|_| Error::Invalid("truncated safetensors".into()))?,
    ) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])
        .map_err(|e| Error::Invalid(format!("bad safetensors header: {e}")))?;
    let mut header = header;
    let obj = header
        .as_object_mut()
        .ok_or_else(|| Error::Invalid("bad safetensors header".into()))?;
    let meta = obj
        .entry("__metadata__")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    meta.as_object_mut()
        .ok_or_else(|| Error::Invalid("bad safetensors metadata".into()))?
        .insert(
            key.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    let mut text = serde_json::to_vec(&header).map_err(|e| Error::Invalid(e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

impl Add for SteeringVector {
    type Output = Result<SteeringVector>;
    fn add(self, other: Self) -> Result<SteeringVector> {
        self.zip(other, "add", |a, b| a + b)
    }
}

impl Sub for SteeringVector {
    type Output = Result<SteeringVector>;
    fn sub(self, other: Self) -> Result<SteeringVector> {
        self.zip(other, "subtract", |a, b| a - b)
    }
}

impl Mul<f64> for SteeringVector {
    type Output = Result<SteeringVector>;
    fn mul(mut self, k: f64) -> Result<SteeringVector> {
        if !k.is_finite() {
            return Err(Error::NotFinite {
                what: "steering scale",
                path: "*".into(),
                fix: "multiply by a finite number",
            });
        }
        for v in self.vectors.values_mut() {
            *v = (&*v * k)?;
        }
        Ok(self)
    }
}

impl Neg for SteeringVector {
    type Output = Result<SteeringVector>;
    fn neg(self) -> Result<SteeringVector> {
        self * -1.0
    }
}
