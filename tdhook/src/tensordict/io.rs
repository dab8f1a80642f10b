//! Saving and loading a [`TensorDict`] as one safetensors file.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors, View};

use super::{Key, Result, TensorDict, TensorDictError};

/// Metadata key holding a JSON object mapping each dict's `/`-joined path
/// (`""` for the root) to its batch size.
pub const BATCH_SIZES_METADATA_KEY: &str = "tdhook.batch_sizes";

/// Metadata key holding a JSON array of every key (sub-dicts included),
/// `/`-joined, depth-first in insertion order.
pub const KEYS_METADATA_KEY: &str = "tdhook.keys";

/// Named tensor payloads plus the header metadata of a file.
type RawParts = (Vec<(String, RawTensor)>, HashMap<String, String>);

/// An owned tensor payload in safetensors layout.
struct RawTensor {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn le_bytes<T, const N: usize>(values: Vec<T>, to_le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(to_le).collect()
}

/// Exact conversion of an f32 that holds an f16 value (as produced by
/// widening an f16 tensor) to the f16 bit pattern.
fn f16_bits_from_exact_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        // Infinity or NaN (keep NaNs NaN: force a non-zero mantissa).
        let nan = if man != 0 {
            0x200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    if exp == 0 {
        // Zero (f16 values are never f32 subnormals).
        return sign;
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // f16 subnormal: value = m * 2^-24.
        let full = man | 0x80_0000;
        let shift = (14 - e) as u32;
        return if shift >= 32 {
            sign
        } else {
            sign | (full >> shift) as u16
        };
    }
    sign | ((e as u16) << 10) | (man >> 13) as u16
}

fn tensor_to_raw(key: &Key, t: &Tensor) -> Result<RawTensor> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let (dtype, data) = match t.dtype() {
        DType::U8 => (StDtype::U8, flat.to_vec1::<u8>()?),
        DType::U32 => (
            StDtype::U32,
            le_bytes(flat.to_vec1::<u32>()?, u32::to_le_bytes),
        ),
        DType::I16 => (
            StDtype::I16,
            le_bytes(flat.to_vec1::<i16>()?, i16::to_le_bytes),
        ),
        DType::I32 => (
            StDtype::I32,
            le_bytes(flat.to_vec1::<i32>()?, i32::to_le_bytes),
        ),
        DType::I64 => (
            StDtype::I64,
            le_bytes(flat.to_vec1::<i64>()?, i64::to_le_bytes),
        ),
        DType::F32 => (
            StDtype::F32,
            le_bytes(flat.to_vec1::<f32>()?, f32::to_le_bytes),
        ),
        DType::F64 => (
            StDtype::F64,
            le_bytes(flat.to_vec1::<f64>()?, f64::to_le_bytes),
        ),
        // Widening bf16/f16 to f32 is exact, so the original bits are recovered.
        DType::BF16 => {
            let wide = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            (
                StDtype::BF16,
                le_bytes(wide, |x| ((x.to_bits() >> 16) as u16).to_le_bytes()),
            )
        }
        DType::F16 => {
            let wide = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            (
                StDtype::F16,
                le_bytes(wide, |x| f16_bits_from_exact_f32(x).to_le_bytes()),
            )
        }
        other => {
            return Err(TensorDictError::UnsupportedDtype {
                key: key.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(RawTensor { dtype, shape, data })
}

fn raw_to_tensor(
    name: &str,
    dtype: StDtype,
    shape: &[usize],
    data: &[u8],
    device: &Device,
) -> Result<Tensor> {
    let candle_dtype = match dtype {
        StDtype::U8 | StDtype::BOOL => DType::U8,
        StDtype::U32 => DType::U32,
        StDtype::I16 => DType::I16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::BF16 => DType::BF16,
        StDtype::F16 => DType::F16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::U16 => {
            // candle has no u16: widen to u32.
            let values: Vec<u32> = data
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            return Ok(Tensor::from_vec(values, shape, device)?);
        }
        other => {
            return Err(TensorDictError::UnsupportedDtype {
                key: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(Tensor::from_raw_buffer(data, candle_dtype, shape, device)?)
}

fn st_err(e: SafeTensorError) -> TensorDictError {
    match e {
        SafeTensorError::IoError(e) => TensorDictError::Io(e),
        other => TensorDictError::Safetensors(other.to_string()),
    }
}

impl TensorDict {
    /// The tensors as `/`-joined names with their payloads, plus the
    /// `tdhook` metadata.
    fn to_raw(&self) -> Result<RawParts> {
        let mut tensors = Vec::new();
        for (key, t) in self.leaves() {
            let raw = tensor_to_raw(&key, t)?;
            tensors.push((key.to_string(), raw));
        }
        let mut dicts = Vec::new();
        self.collect_dicts(&mut Vec::new(), &mut dicts);
        let batch_sizes: BTreeMap<String, &[usize]> = dicts
            .iter()
            .map(|(path, d)| (path.join("/"), d.batch_size()))
            .collect();
        let keys: Vec<String> = self.keys(false).iter().map(Key::to_string).collect();
        let to_json = |v: serde_json::Result<String>| {
            v.map_err(|e| TensorDictError::Safetensors(e.to_string()))
        };
        let mut metadata = HashMap::new();
        metadata.insert(
            BATCH_SIZES_METADATA_KEY.to_string(),
            to_json(serde_json::to_string(&batch_sizes))?,
        );
        metadata.insert(
            KEYS_METADATA_KEY.to_string(),
            to_json(serde_json::to_string(&keys))?,
        );
        Ok((tensors, metadata))
    }

    /// Serializes the dict to safetensors bytes.
    ///
    /// Layout: one safetensors tensor per leaf, named by its key's segments
    /// joined with `/` (e.g. `cache/transformer.h.0.mlp`); the header
    /// metadata holds `tdhook.batch_sizes` (a JSON object mapping each
    /// dict's `/`-joined path, `""` for the root, to its batch size) and
    /// `tdhook.keys` (a JSON array of all keys, sub-dicts included, in
    /// insertion order), so empty and unbatched sub-dicts and the entry order
    /// round-trip exactly. Tensors are copied to the CPU.
    ///
    /// # Errors
    /// [`TensorDictError::UnsupportedDtype`] for dtypes other than u8, u32,
    /// i16, i32, i64, f16, bf16, f32 and f64; [`TensorDictError::Candle`] if
    /// a tensor cannot be read back.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (tensors, metadata) = self.to_raw()?;
        safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .map_err(st_err)
    }

    /// Writes the dict to a safetensors file at `path` (layout in
    /// [`to_bytes`](Self::to_bytes)).
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes), plus [`TensorDictError::File`] if the
    /// file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (tensors, metadata) = self.to_raw()?;
        safetensors::serialize_to_file(
            tensors.iter().map(|(k, v)| (k.as_str(), v)),
            Some(metadata),
            path,
        )
        .map_err(|e| match e {
            SafeTensorError::IoError(source) => TensorDictError::File {
                path: path.to_path_buf(),
                source,
            },
            other => TensorDictError::Safetensors(other.to_string()),
        })
    }

    /// Reads a dict written by [`save`](Self::save), putting its tensors on
    /// `device`. A plain safetensors file without `tdhook` metadata loads as
    /// a dict with batch size `[]` whose nested keys come from splitting the
    /// tensor names on `/` (entries in name order).
    ///
    /// # Errors
    /// [`TensorDictError::File`] if the file cannot be read, and those of
    /// [`from_bytes`](Self::from_bytes).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<TensorDict> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TensorDictError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, device)
    }

    /// Deserializes safetensors bytes (see [`load`](Self::load)).
    ///
    /// # Errors
    /// [`TensorDictError::Safetensors`] for malformed bytes or metadata,
    /// [`TensorDictError::InvalidKey`] for a tensor name with an empty
    /// segment, [`TensorDictError::UnsupportedDtype`], and the structural
    /// errors of [`insert`](Self::insert) if the file is inconsistent.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<TensorDict> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
        let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
        let meta = header.metadata().as_ref();
        let parse_err = |what: &str, e: serde_json::Error| {
            TensorDictError::Safetensors(format!("malformed `{what}` metadata: {e}"))
        };

        let batch_sizes: HashMap<String, Vec<usize>> =
            match meta.and_then(|m| m.get(BATCH_SIZES_METADATA_KEY)) {
                Some(s) => {
                    serde_json::from_str(s).map_err(|e| parse_err(BATCH_SIZES_METADATA_KEY, e))?
                }
                None => HashMap::new(),
            };
        let mut order: Vec<String> = match meta.and_then(|m| m.get(KEYS_METADATA_KEY)) {
            Some(s) => serde_json::from_str(s).map_err(|e| parse_err(KEYS_METADATA_KEY, e))?,
            None => Vec::new(),
        };
        // Tensors missing from the recorded order (or all, without metadata)
        // follow in name order.
        // Recorded dicts missing from it come first, then tensors, each in
        // name order.
        {
            let listed: HashSet<&str> = order.iter().map(String::as_str).collect();
            let mut dicts: Vec<&str> = batch_sizes
                .keys()
                .map(String::as_str)
                .filter(|p| !p.is_empty() && !listed.contains(p))
                .collect();
            dicts.sort_unstable();
            let mut names = st.names();
            names.retain(|n| !listed.contains(n));
            names.sort_unstable();
            let extra: Vec<String> = dicts.into_iter().chain(names).map(str::to_string).collect();
            order.extend(extra);
        }

        let root_batch = batch_sizes.get("").cloned().unwrap_or_default();
        let mut td = TensorDict::new(root_batch);
        for path in &order {
            let key = Key::parse(path)?;
            // Create the intermediate dicts (and the dict itself, for a dict
            // path) with their recorded batch sizes.
            let segs = key.segments();
            let is_dict = batch_sizes.contains_key(path.as_str());
            let dict_depth = if is_dict { segs.len() } else { segs.len() - 1 };
            for depth in 1..=dict_depth {
                let prefix = &segs[..depth];
                if td.dict_at(prefix).is_some() {
                    continue;
                }
                let batch = match batch_sizes.get(&prefix.join("/")) {
                    Some(b) => b.clone(),
                    None => td
                        .dict_at(&segs[..depth - 1])
                        .map(|d| d.batch_size().to_vec())
                        .unwrap_or_default(),
                };
                td.insert_dict(prefix, TensorDict::new(batch))?;
            }
            if is_dict {
                continue;
            }
            let view = st.tensor(path).map_err(|e| {
                TensorDictError::Safetensors(format!("`{KEYS_METADATA_KEY}` lists `{path}`: {e}"))
            })?;
            let tensor = raw_to_tensor(path, view.dtype(), view.shape(), view.data(), device)?;
            td.insert(&key, tensor)?;
        }
        Ok(td)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device::Cpu
    }

    fn sample() -> TensorDict {
        let d = dev();
        let mut td = TensorDict::new(vec![2]);
        let x = Tensor::arange(0f32, 6.0, &d)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        td.insert("x", x.clone()).unwrap();
        td.insert(
            ("cache", "transformer.h.0.mlp"),
            (x.clone() * 0.5).unwrap().to_dtype(DType::F16).unwrap(),
        )
        .unwrap();
        td.insert(
            ("cache", "transformer.h.1.attn"),
            (x.clone() - 2.5).unwrap().to_dtype(DType::BF16).unwrap(),
        )
        .unwrap();
        td.insert("ids", Tensor::new(&[[1u32, 2], [3, 4]], &d).unwrap())
            .unwrap();
        td.insert("mask", Tensor::new(&[[1u8], [0]], &d).unwrap())
            .unwrap();
        td.insert("pos", Tensor::new(&[[-5i64, 7], [1 << 40, 0]], &d).unwrap())
            .unwrap();
        td.insert("f64", x.to_dtype(DType::F64).unwrap()).unwrap();
        td.insert_dict("rotary", TensorDict::unbatched()).unwrap();
        td.insert(
            ("rotary", "cos"),
            Tensor::ones((1, 4, 2), DType::F32, &d).unwrap(),
        )
        .unwrap();
        td.insert(("rotary", "scale"), Tensor::new(3.5f32, &d).unwrap())
            .unwrap();
        td.insert_dict("empty", TensorDict::new(vec![2, 7]))
            .unwrap();
        td.insert("zero_size", Tensor::zeros((2, 0), DType::F32, &d).unwrap())
            .unwrap();
        td.insert_dict(("cache", "nested_empty"), TensorDict::unbatched())
            .unwrap();
        td
    }

    fn key_strings(td: &TensorDict) -> Vec<String> {
        td.keys(false).iter().map(Key::to_string).collect()
    }

    fn assert_same(a: &TensorDict, b: &TensorDict) {
        assert!(a.allclose(b, 0.0, 0.0).unwrap(), "{a}\nvs\n{b}");
        assert_eq!(key_strings(a), key_strings(b), "order");
        for (key, t) in a.leaves() {
            assert_eq!(t.dtype(), b.tensor(&key).unwrap().dtype(), "dtype of {key}");
        }
        let mut da = Vec::new();
        a.collect_dicts(&mut Vec::new(), &mut da);
        for (path, d) in da {
            assert_eq!(
                d.batch_size(),
                b.dict_at(&path).unwrap().batch_size(),
                "batch of {path:?}"
            );
        }
    }

    #[test]
    fn save_load_round_trip_mixed_dtypes_and_nesting() {
        let td = sample();
        let dir = std::env::temp_dir().join(format!("tdhook-td-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("td.safetensors");
        td.save(&path).unwrap();
        let back = TensorDict::load(&path, &dev()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_same(&td, &back);
        assert_eq!(back.batch_size(), &[2]);
        assert_eq!(
            back.get_dict("rotary").unwrap().batch_size(),
            &[] as &[usize]
        );
        assert_eq!(back.get_dict("empty").unwrap().batch_size(), &[2, 7]);
        assert!(back.get_dict("empty").unwrap().is_empty());
        assert!(back.get_dict(("cache", "nested_empty")).is_some());
        assert_eq!(
            back.tensor("pos").unwrap().to_vec2::<i64>().unwrap()[1][0],
            1 << 40
        );
        assert_eq!(
            back.tensor(("rotary", "scale"))
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            3.5
        );

        // The tensor names in the file are the `/`-joined keys.
        let bytes = td.to_bytes().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort_unstable();
        assert!(names.contains(&"cache/transformer.h.0.mlp"), "{names:?}");
        assert_eq!(
            st.tensor("cache/transformer.h.1.attn").unwrap().dtype(),
            StDtype::BF16
        );
        assert_eq!(names.len(), 10);

        // Bytes round trip too, and a changed value is detected.
        let back = TensorDict::from_bytes(&bytes, &dev()).unwrap();
        assert_same(&td, &back);
        let mut changed = back.clone();
        changed
            .insert("x", Tensor::zeros((2, 3), DType::F32, &dev()).unwrap())
            .unwrap();
        assert!(!changed.allclose(&td, 0.0, 0.0).unwrap());
    }

    #[test]
    fn half_precision_bits_round_trip_exactly() {
        let d = dev();
        // Normal, subnormal, zero, negative zero, max and infinities.
        let values = [
            1.0f32,
            -2.5,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
            -3.0517578e-5,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.333,
        ];
        let base = Tensor::new(&values, &d).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let t = base.to_dtype(dtype).unwrap();
            let mut td = TensorDict::unbatched();
            td.insert("h", t.clone()).unwrap();
            let back = TensorDict::from_bytes(&td.to_bytes().unwrap(), &d).unwrap();
            let got = back.tensor("h").unwrap();
            assert_eq!(got.dtype(), dtype);
            let a = t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            let b = got.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            let a_bits: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
            let b_bits: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
            assert_eq!(a_bits, b_bits, "{dtype:?}");
        }
        let nan = Tensor::new(&[f32::NAN], &d)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let mut td = TensorDict::unbatched();
        td.insert("n", nan).unwrap();
        let back = TensorDict::from_bytes(&td.to_bytes().unwrap(), &d).unwrap();
        let v = back
            .tensor("n")
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(v[0].is_nan());
    }

    #[test]
    fn plain_safetensors_file_loads_unbatched_with_nested_keys() {
        let raw = |vals: &[f32], shape: &[usize]| RawTensor {
            dtype: StDtype::F32,
            shape: shape.to_vec(),
            data: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let a = raw(&[1.0, 2.0, 3.0], &[3]);
        let b = raw(&[4.0, 5.0], &[2, 1]);
        let c = raw(&[6.0], &[]);
        let u16s = RawTensor {
            dtype: StDtype::U16,
            shape: vec![2],
            data: [7u16, 65535].iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let items = [
            ("model.embed.weight", &a),
            ("cache/transformer.h.0.mlp", &b),
            ("cache/deeper/x", &c),
            ("counts", &u16s),
        ];
        let bytes = safetensors::serialize(items, None).unwrap();
        let td = TensorDict::from_bytes(&bytes, &dev()).unwrap();
        assert_eq!(td.batch_size(), &[] as &[usize]);
        assert_eq!(
            key_strings(&td),
            [
                "cache",
                "cache/deeper",
                "cache/deeper/x",
                "cache/transformer.h.0.mlp",
                "counts",
                "model.embed.weight"
            ]
        );
        assert_eq!(td.get_dict(("cache", "deeper")).unwrap().batch_dims(), 0);
        assert_eq!(
            td.tensor("model.embed.weight")
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(
            td.tensor(("cache", "transformer.h.0.mlp")).unwrap().dims(),
            &[2, 1]
        );
        assert_eq!(
            td.tensor("counts").unwrap().to_vec1::<u32>().unwrap(),
            [7, 65535]
        );

        // A name with an empty segment is an invalid key.
        let bad = safetensors::serialize([("a//b", &c)], None).unwrap();
        let err = TensorDict::from_bytes(&bad, &dev()).unwrap_err();
        assert!(matches!(err, TensorDictError::InvalidKey { .. }), "{err}");
    }

    #[test]
    fn io_errors_are_descriptive() {
        let err = TensorDict::load("/nonexistent/dir/td.safetensors", &dev()).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/td.safetensors"),
            "{err}"
        );
        let err = TensorDict::from_bytes(b"not a safetensors file", &dev()).unwrap_err();
        assert!(matches!(err, TensorDictError::Safetensors(_)), "{err}");

        let mut td = TensorDict::unbatched();
        td.insert("x", Tensor::zeros(2, DType::F32, &dev()).unwrap())
            .unwrap();
        let (tensors, mut meta) = td.to_raw().unwrap();
        meta.insert(
            BATCH_SIZES_METADATA_KEY.to_string(),
            "{not json".to_string(),
        );
        let bytes =
            safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
                .unwrap();
        let err = TensorDict::from_bytes(&bytes, &dev())
            .unwrap_err()
            .to_string();
        assert!(err.contains(BATCH_SIZES_METADATA_KEY), "{err}");

        let f8 = Tensor::zeros(2, DType::F32, &dev())
            .unwrap()
            .to_dtype(DType::F8E4M3);
        if let Ok(f8) = f8 {
            let mut td = TensorDict::unbatched();
            td.insert("q", f8).unwrap();
            let err = td.to_bytes().unwrap_err();
            assert!(
                matches!(err, TensorDictError::UnsupportedDtype { ref key, .. } if key == "q"),
                "{err}"
            );
        }
    }
}
