//! Paints a [`Scene`] into per-pixel layers that both cameras read: surface
//! reflectance, emitted light, temperature and depth. Objects are drawn far
//! to near with 2×2 supersampling; each object's label box is measured from
//! the pixels it actually covers (occluded parts included).

use super::noise::{falloff, fbm, mix64};
use super::scene::{Building, Scene, SceneObject};
use super::shapes::{self, Surface};
use crate::shared::bbox::{BBox, Label};
use crate::shared::condition::Condition;

/// Depth given to the sky, metres: "infinitely" far for fog.
pub const SKY_DEPTH_M: f32 = 1.0e4;

pub struct Layers {
    pub width: usize,
    pub height: usize,
    /// Linear RGB reflectance, row-major.
    pub albedo: Vec<[f32; 3]>,
    /// Self-emitted linear RGB (lamps, lit windows, headlights).
    pub emissive: Vec<[f32; 3]>,
    /// Thermal scale, 0 (cold sky) to 1 (hot).
    pub temp: Vec<f32>,
    pub depth_m: Vec<f32>,
    pub labels: Vec<Label>,
}

impl Layers {
    fn set(&mut self, i: usize, s: &Surface, depth_m: f32) {
        self.albedo[i] = s.albedo;
        self.emissive[i] = s.emissive;
        self.temp[i] = s.temp;
        self.depth_m[i] = depth_m;
    }
}

