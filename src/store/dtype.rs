//! Element types a cube band can have, and their names in Zarr v3 and GDAL.

use std::fmt;

/// The data type of a band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// unsigned 8-bit
    U8,
    /// unsigned 16-bit (the geomedian's reflectance bands)
    U16,
    /// signed 16-bit
    I16,
    /// unsigned 32-bit
    U32,
    /// signed 32-bit
    I32,
    /// 32-bit float
    F32,
    /// 64-bit float
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::F64 => 8,
        }
    }

    /// The Zarr v3 data type name.
    pub fn zarr_name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::U32 => "uint32",
            DType::I32 => "int32",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// Parse a Zarr v3 data type name.
    pub fn from_zarr_name(s: &str) -> Option<DType> {
        Some(match s {
            "uint8" => DType::U8,
            "uint16" => DType::U16,
            "int16" => DType::I16,
            "uint32" => DType::U32,
            "int32" => DType::I32,
            "float32" => DType::F32,
            "float64" => DType::F64,
            _ => return None,
        })
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// The zarrs data type.
    pub fn to_zarrs(self) -> zarrs::array::DataType {
        use zarrs::array::data_type as dt;
        match self {
            DType::U8 => dt::uint8(),
            DType::U16 => dt::uint16(),
            DType::I16 => dt::int16(),
            DType::U32 => dt::uint32(),
            DType::I32 => dt::int32(),
            DType::F32 => dt::float32(),
            DType::F64 => dt::float64(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.zarr_name())
    }
}

/// Call `$body` with the Rust element type `$t` bound to the given [`DType`].
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::store::DType::U8 => {
                type $t = u8;
                $body
            }
            $crate::store::DType::U16 => {
                type $t = u16;
                $body
            }
            $crate::store::DType::I16 => {
                type $t = i16;
                $body
            }
            $crate::store::DType::U32 => {
                type $t = u32;
                $body
            }
            $crate::store::DType::I32 => {
                type $t = i32;
                $body
            }
            $crate::store::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::store::DType::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// Rust element types of bands: conversion to f32 for computation and from f64 nodata values.
pub trait Element:
    Copy
    + Send
    + Sync
    + PartialEq
    + Default
    + 'static
    + zarrs::array::ElementOwned
    + gdal::raster::GdalType
{
    /// The [`DType`] of this element type.
    const DTYPE: DType;
    /// Convert to f32 for arithmetic.
    fn to_f32(self) -> f32;
    /// Convert to f64 for arithmetic in double precision.
    fn to_f64(self) -> f64;
    /// Convert a nodata value given as f64 (GDAL's representation).
    fn from_f64(v: f64) -> Self;
    /// Whether this value is a "missing" value: equal to `nodata`, or NaN.
    fn is_missing(self, nodata: Option<Self>) -> bool;
}

macro_rules! int_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            #[inline]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn is_missing(self, nodata: Option<Self>) -> bool {
                nodata == Some(self)
            }
        }
    };
}
int_element!(u8, DType::U8);
int_element!(u16, DType::U16);
int_element!(i16, DType::I16);
int_element!(u32, DType::U32);
int_element!(i32, DType::I32);

macro_rules! float_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            #[inline]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn is_missing(self, nodata: Option<Self>) -> bool {
                self.is_nan() || nodata == Some(self)
            }
        }
    };
}
float_element!(f32, DType::F32);
float_element!(f64, DType::F64);

/// The floating-point types computations run in: float32 by default, float64 when a graph
/// asks for it (`astype(float64)`, `float64(x)` in an expression).
pub trait Real: Element + num_traits::Float + Default + std::fmt::Debug {
    /// Convert a stored value.
    fn of<T: Element>(v: T) -> Self;
    /// Convert an f64 (constants, accumulators).
    fn of_f64(v: f64) -> Self;
}

impl Real for f32 {
    #[inline]
    fn of<T: Element>(v: T) -> f32 {
        v.to_f32()
    }
    #[inline]
    fn of_f64(v: f64) -> f32 {
        v as f32
    }
}

impl Real for f64 {
    #[inline]
    fn of<T: Element>(v: T) -> f64 {
        v.to_f64()
    }
    #[inline]
    fn of_f64(v: f64) -> f64 {
        v
    }
}
