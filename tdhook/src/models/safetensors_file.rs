//! Reading a `.safetensors` file tensor by tensor.
//!
//! `candle_core::safetensors::load` reads the whole file into memory and then copies every
//! tensor out of it: for a moment the process holds the model twice (BENCHMARKS.md,
//! "Memory"). Here each tensor's bytes are read from the file straight into
//! the buffer the tensor keeps, so loading peaks at the model's size.

use crate::{Error, Result};
use candle_core::{Device, Tensor, WithDType};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// One entry of the header.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// Headers larger than this are refused (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Load {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every tensor of the safetensors file at `path`, by name, on `device`, in the file's dtypes.
///
/// Errors name the file and what is wrong (truncated data, an unknown dtype, offsets that do
/// not match the shape).
pub fn load_safetensors(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    if cfg!(target_endian = "big") {
        // The file is little-endian; candle's loader converts.
        return candle_core::safetensors::load(path, device).map_err(|e| bad(path, e));
    }
    let mut file = File::open(path).map_err(|e| bad(path, e))?;
    let file_len = file.metadata().map_err(|e| bad(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|e| {
        bad(
            path,
            format!("not a safetensors file (no header length): {e}"),
        )
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(bad(
            path,
            format!("header length {header_len} does not fit the file ({file_len} bytes)"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| bad(path, e))?;
    let mut entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(path, format!("header is not JSON: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + header_len;
    // Read in file order: sequential I/O.
    let mut parsed: Vec<(String, Entry)> = entries
        .into_iter()
        .map(|(name, v)| {
            let e: Entry = serde_json::from_value(v)
                .map_err(|e| bad(path, format!("tensor `{name}`: bad header entry: {e}")))?;
            Ok((name, e))
        })
        .collect::<Result<_>>()?;
    parsed.sort_by_key(|(_, e)| e.data_offsets.0);
    let mut out = HashMap::with_capacity(parsed.len());
    for (name, e) in parsed {
        let t = read_tensor(&mut file, path, &name, &e, data_start, file_len)?;
        let t = if device.is_cpu() {
            t
        } else {
            t.to_device(device)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

fn read_tensor(
    file: &mut File,
    path: &Path,
    name: &str,
    e: &Entry,
    data_start: u64,
    file_len: u64,
) -> Result<Tensor> {
    let (start, end) = e.data_offsets;
    let n: usize = e.shape.iter().product();
    let fits = end >= start && data_start + end as u64 <= file_len;
    if !fits {
        return Err(bad(
            path,
            format!("tensor `{name}`: bytes {start}..{end} lie outside the file"),
        ));
    }
    file.seek(SeekFrom::Start(data_start + start as u64))
        .map_err(|e| bad(path, e))?;
    let bytes = end - start;
    macro_rules! read_as {
        ($t:ty) => {{
            let size = std::mem::size_of::<$t>();
            if bytes != n * size {
                return Err(bad(path, format!(
                    "tensor `{name}`: shape {:?} of {} needs {} bytes, the header gives {bytes}",
                    e.shape, e.dtype, n * size
                )));
            }
            let mut v: Vec<$t> = vec![<$t as WithDType>::from_f64(0.0); n];
            // SAFETY: `v` owns n·size initialised bytes; every bit pattern is a valid value of
            // these plain numeric types, and the file is little-endian like this target.
            let buf = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), bytes) };
            file.read_exact(buf).map_err(|err| bad(path, format!("tensor `{name}`: {err}")))?;
            Tensor::from_vec(v, e.shape.as_slice(), &Device::Cpu)?
        }};
    }
    let t = match e.dtype.as_str() {
        "F32" => read_as!(f32),
        "F16" => read_as!(half::f16),
        "BF16" => read_as!(half::bf16),
        "F64" => read_as!(f64),
        "U8" => read_as!(u8),
        "U32" => read_as!(u32),
        "I64" => read_as!(i64),
        other => {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}`: dtype {other} is not supported (F32, F16, BF16, F64, U8, U32, I64)"
                ),
            ));
        }
    };
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn reads_what_candle_writes_in_every_dtype_and_rejects_truncation() -> Result<()> {
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 24.0, &dev)?.reshape((2, 3, 4))?;
        let mut tensors = HashMap::new();
        for dt in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::U8,
            DType::U32,
            DType::I64,
        ] {
            tensors.insert(format!("t.{dt:?}"), base.to_dtype(dt)?);
        }
        tensors.insert(
            "empty".to_string(),
            Tensor::zeros((0, 3), DType::F32, &dev)?,
        );
        let dir = std::env::temp_dir().join(format!("tdhook-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| bad(&dir, e))?;
        let file = dir.join("m.safetensors");
        candle_core::safetensors::save(&tensors, &file)?;
        let ours = load_safetensors(&file, &dev)?;
        let candle = candle_core::safetensors::load(&file, &dev)?;
        assert_eq!(ours.len(), candle.len());
        for (k, v) in &candle {
            let o = &ours[k];
            assert_eq!((o.dtype(), o.dims()), (v.dtype(), v.dims()), "{k}");
            let (a, b) = (o.to_dtype(DType::F64)?, v.to_dtype(DType::F64)?);
            if v.elem_count() > 0 {
                assert_eq!((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?, 0.0, "{k}");
            }
        }
        // Truncate the file: the error names it and the tensor.
        let bytes = std::fs::read(&file).map_err(|e| bad(&file, e))?;
        std::fs::write(&file, &bytes[..bytes.len() - 10]).map_err(|e| bad(&file, e))?;
        let err = load_safetensors(&file, &dev).unwrap_err().to_string();
        assert!(
            err.contains("m.safetensors") && err.contains("tensor `"),
            "{err}"
        );
        std::fs::write(&file, b"\x01\x00").map_err(|e| bad(&file, e))?;
        let err = load_safetensors(&file, &dev).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