/// Paints the background, lamp posts and objects of `scene`.
pub fn paint(scene: &Scene) -> Layers {
    let (w, h) = (scene.width_px as usize, scene.height_px as usize);
    let n = w * h;
    let mut layers = Layers {
        width: w,
        height: h,
        albedo: vec![[0.0; 3]; n],
        emissive: vec![[0.0; 3]; n],
        temp: vec![0.0; n],
        depth_m: vec![0.0; n],
        labels: Vec::new(),
    };
    for y in 0..h {
        for x in 0..w {
            let (s, d) = background(scene, x as f32 + 0.5, y as f32 + 0.5);
            layers.set(y * w + x, &s, d);
        }
    }
    // Lamp posts and objects share one far-to-near order.
    enum Item<'a> {
        Lamp(usize),
        Object(&'a SceneObject),
    }
    let mut items: Vec<(f32, Item)> = scene
        .lamps
        .iter()
        .enumerate()
        .map(|(i, l)| (l.z_m, Item::Lamp(i)))
        .collect();
    items.extend(scene.objects.iter().map(|o| (o.depth_m, Item::Object(o))));
    items.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, item) in items {
        match item {
            Item::Lamp(i) => paint_lamp_post(scene, i, &mut layers),
            Item::Object(obj) => {
                if let Some(bbox) = paint_object(obj, &mut layers) {
                    layers.labels.push(Label {
                        class_id: obj.kind.class_id(),
                        bbox,
                    });
                }
            }
        }
    }
    layers
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale3(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn plain(albedo: [f32; 3], temp: f32) -> Surface {
    Surface {
        albedo,
        emissive: [0.0; 3],
        temp,
    }
}

/// The static scene at pixel centre `(x, y)`: sky, buildings or ground.
fn background(scene: &Scene, x: f32, y: f32) -> (Surface, f32) {
    for b in scene.buildings.iter().rev() {
        if x >= b.x0_px && x < b.x1_px && y >= b.top_px && y < b.base_px {
            return (building(scene, b, x, y), b.depth_m);
        }
    }
    if y < scene.horizon_px + 0.5 {
        return (sky(scene, x, y), SKY_DEPTH_M);
    }
    let z = scene.ground_depth_m(y);
    (ground(scene, x, z), z)
}

fn sky(scene: &Scene, x: f32, y: f32) -> Surface {
    let t = (y / scene.horizon_px).clamp(0.0, 1.0);
    let seed = scene.texture_seed ^ 0x5e1;
    let cloud = smoothstep(0.5, 0.78, fbm(seed, x / 70.0, y / 22.0, 3));
    let blue = mix3([0.22, 0.42, 0.85], [0.62, 0.74, 0.9], t * t);
    let albedo = mix3(blue, [0.88, 0.88, 0.9], cloud);
    let mut s = plain(albedo, 0.04 + 0.16 * t * t + 0.1 * cloud);
    if scene.condition == Condition::Night {
        // skyglow of the city on the horizon
        s.emissive = scale3([0.035, 0.028, 0.022], t * t * t);
    }
    s
}

fn building(scene: &Scene, b: &Building, x: f32, y: f32) -> Surface {
    let fx = (x - b.x0_px) / (b.x1_px - b.x0_px) * b.window_cols as f32;
    let fy = (b.base_px - y) / (b.base_px - b.top_px) * b.window_rows as f32;
    let (col, row) = (fx as u64, fy as u64);
    let (ux, uy) = (fx.fract(), fy.fract());
    let grain = fbm(scene.texture_seed ^ 0xb1d, x / 3.0, y / 3.0, 2);
    let wall_temp = 0.4 + 0.5 * scene.ground_heat;
    if (0.22..0.78).contains(&ux) && (0.3..0.78).contains(&uy) {
        let lit_hash = mix64(b.lit_seed ^ (col << 20) ^ row) % 100;
        if scene.condition == Condition::Night && lit_hash < 35 {
            let warmth = 0.5 + (lit_hash as f32) / 70.0;
            return Surface {
                albedo: [0.5, 0.45, 0.35],
                emissive: [0.55 * warmth, 0.42 * warmth, 0.25 * warmth],
                temp: 0.5,
            };
        }
        // glass mirrors the cold sky in the thermal band
        return plain([0.07, 0.09, 0.12], 0.3);
    }
    plain(
        scale3(b.facade, 0.85 + 0.3 * grain),
        wall_temp + 0.03 * grain,
    )
}

fn ground(scene: &Scene, x: f32, z: f32) -> Surface {
    let w = scene.width_px as f32;
    let footprint_m = z / scene.focal_px; // ground metres per pixel (across)
    let xm = (x - w / 2.0) * footprint_m;
    let octaves = if footprint_m < 0.04 {
        3
    } else if footprint_m < 0.12 {
        2
    } else {
        1
    };
    let seed = scene.texture_seed;
    let n = fbm(seed ^ 0x91, xm * 1.2, z * 1.2, octaves);
    let patch = fbm(seed ^ 0x77, xm / 6.0, z / 6.0, 2);
    let dx = (xm - scene.road_x_m).abs();
    let heat = scene.ground_heat;
    let mut s = if dx < scene.road_half_m {
        let grey = 0.13 + 0.05 * patch + 0.06 * (n - 0.5);
        let mut s = plain([grey, grey, grey * 1.03], 0.5 + heat + 0.05 * (patch - 0.5));
        // paint: a dashed centre line and solid edge lines, blended by
        // coverage so distant lines fade instead of aliasing
        let line_w = 0.15;
        let cover = (line_w / footprint_m).min(1.0);
        let centre = dx < line_w / 2.0 + footprint_m / 2.0 && (z / 6.0).fract() < 0.5;
        let edge = (dx - (scene.road_half_m - 0.3)).abs() < line_w / 2.0 + footprint_m / 2.0;
        if centre || edge {
            s.albedo = mix3(s.albedo, [0.75, 0.75, 0.7], cover * 0.9);
        }
        s
    } else if dx < scene.road_half_m + scene.sidewalk_m {
        let c = 0.38 + 0.08 * patch + 0.05 * (n - 0.5);
        let joint = (z / 1.5).fract() < (0.04f32 / 1.5).max(footprint_m * 0.3);
        let c = if joint { c * 0.75 } else { c };
        plain(
            [c, c * 0.98, c * 0.94],
            0.46 + 0.8 * heat + 0.03 * (n - 0.5),
        )
    } else if scene.grass {
        let g = 0.6 + 0.8 * patch + 0.4 * (n - 0.5);
        plain(
            scale3([0.1, 0.24, 0.07], g),
            0.36 + 0.4 * heat + 0.06 * (patch - 0.5),
        )
    } else {
        let g = 0.7 + 0.5 * patch + 0.4 * (n - 0.5);
        plain(
            scale3([0.3, 0.23, 0.16], g),
            0.4 + 0.6 * heat + 0.05 * (patch - 0.5),
        )
    };
    for p in &scene.warm_patches {
        let d2 = (xm - p.x_m).powi(2) + (z - p.z_m).powi(2);
        s.temp += p.heat * falloff(d2 / (p.radius_m * p.radius_m));
    }
    s
}

/// A lamp post: a thin dark pole with a head that glows (and is hot) at night.
fn paint_lamp_post(scene: &Scene, index: usize, layers: &mut Layers) {
    let lamp = &scene.lamps[index];
    let px_per_m = scene.focal_px / lamp.z_m;
    let x = scene.screen_x(lamp.x_m, lamp.z_m);
    let foot = scene.screen_y(lamp.z_m);
    let top = foot - lamp.height_m * px_per_m;
    let half = (0.09 * px_per_m).max(0.35);
    let lit = scene.condition == Condition::Night;
    let head_half = 0.35 * px_per_m;
    let (w, h) = (layers.width as i32, layers.height as i32);
    let y_start = (top - head_half).floor().max(0.0) as i32;
    let y_end = foot.ceil().min(h as f32) as i32;
    for py in y_start..y_end {
        let yc = py as f32 + 0.5;
        let in_head = (yc - top).abs() < head_half * 0.6;
        let hw = if in_head { head_half } else { half };
        let x_start = (x - hw).floor().max(0.0) as i32;
        let x_end = ((x + hw).ceil() as i32).min(w);
        for px in x_start..x_end {
            let cover = ((px as f32 + 1.0).min(x + hw) - (px as f32).max(x - hw)).clamp(0.0, 1.0);
            if cover < 0.3 {
                continue;
            }
            let i = py as usize * layers.width + px as usize;
            let s = if in_head {
                let glow = if lit { lamp.power * 3.0 } else { 0.0 };
                Surface {
                    albedo: [0.8, 0.8, 0.75],
                    emissive: scale3(lamp.colour, glow),
                    temp: if lit { 0.9 } else { 0.5 },
                }
            } else {
                plain([0.12, 0.12, 0.13], 0.42 + 0.5 * scene.ground_heat)
            };
            layers.set(i, &s, lamp.z_m);
        }
    }
}

/// Paints one object with 2×2 supersampling; returns the box of the pixels
/// it covers, or `None` if it covers none.
fn paint_object(obj: &SceneObject, layers: &mut Layers) -> Option<BBox> {
    let (w, h) = (layers.width as i32, layers.height as i32);
    let x_start = obj.x0_px.floor().max(0.0) as i32;
    let x_end = ((obj.x0_px + obj.w_px).ceil() as i32).min(w);
    let y_start = obj.y0_px.floor().max(0.0) as i32;
    let y_end = ((obj.y0_px + obj.h_px).ceil() as i32).min(h);
    let mut bbox: Option<BBox> = None;
    const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    for py in y_start..y_end {
        for px in x_start..x_end {
            let mut hits = 0u32;
            let mut acc = Surface {
                albedo: [0.0; 3],
                emissive: [0.0; 3],
                temp: 0.0,
            };
            let (mut sx_min, mut sx_max, mut sy_min, mut sy_max) =
                (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
            for (dx, dy) in SUB {
                let (sx, sy) = (px as f32 + dx, py as f32 + dy);
                let u = (sx - obj.x0_px) / obj.w_px;
                let v = (sy - obj.y0_px) / obj.h_px;
                if let Some(s) = shapes::sample(obj, u, v) {
                    hits += 1;
                    // light from above: tops a little brighter than bottoms
                    let shade = 1.08 - 0.2 * v;
                    for c in 0..3 {
                        acc.albedo[c] += s.albedo[c] * shade;
                        acc.emissive[c] += s.emissive[c];
                    }
                    acc.temp += s.temp;
                    sx_min = sx_min.min(sx);
                    sx_max = sx_max.max(sx);
                    sy_min = sy_min.min(sy);
                    sy_max = sy_max.max(sy);
                }
            }
            if hits == 0 {
                continue;
            }
            let cover = hits as f32 / 4.0;
            let i = py as usize * layers.width + px as usize;
            let k = 1.0 / hits as f32;
            for c in 0..3 {
                layers.albedo[i][c] =
                    layers.albedo[i][c] * (1.0 - cover) + acc.albedo[c] * k * cover;
                layers.emissive[i][c] =
                    layers.emissive[i][c] * (1.0 - cover) + acc.emissive[c] * k * cover;
            }
            layers.temp[i] = layers.temp[i] * (1.0 - cover) + acc.temp * k * cover;
            if cover >= 0.5 {
                layers.depth_m[i] = obj.depth_m;
            }
            let sample_box = BBox::new(sx_min - 0.25, sy_min - 0.25, sx_max + 0.25, sy_max + 0.25);
            bbox = Some(match bbox {
                None => sample_box,
                Some(b) => BBox::new(
                    b.x1.min(sample_box.x1),
                    b.y1.min(sample_box.y1),
                    b.x2.max(sample_box.x2),
                    b.y2.max(sample_box.y2),
                ),
            });
        }
    }
    bbox
}
