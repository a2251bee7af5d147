//! EPSG:6933 (WGS 84 / NSIDC EASE-Grid 2.0 Global) ↔ lon/lat without GDAL: the CRS of Digital
//! Earth Africa's products is an ellipsoidal Lambert cylindrical equal-area projection
//! (EPSG method 9835, standard parallel 30°N, central meridian 0, no false origin) on WGS 84,
//! a few lines of closed-form maths. Doing it here keeps `info` and lon/lat queries from
//! loading GDAL and PROJ (about 40 ms of loader work per command); other CRSs go to GDAL.
//!
//! Formulas: EPSG Guidance Note 7-2, §3.2.6.2 (= Snyder, Map Projections, eq. 3-12, 10-15 to
//! 10-20). The inverse takes the geodetic latitude from the authalic one by the same e⁶ series
//! PROJ 9.1 (Debian 12) uses: its truncation (~2e-10 rad, ~1.5 mm) is PROJ's too, so the two
//! agree to rounding and printed bounds equal gdalinfo's (tests below, GDAL as the reference).

use std::f64::consts::FRAC_PI_2;

/// WGS 84 semi-major axis (m).
const A: f64 = 6_378_137.0;
/// WGS 84 flattening.
const F: f64 = 1.0 / 298.257_223_563;
/// Standard parallel of EPSG:6933 (degrees).
const LAT_TS: f64 = 30.0;

/// The EPSG code this module implements.
pub const EPSG: u32 = 6933;

fn e2() -> f64 {
    F * (2.0 - F)
}

/// Snyder's q(φ) for sin φ.
fn q(sin_phi: f64) -> f64 {
    let e2 = e2();
    let e = e2.sqrt();
    let es = e * sin_phi;
    (1.0 - e2) * (sin_phi / (1.0 - es * es) - (1.0 / (2.0 * e)) * ((1.0 - es) / (1.0 + es)).ln())
}

/// Scale factor on the central meridian at the equator: cos φ₁ / √(1 − e² sin² φ₁).
fn k0() -> f64 {
    let p = LAT_TS.to_radians();
    p.cos() / (1.0 - e2() * p.sin() * p.sin()).sqrt()
}

/// The largest |x| and |y| of the projection's domain (lon ±180°, lat ±90°).
pub fn extent() -> (f64, f64) {
    (A * k0() * std::f64::consts::PI, A * q(1.0) / (2.0 * k0()))
}

/// lon/lat in degrees → EPSG:6933 metres; `None` outside lon [-180, 180], lat [-90, 90]
/// (PROJ wraps or refuses those: they are left to GDAL).
pub fn forward(lon: f64, lat: f64) -> Option<(f64, f64)> {
    if !(lon.abs() <= 180.0 && lat.abs() <= 90.0) {
        return None;
    }
    let k0 = k0();
    Some((
        A * k0 * lon.to_radians(),
        A * q(lat.to_radians().sin()) / (2.0 * k0),
    ))
}

/// EPSG:6933 metres → lon/lat in degrees; `None` outside the projection's extent.
pub fn inverse(x: f64, y: f64) -> Option<(f64, f64)> {
    let (xmax, ymax) = extent();
    if !(x.abs() <= xmax && y.abs() <= ymax) {
        return None;
    }
    let k0 = k0();
    let e2 = e2();
    let qp = q(1.0);
    let target = (2.0 * y * k0 / A).clamp(-qp, qp);
    // Authalic latitude, then the series for the geodetic latitude.
    let beta = (target / qp).clamp(-1.0, 1.0).asin();
    let (e4, e6) = (e2 * e2, e2 * e2 * e2);
    let phi = beta
        + (e2 / 3.0 + 31.0 * e4 / 180.0 + 517.0 * e6 / 5040.0) * (2.0 * beta).sin()
        + (23.0 * e4 / 360.0 + 251.0 * e6 / 3780.0) * (4.0 * beta).sin()
        + (761.0 * e6 / 45360.0) * (6.0 * beta).sin();
    let phi = phi.clamp(-FRAC_PI_2, FRAC_PI_2);
    Some(((x / (A * k0)).to_degrees(), phi.to_degrees()))
}

/// The bounds `[minx, miny, maxx, maxy]` of a lon/lat box's image, or `None` if any corner is
/// outside the domain. x depends on lon only and y on lat only, both increasing, so the
/// image of a box is the box of its corners' images (what densified edges give too).
pub fn forward_bounds(b: [f64; 4]) -> Option<[f64; 4]> {
    let (x0, y0) = forward(b[0], b[1])?;
    let (x1, y1) = forward(b[2], b[3])?;
    Some([x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)])
}

