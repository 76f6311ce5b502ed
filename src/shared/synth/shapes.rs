//! Object appearance: what a person or a car looks like at a point of its
//! drawing frame, in visible light (albedo, emitted light) and in thermal
//! (temperature). Coordinates are normalised: `u` across the frame's width
//! and `v` down its height, both in `[0, 1]`.

use super::scene::{CarView, ObjectKind, SceneObject};

/// What a surface point looks like to both cameras.
#[derive(Debug, Clone, Copy)]
pub struct Surface {
    /// Linear RGB reflectance.
    pub albedo: [f32; 3],
    /// Light the point emits itself (lamps), linear RGB.
    pub emissive: [f32; 3],
    /// Apparent temperature on the thermal scale (0 = cold sky, 1 = hot).
    pub temp: f32,
}

const BLACK: [f32; 3] = [0.0; 3];

fn surf(albedo: [f32; 3], temp: f32) -> Option<Surface> {
    Some(Surface {
        albedo,
        emissive: BLACK,
        temp,
    })
}

/// The object's surface at `(u, v)`, or `None` where the frame is empty.
pub fn sample(obj: &SceneObject, u: f32, v: f32) -> Option<Surface> {
    match obj.kind {
        ObjectKind::Person => person(obj, u, v),
        ObjectKind::Car => car(obj, u, v),
    }
}

/// A walking person. `x` is measured in body heights from the centre line so
/// the figure keeps its proportions whatever the frame's aspect.
fn person(obj: &SceneObject, u: f32, v: f32) -> Option<Surface> {
    let x = (u - 0.5) * obj.w_px / obj.h_px;
    let t = obj.temp_offset;
    // head and hair
    let (hx, hy) = (x / 0.062, (v - 0.068) / 0.068);
    if hx * hx + hy * hy < 1.0 {
        return if v < 0.045 {
            surf([0.06, 0.045, 0.035], 0.80 + t)
        } else {
            surf(obj.skin, 0.95 + t)
        };
    }
    // neck
    if (0.128..0.15).contains(&v) && x.abs() < 0.03 {
        return surf(obj.skin, 0.93 + t);
    }
    // torso: shoulders taper to the waist
    if (0.145..0.53).contains(&v) {
        let half = 0.115 - 0.03 * (v - 0.145) / 0.385;
        if x.abs() < half {
            // a warmer core under the clothes: the thermal image has structure
            let core = 1.0 - (x.abs() / half).powi(2);
            return surf(obj.colour_a, 0.78 + 0.08 * core + t);
        }
    }
    // arms swing opposite to the legs
    for side in [-1.0f32, 1.0] {
        if (0.15..0.52).contains(&v) {
            let along = (v - 0.15) / 0.37;
            let cx = side * (0.135 + 0.02 * along) + side * obj.stride * 0.05 * along;
            if (x - cx).abs() < 0.032 {
                return if v > 0.47 {
                    surf(obj.skin, 0.9 + t)
                } else {
                    surf(obj.colour_a, 0.8 + t)
                };
            }
        }
    }
    // legs, with shoes
    if (0.52..1.0).contains(&v) {
        let along = (v - 0.52) / 0.48;
        for side in [-1.0f32, 1.0] {
            let cx = side * 0.055 + side * obj.stride * 0.09 * along;
            if (x - cx).abs() < 0.048 - 0.012 * along {
                return if v > 0.965 {
                    surf([0.04, 0.04, 0.04], 0.62 + t)
                } else {
                    surf(obj.colour_b, 0.74 + t)
                };
            }
        }
    }
    None
}

fn in_rounded_rect(u: f32, v: f32, u0: f32, v0: f32, u1: f32, v1: f32, r: f32) -> bool {
    if u < u0 || u > u1 || v < v0 || v > v1 {
        return false;
    }
    let cu = u.clamp(u0 + r, u1 - r);
    let cv = v.clamp(v0 + r, v1 - r);
    (u - cu).powi(2) + (v - cv).powi(2) <= r * r
}

/// A car seen from the side, the front or the rear.
fn car(obj: &SceneObject, u: f32, v: f32) -> Option<Surface> {
    match obj.car_view {
        CarView::Side { facing_right } => car_side(obj, if facing_right { u } else { 1.0 - u }, v),
        CarView::Front => car_end(obj, u, v, true),
        CarView::Rear => car_end(obj, u, v, false),
    }
}

