//! Materialised values of any band dtype.

use super::{DType, Element};
use ndarray::{ArrayD, IxDyn, SliceInfoElem};
use std::ops::Range;

/// An n-d array of one of the band element types.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// uint8
    U8(ArrayD<u8>),
    /// uint16
    U16(ArrayD<u16>),
    /// int16
    I16(ArrayD<i16>),
    /// uint32
    U32(ArrayD<u32>),
    /// int32
    I32(ArrayD<i32>),
    /// float32
    F32(ArrayD<f32>),
    /// float64
    F64(ArrayD<f64>),
}

/// Apply `$body` to the inner array bound as `$a`.
#[macro_export]
macro_rules! on_values {
    ($v:expr, $a:ident => $body:expr) => {
        match $v {
            $crate::store::Values::U8($a) => $body,
            $crate::store::Values::U16($a) => $body,
            $crate::store::Values::I16($a) => $body,
            $crate::store::Values::U32($a) => $body,
            $crate::store::Values::I32($a) => $body,
            $crate::store::Values::F32($a) => $body,
            $crate::store::Values::F64($a) => $body,
        }
    };
}

macro_rules! from_arr {
    ($t:ty, $v:ident) => {
        impl From<ArrayD<$t>> for Values {
            fn from(a: ArrayD<$t>) -> Values {
                Values::$v(a)
            }
        }
    };
}
from_arr!(u8, U8);
from_arr!(u16, U16);
from_arr!(i16, I16);
from_arr!(u32, U32);
from_arr!(i32, I32);
from_arr!(f32, F32);
from_arr!(f64, F64);

/// Typed access to [`Values`].
pub trait ValuesOf: Element {
    /// The inner array if the variant matches.
    fn get(v: &Values) -> Option<&ArrayD<Self>>;
    /// Wrap an array of this element type.
    fn wrap(a: ArrayD<Self>) -> Values;
}
macro_rules! values_of {
    ($t:ty, $v:ident) => {
        impl ValuesOf for $t {
            fn wrap(a: ArrayD<$t>) -> Values {
                Values::$v(a)
            }
            fn get(v: &Values) -> Option<&ArrayD<$t>> {
                match v {
                    Values::$v(a) => Some(a),
                    _ => None,
                }
            }
        }
    };
}
values_of!(u8, U8);
values_of!(u16, U16);
values_of!(i16, I16);
values_of!(u32, U32);
values_of!(i32, I32);
values_of!(f32, F32);
values_of!(f64, F64);

fn slice_info(r: &[Range<u64>]) -> Vec<SliceInfoElem> {
    r.iter()
        .map(|r| SliceInfoElem::Slice {
            start: r.start as isize,
            end: Some(r.end as isize),
            step: 1,
        })
        .collect()
}

impl Values {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Values::U8(_) => DType::U8,
            Values::U16(_) => DType::U16,
            Values::I16(_) => DType::I16,
            Values::U32(_) => DType::U32,
            Values::I32(_) => DType::I32,
            Values::F32(_) => DType::F32,
            Values::F64(_) => DType::F64,
        }
    }

    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        on_values!(self, a => a.shape().to_vec())
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        on_values!(self, a => a.len()) * self.dtype().size()
    }

    /// A zero-filled array of `dtype` (filled with `fill`).
    pub fn filled(dtype: DType, shape: &[usize], fill: f64) -> Values {
        crate::with_dtype!(dtype, T => Values::from(ArrayD::<T>::from_elem(IxDyn(shape), T::from_f64(fill))))
    }

    /// Copy of a sub-window.
    pub fn window(&self, r: &[Range<u64>]) -> Values {
        let info = slice_info(r);
        on_values!(self, a => Values::from(a.slice(info.as_slice()).to_owned()))
    }

    /// Copy `src` into the window `r` of self (same dtype).
    pub fn assign(&mut self, r: &[Range<u64>], src: &Values) {
        let info = slice_info(r);
        match (self, src) {
            (Values::U8(d), Values::U8(s)) => d.slice_mut(info.as_slice()).assign(s),
            (Values::U16(d), Values::U16(s)) => d.slice_mut(info.as_slice()).assign(s),
            (Values::I16(d), Values::I16(s)) => d.slice_mut(info.as_slice()).assign(s),
            (Values::U32(d), Values::U32(s)) => d.slice_mut(info.as_slice()).assign(s),
            (Values::I32(d), Values::I32(s)) => d.slice_mut(info.as_slice()).assign(s),
            (Values::F32(d), Values::F32(s)) => d.slice_mut(info.as_slice()).assign(s),
            (Values::F64(d), Values::F64(s)) => d.slice_mut(info.as_slice()).assign(s),
            _ => {}
        }
    }

    /// A sub-window as float (`F`) with missing values as NaN, without copying the window
    /// first.
    pub fn window_to_real<F: crate::store::Real>(
        &self,
        r: &[Range<u64>],
        nodata: Option<f64>,
    ) -> ArrayD<F> {
        fn conv<T: Element, F: crate::store::Real>(
            a: &ArrayD<T>,
            info: &[SliceInfoElem],
            nodata: Option<f64>,
        ) -> ArrayD<F> {
            let nd = nodata.filter(|v| !v.is_nan()).map(T::from_f64);
            a.slice(info)
                .mapv(|v| if v.is_missing(nd) { F::nan() } else { F::of(v) })
        }
        let info = slice_info(r);
        on_values!(self, a => conv(a, info.as_slice(), nodata))
    }

    /// The f32 array, if this holds float32.
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Values::F32(a) => Some(a),
            _ => None,
        }
    }

    /// Typed access.
    pub fn as_array<T: ValuesOf>(&self) -> Option<&ArrayD<T>> {
        T::get(self)
    }

    /// Equality treating NaN == NaN (as xarray's `.equals`).
    pub fn equals(&self, other: &Values) -> bool {
        match (self, other) {
            (Values::F32(a), Values::F32(b)) => {
                a.shape() == b.shape()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
            }
            (Values::F64(a), Values::F64(b)) => {
                a.shape() == b.shape()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
            }
            _ => self == other,
        }
    }
}