/// The lon/lat bounds of a box in EPSG:6933 metres, or `None` outside the extent or at a
/// pole (the pole is a line here: GDAL widens such bounds to every longitude; it decides).
pub fn inverse_bounds(b: [f64; 4]) -> Option<[f64; 4]> {
    let (_, ymax) = extent();
    if b[1] <= -ymax * (1.0 - 1e-12) || b[3] >= ymax * (1.0 - 1e-12) {
        return None;
    }
    let (l0, p0) = inverse(b[0], b[1])?;
    let (l1, p1) = inverse(b[2], b[3])?;
    Some([l0.min(l1), p0.min(p1), l0.max(l1), p0.max(p1)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
    use proptest::prelude::*;

    thread_local! {
        static PAIR: (CoordTransform, CoordTransform) = gdal_pair_new();
    }

    /// GDAL/PROJ's transformation between EPSG:4326 (lon, lat) and EPSG:6933, both ways
    /// (made once per test thread).
    fn with_gdal<R>(f: impl FnOnce(&CoordTransform, &CoordTransform) -> R) -> R {
        PAIR.with(|(a, b)| f(a, b))
    }

    fn gdal_pair_new() -> (CoordTransform, CoordTransform) {
        let sr = |code| {
            let mut s = SpatialRef::from_epsg(code).unwrap();
            s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
            s
        };
        let (ll, ease) = (sr(4326), sr(6933));
        (
            CoordTransform::new(&ll, &ease).unwrap(),
            CoordTransform::new(&ease, &ll).unwrap(),
        )
    }

    fn gdal_point(ct: &CoordTransform, x: f64, y: f64) -> (f64, f64) {
        let (mut xs, mut ys, mut zs) = ([x], [y], [0.0]);
        ct.transform_coords(&mut xs, &mut ys, &mut zs).unwrap();
        (xs[0], ys[0])
    }

    #[test]
    fn known_points_match_gdaltransform() {
        // `echo "24 -20" | gdaltransform -s_srs EPSG:4326 -t_srs EPSG:6933 -output_xy`
        let (x, y) = forward(24.0, -20.0).unwrap();
        assert!((x - 2315670.72602152).abs() < 1e-6, "{x}");
        assert!((y - -2501271.8625388).abs() < 1e-6, "{y}");
        let (x, y) = forward(180.0, 86.0).unwrap();
        assert!((x - 17367530.4451614).abs() < 1e-6 && (y - 7324184.56362408).abs() < 1e-6);
        assert_eq!(forward(180.5, 0.0), None);
        assert_eq!(forward(0.0, f64::NAN), None);
        assert_eq!(inverse(extent().0 * 1.01, 0.0), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn forward_and_inverse_match_proj(lon in -180.0f64..=180.0, lat in -90.0f64..=90.0) {
            let (x, y) = forward(lon, lat).unwrap();
            let (gx, gy) = with_gdal(|fwd, _| gdal_point(fwd, lon, lat));
            prop_assert!((x - gx).abs() < 1e-6 && (y - gy).abs() < 1e-6,
                "forward({lon}, {lat}) = ({x}, {y}), PROJ ({gx}, {gy})");
            // The inverse of PROJ's point, against PROJ's inverse of it.
            let (l, p) = inverse(gx, gy).unwrap();
            let (gl, gp) = with_gdal(|_, inv| gdal_point(inv, gx, gy));
            prop_assert!((l - gl).abs() < 1e-6 && (p - gp).abs() < 1e-6,
                "inverse({gx}, {gy}) = ({l}, {p}), PROJ ({gl}, {gp})");
        }

        #[test]
        fn inverse_matches_proj_over_the_extent(fx in -1.0f64..=1.0, fy in -1.0f64..=1.0) {
            let (xmax, ymax) = extent();
            let (x, y) = (fx * xmax, fy * ymax);
            let (l, p) = inverse(x, y).unwrap();
            let (gl, gp) = with_gdal(|_, inv| gdal_point(inv, x, y));
            prop_assert!((l - gl).abs() < 1e-6 && (p - gp).abs() < 1e-6,
                "inverse({x}, {y}) = ({l}, {p}), PROJ ({gl}, {gp})");
        }

        #[test]
        fn bounds_match_gdal_transform_bounds(
            lon in -180.0f64..180.0, lat in -89.0f64..89.0, w in 0.0f64..40.0, h in 0.0f64..40.0,
        ) {
            let b = [lon, lat, (lon + w).min(180.0), (lat + h).min(90.0)];
            let got = forward_bounds(b).unwrap();
            let want = with_gdal(|fwd, _| fwd.transform_bounds(&b, 21).unwrap());
            for i in 0..4 {
                prop_assert!((got[i] - want[i]).abs() < 1e-6, "{b:?}: {got:?} vs GDAL {want:?}");
            }
            if got[3] >= extent().1 * (1.0 - 1e-12) {
                // Touches the north pole: left to GDAL.
                prop_assert!(inverse_bounds(got).is_none());
                return Ok(());
            }
            let back = inverse_bounds(got).unwrap();
            let want = with_gdal(|_, inv| inv.transform_bounds(&got, 21).unwrap());
            for i in 0..4 {
                prop_assert!((back[i] - want[i]).abs() < 1e-6, "{got:?}: {back:?} vs GDAL {want:?}");
            }
        }
    }
}