/// Side view, front to the right (`u` = 1).
fn car_side(obj: &SceneObject, u: f32, v: f32) -> Option<Surface> {
    let aspect = obj.w_px / obj.h_px;
    let paint = obj.colour_a;
    let body_temp = if obj.engine_on { 0.55 } else { 0.47 };
    // wheels: tyres warm from rolling, metal hubs
    for wu in [0.18f32, 0.82] {
        let (du, dv) = ((u - wu) * aspect, v - 0.8);
        let r2 = du * du + dv * dv;
        if r2 < 0.2 * 0.2 {
            return if r2 < 0.09 * 0.09 {
                surf([0.45, 0.45, 0.47], 0.6)
            } else {
                surf([0.04, 0.04, 0.045], if obj.engine_on { 0.72 } else { 0.5 })
            };
        }
    }
    // lower body
    if in_rounded_rect(u, v, 0.0, 0.38, 1.0, 0.86, 0.06) {
        if u > 0.965 && (0.45..0.56).contains(&v) {
            return Some(headlight(obj, true));
        }
        if u < 0.03 && (0.45..0.56).contains(&v) {
            return Some(taillight(obj));
        }
        if u < 0.06 && v > 0.78 && obj.engine_on {
            return surf([0.1, 0.1, 0.1], 0.9); // exhaust
        }
        // engine bay warms the hood and front wing
        let engine = if obj.engine_on {
            0.3 * ((u - 0.7) / 0.3).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let shade = if v > 0.7 { 0.8 } else { 1.0 };
        return surf(
            [paint[0] * shade, paint[1] * shade, paint[2] * shade],
            body_temp + engine,
        );
    }
    // cabin: a trapezoid, windows inside
    if (0.04..0.4).contains(&v) {
        let k = (v - 0.04) / 0.36;
        let (left, right) = (0.3 - 0.12 * k, 0.68 + 0.1 * k);
        if u > left && u < right {
            let pillar =
                (u - left) < 0.025 || (right - u) < 0.025 || v < 0.07 || (u - 0.5).abs() < 0.015;
            return if pillar {
                surf(paint, body_temp)
            } else {
                surf([0.06, 0.08, 0.1], 0.28)
            };
        }
    }
    None
}

/// Front or rear view, seen end-on.
fn car_end(obj: &SceneObject, u: f32, v: f32, front: bool) -> Option<Surface> {
    let paint = obj.colour_a;
    let body_temp = if obj.engine_on { 0.55 } else { 0.47 };
    // tyres under the body
    if v > 0.78 && !(0.16..=0.84).contains(&u) && (0.03..0.97).contains(&u) {
        return surf([0.04, 0.04, 0.045], if obj.engine_on { 0.7 } else { 0.5 });
    }
    if in_rounded_rect(u, v, 0.0, 0.36, 1.0, 0.84, 0.06) {
        let lamp =
            (0.46..0.58).contains(&v) && !(0.17..=0.83).contains(&u) && (0.04..0.96).contains(&u);
        if lamp {
            return Some(if front {
                headlight(obj, false)
            } else {
                taillight(obj)
            });
        }
        if front && (0.3..0.7).contains(&u) && (0.5..0.72).contains(&v) {
            // the grille: the hottest part of a running car seen head-on
            return surf([0.08, 0.08, 0.09], if obj.engine_on { 0.88 } else { 0.5 });
        }
        if !front && v > 0.74 && (0.7..0.82).contains(&u) && obj.engine_on {
            return surf([0.1, 0.1, 0.1], 0.9); // exhaust
        }
        if (0.74..0.8).contains(&v) && (0.38..0.62).contains(&u) {
            return surf([0.8, 0.8, 0.75], body_temp); // number plate
        }
        let engine = if front && obj.engine_on { 0.15 } else { 0.0 };
        return surf(paint, body_temp + engine);
    }
    if (0.03..0.37).contains(&v) {
        let k = (v - 0.03) / 0.34;
        let inset = 0.2 - 0.12 * k;
        if u > inset && u < 1.0 - inset {
            let frame = (u - inset) < 0.04 || (1.0 - inset - u) < 0.04 || v < 0.06;
            return if frame {
                surf(paint, body_temp)
            } else {
                surf([0.06, 0.08, 0.1], 0.28)
            };
        }
    }
    None
}

fn headlight(obj: &SceneObject, side: bool) -> Surface {
    let glow = if obj.lights_on {
        if side {
            1.5
        } else {
            4.0
        }
    } else {
        0.0
    };
    Surface {
        albedo: [0.85, 0.85, 0.8],
        emissive: [glow, glow * 0.97, glow * 0.85],
        temp: 0.62,
    }
}

fn taillight(obj: &SceneObject) -> Surface {
    let glow = if obj.lights_on { 0.9 } else { 0.0 };
    Surface {
        albedo: [0.6, 0.05, 0.04],
        emissive: [glow, glow * 0.05, glow * 0.03],
        temp: 0.6,
    }
}
