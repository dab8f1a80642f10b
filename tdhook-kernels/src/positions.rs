//! Which `[batch, position]` rows of a `[B, T, D]` activation a kernel touches, and which
//! steering vector and coefficient each batch row uses.

use std::ops::Range;

use candle_core::{DType, Result, Tensor};

use crate::error::arg;

/// The positions (second dim of a `[B, T, D]` activation) a kernel applies to.
///
/// ```
/// use tdhook_kernels::Positions;
/// let all = Positions::All;
/// let tail = Positions::Range(5..8);                 // positions 5, 6, 7 of every row
/// let some = Positions::Mask(vec![true, false, true]); // T = 3, shared by every row
/// # let _ = (all, tail, some);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Positions {
    /// Every position.
    #[default]
    All,
    /// Positions `start..end` of every batch row (`end <= T`).
    Range(Range<usize>),
    /// A mask of length `T` (shared by every batch row) or `B * T` (row-major, one row of `T`
    /// per batch row: per-request positions).
    Mask(Vec<bool>),
}

impl Positions {
    /// The last `n` positions of a sequence of length `t` (all of them when `n >= t`).
    ///
    /// ```
    /// use tdhook_kernels::Positions;
    /// assert_eq!(Positions::last(1, 10), Positions::Range(9..10));
    /// ```
    pub fn last(n: usize, t: usize) -> Self {
        Positions::Range(t.saturating_sub(n)..t)
    }

    /// A mask from a tensor of shape `[T]` or `[B, T]` (any dtype; non-zero = selected).
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use tdhook_kernels::Positions;
    /// let m = Tensor::new(&[[1u8, 0], [0, 1]], &Device::Cpu)?;
    /// assert_eq!(Positions::from_mask_tensor(&m)?, Positions::Mask(vec![true, false, false, true]));
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn from_mask_tensor(mask: &Tensor) -> Result<Self> {
        if mask.rank() == 0 || mask.rank() > 2 {
            return Err(arg(
                "Positions::from_mask_tensor",
                format!("mask must have shape [T] or [B, T], got {:?}", mask.dims()),
            ));
        }
        let v = mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Positions::Mask(v.into_iter().map(|x| x != 0.0).collect()))
    }

    /// Checks the positions against a `[B, T, _]` activation and returns the plan kernels use.
    pub(crate) fn plan(&self, op: &'static str, b: usize, t: usize) -> Result<PosPlan<'_>> {
        Ok(match self {
            Positions::All => PosPlan::Range(0, t),
            Positions::Range(r) => {
                if r.start > r.end || r.end > t {
                    return Err(arg(
                        op,
                        format!("position range {r:?} does not fit T = {t}"),
                    ));
                }
                PosPlan::Range(r.start, r.end)
            }
            Positions::Mask(m) if m.len() == t => PosPlan::Shared(m),
            Positions::Mask(m) if m.len() == b * t => PosPlan::PerRow(m),
            Positions::Mask(m) => {
                return Err(arg(
                    op,
                    format!(
                        "position mask has length {}, expected T = {t} or B * T = {}",
                        m.len(),
                        b * t
                    ),
                ));
            }
        })
    }
}

/// Normalised [`Positions`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum PosPlan<'a> {
    Range(usize, usize),
    Shared(&'a [bool]),
    PerRow(&'a [bool]),
}

impl PosPlan<'_> {
    #[inline(always)]
    pub fn active(&self, b: usize, t: usize, t_len: usize) -> bool {
        match *self {
            PosPlan::Range(s, e) => t >= s && t < e,
            PosPlan::Shared(m) => m[t],
            PosPlan::PerRow(m) => m[b * t_len + t],
        }
    }

    /// `(kind, start, end)` for the CUDA kernels: kind 0 = range, 1 = shared mask,
    /// 2 = per-row mask.
    #[allow(dead_code)]
    pub fn code(&self) -> (i32, usize, usize) {
        match *self {
            PosPlan::Range(s, e) => (0, s, e),
            PosPlan::Shared(_) => (1, 0, 0),
            PosPlan::PerRow(_) => (2, 0, 0),
        }
    }

    #[allow(dead_code)]
    pub fn mask(&self) -> Option<&[bool]> {
        match *self {
            PosPlan::Range(..) => None,
            PosPlan::Shared(m) | PosPlan::PerRow(m) => Some(m),
        }
    }
}

/// Which steering vector (a row of a `[V, D]` table) and coefficient each batch row uses.
///
/// ```
/// use tdhook_kernels::Rows;
/// // batch row 0 steers with vector 2 at 4.0, row 1 is not steered, row 2 uses vector 0 at -1.0
/// let rows = Rows::per_row([Some((2, 4.0)), None, Some((0, -1.0))]);
/// # let _ = rows;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Rows {
    /// Every batch row uses vector 0 with coefficient 1 (times the call's `alpha`).
    #[default]
    All,
    /// Per-request steering: batch row `b` uses vector `index[b]` (`None`: not steered) with
    /// coefficient `coef[b]` (times the call's `alpha`). Both have length `B`.
    PerRow {
        /// Vector per batch row, `None` to leave the row alone.
        index: Vec<Option<usize>>,
        /// Coefficient per batch row.
        coef: Vec<f32>,
    },
}

impl Rows {
    /// Builds [`Rows::PerRow`] from `(vector index, coefficient)` per batch row.
    pub fn per_row(rows: impl IntoIterator<Item = Option<(usize, f32)>>) -> Self {
        let (index, coef) = rows
            .into_iter()
            .map(|r| match r {
                Some((i, c)) => (Some(i), c),
                None => (None, 0.0),
            })
            .unzip();
        Rows::PerRow { index, coef }
    }

    /// `(vector index or u32::MAX, alpha · coefficient)` per batch row.
    pub(crate) fn table(
        &self,
        op: &'static str,
        b: usize,
        n_vecs: usize,
        alpha: f64,
    ) -> Result<Vec<(u32, f32)>> {
        match self {
            Rows::All => {
                if n_vecs == 0 {
                    return Err(arg(op, "no steering vector given"));
                }
                Ok(vec![(0, alpha as f32); b])
            }
            Rows::PerRow { index, coef } => {
                if index.len() != b || coef.len() != b {
                    return Err(arg(
                        op,
                        format!(
                            "per-row table has {} indices and {} coefficients, expected B = {b}",
                            index.len(),
                            coef.len()
                        ),
                    ));
                }
                index
                    .iter()
                    .zip(coef)
                    .map(|(i, c)| match *i {
                        None => Ok((NO_VEC, 0.0)),
                        Some(i) if i < n_vecs => Ok((i as u32, (alpha * *c as f64) as f32)),
                        Some(i) => Err(arg(
                            op,
                            format!("vector index {i} out of range (V = {n_vecs})"),
                        )),
                    })
                    .collect()
            }
        }
    }
}

/// "No vector" in a row table.
pub(crate) const NO_VEC: u32 = u32::MAX;
