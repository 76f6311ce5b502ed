//! The two cameras: turn painted [`Layers`] into an 8-bit RGB frame (light,
//! fog, night sensor noise, glare, gamma) and an 8-bit thermal frame
//! (temperature, mild fog, optics blur, sensor noise, misregistration).

// Colour maths indexes three channels side by side; index loops read best.
#![allow(clippy::needless_range_loop)]

use super::noise::{falloff, fbm, gauss};
use super::raster::Layers;
use super::scene::{CarView, Scene, SceneObject, StreetLamp};
use crate::shared::condition::Condition;
use image::{GrayImage, RgbImage};
use std::sync::OnceLock;

/// A bright light seen by the camera, spreading glare around itself.
struct Emitter {
    x_px: f32,
    y_px: f32,
    size_px: f32,
    colour: [f32; 3],
    power: f32,
}

/// A pool of light cast on the world (lamp or headlights), in ground metres.
struct LightPool {
    x_m: f32,
    z_m: f32,
    radius_m: f32,
    colour: [f32; 3],
    power: f32,
}

/// Headlight colour (linear RGB).
const HEADLIGHT_WHITE: [f32; 3] = [1.0, 0.97, 0.88];
/// Tail-light colour (linear RGB).
const TAIL_LIGHT_RED: [f32; 3] = [1.0, 0.08, 0.05];

/// The lights of a night scene: street lamps, then the lights of cars that
/// have them on. Nothing by day or in fog. The order is kept as it is:
/// glare and light pools are summed in it, so it decides the last bits of
/// every pixel.
fn night_lights(scene: &Scene) -> (Vec<Emitter>, Vec<LightPool>) {
    let mut lights = NightLights::default();
    if scene.condition != Condition::Night {
        return (lights.emitters, lights.pools);
    }
    for lamp in &scene.lamps {
        lights.add_street_lamp(scene, lamp);
    }
    for obj in scene.objects.iter().filter(|o| o.lights_on) {
        lights.add_car(scene, obj);
    }
    (lights.emitters, lights.pools)
}

/// Emitters and light pools collected by [`night_lights`].
#[derive(Default)]
struct NightLights {
    emitters: Vec<Emitter>,
    pools: Vec<LightPool>,
}

impl NightLights {
    /// A lit lamp head up on its pole and the pool of light under it.
    fn add_street_lamp(&mut self, scene: &Scene, lamp: &StreetLamp) {
        let px_per_m = scene.focal_px / lamp.z_m;
        self.emitters.push(Emitter {
            x_px: scene.screen_x(lamp.x_m, lamp.z_m),
            y_px: scene.screen_y(lamp.z_m) - lamp.height_m * px_per_m,
            size_px: (0.5 * px_per_m).max(1.0),
            colour: lamp.colour,
            power: lamp.power,
        });
        self.pools.push(LightPool {
            x_m: lamp.x_m,
            z_m: lamp.z_m,
            radius_m: lamp.height_m * 1.1,
            colour: lamp.colour,
            power: lamp.power * 1.4,
        });
    }

    /// The lights a car with lights on shows from its side of view:
    /// headlights and the road lit ahead (front, side), tail lights (rear).
    fn add_car(&mut self, scene: &Scene, obj: &SceneObject) {
        let x_m = (obj.x0_px + obj.w_px / 2.0 - scene.width_px as f32 / 2.0) * obj.depth_m
            / scene.focal_px;
        let lamp = CarLamp {
            size_px: (0.05 * obj.w_px).max(0.8),
            y_px: obj.y0_px + 0.52 * obj.h_px,
        };
        match obj.car_view {
            CarView::Front => self.add_headlights(obj, &lamp, x_m),
            CarView::Side { facing_right } => self.add_side_light(obj, &lamp, x_m, facing_right),
            CarView::Rear => self.add_tail_lights(obj, &lamp),
        }
    }

    /// Both headlights facing the camera, lighting the road in front.
    fn add_headlights(&mut self, obj: &SceneObject, lamp: &CarLamp, x_m: f32) {
        for u in [0.1, 0.9] {
            self.emitters
                .push(lamp.emitter(obj, u, HEADLIGHT_WHITE, 2.5));
        }
        self.pools.push(LightPool {
            x_m,
            z_m: obj.depth_m - 7.0,
            radius_m: 5.0,
            colour: HEADLIGHT_WHITE,
            power: 1.2,
        });
    }

    /// The headlight at the car's front end, lighting the road ahead of it.
    fn add_side_light(&mut self, obj: &SceneObject, lamp: &CarLamp, x_m: f32, facing_right: bool) {
        let (u, dir) = if facing_right {
            (0.98, 1.0)
        } else {
            (0.02, -1.0)
        };
        self.emitters
            .push(lamp.emitter(obj, u, HEADLIGHT_WHITE, 0.8));
        self.pools.push(LightPool {
            x_m: x_m + dir * 7.0,
            z_m: obj.depth_m,
            radius_m: 5.0,
            colour: HEADLIGHT_WHITE,
            power: 1.0,
        });
    }

    /// Both tail lights; they light nothing.
    fn add_tail_lights(&mut self, obj: &SceneObject, lamp: &CarLamp) {
        for u in [0.1, 0.9] {
            self.emitters
                .push(lamp.emitter(obj, u, TAIL_LIGHT_RED, 0.35));
        }
    }
}

/// Size and screen row shared by all lamps of one car.
struct CarLamp {
    size_px: f32,
    y_px: f32,
}

impl CarLamp {
    /// A lamp at fraction `u` of the car's width.
    fn emitter(&self, obj: &SceneObject, u: f32, colour: [f32; 3], power: f32) -> Emitter {
        Emitter {
            x_px: obj.x0_px + u * obj.w_px,
            y_px: self.y_px,
            size_px: self.size_px,
            colour,
            power,
        }
    }
}

/// Linear light in [0, 1] to 8-bit sRGB-like display values (gamma 1/2.2),
/// by table: a per-pixel `powf` would dominate generation time.
fn display_lut() -> &'static [u8; 4096] {
    static LUT: OnceLock<[u8; 4096]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut lut = [0u8; 4096];
        for (i, v) in lut.iter_mut().enumerate() {
            let lin = (i as f32 + 0.5) / 4096.0;
            *v = (lin.powf(1.0 / 2.2) * 255.0 + 0.5).min(255.0) as u8;
        }
        lut
    })
}

#[inline]
fn to_display(lin: f32, lut: &[u8; 4096]) -> u8 {
    lut[(lin.clamp(0.0, 0.99999) * 4096.0) as usize]
}

/// Renders the visible-light frame.
pub fn render_rgb(scene: &Scene, layers: &Layers) -> RgbImage {
    let (w, h) = (layers.width, layers.height);
    let lut = display_lut();
    let (emitters, pools) = night_lights(scene);
    let night = scene.condition == Condition::Night;
    let (read_noise, shot_gain) = if night {
        (0.011, 0.0025)
    } else {
        (0.003, 0.0002)
    };
    let half_w = w as f32 / 2.0;
    let mut img = RgbImage::new(w as u32, h as u32);
    let mut glare = vec![[0.0f32; 3]; w * h];
    add_glare(&emitters, w, h, &mut glare);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let depth = layers.depth_m[i];
            let xm = (x as f32 + 0.5 - half_w) * depth / scene.focal_px;
            let mut irr = [scene.ambient; 3];
            if scene.condition == Condition::Day && depth < 1.0e3 {
                // drifting cloud shadows on the world
                let shadow = 0.72
                    + 0.28
                        * (fbm(scene.texture_seed ^ 0xc10d, xm / 25.0, depth / 25.0, 2) * 1.6)
                            .min(1.0);
                irr = [irr[0] * shadow, irr[1] * shadow, irr[2] * shadow];
            }
            for p in &pools {
                let d2 = (xm - p.x_m).powi(2) + (depth - p.z_m).powi(2);
                let k = p.power * falloff(d2 / (p.radius_m * p.radius_m));
                for c in 0..3 {
                    irr[c] += k * p.colour[c];
                }
            }
            let a = layers.albedo[i];
            let e = layers.emissive[i];
            let mut lin = [
                a[0] * irr[0] + e[0],
                a[1] * irr[1] + e[1],
                a[2] * irr[2] + e[2],
            ];
            if scene.fog_beta > 0.0 {
                let t = falloff(scene.fog_beta * depth);
                for c in 0..3 {
                    lin[c] = lin[c] * t + scene.fog_airlight[c] * scene.ambient * (1.0 - t);
                }
            }
            if night {
                lin = night_sensor(lin, glare[i], x as f32 / w as f32, y as f32 / h as f32);
            }
            // shot noise grows with the signal; read noise does not. A shared
            // component makes the noise partly luminance, as on real sensors.
            let shared = gauss(scene.noise_seed, (i * 4) as u64);
            let px = img.get_pixel_mut(x as u32, y as u32);
            for c in 0..3 {
                let sigma = (read_noise * read_noise + shot_gain * lin[c].max(0.0)).sqrt();
                let n = 0.6 * shared + 0.8 * gauss(scene.noise_seed, (i * 4 + c + 1) as u64);
                px.0[c] = to_display(lin[c] + sigma * n, lut);
            }
        }
    }
    img
}

/// Night-time camera effects: glare, colour loss in the dark (little
/// chroma survives at low light), a cold cast, and lens vignetting.
fn night_sensor(lin: [f32; 3], glare: [f32; 3], u: f32, v: f32) -> [f32; 3] {
    let lin = [lin[0] + glare[0], lin[1] + glare[1], lin[2] + glare[2]];
    let luma = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
    let t = ((luma - 0.03) / 0.4).clamp(0.0, 1.0);
    let keep = 0.25 + 0.75 * t * t * (3.0 - 2.0 * t);
    let r2 = (u - 0.5).powi(2) + (v - 0.5).powi(2);
    let vignette = 1.0 - 0.6 * r2;
    let cast = [0.93, 0.98, 1.1];
    let mut out = [0.0; 3];
    for c in 0..3 {
        out[c] = (luma + (lin[c] - luma) * keep) * cast[c] * vignette;
    }
    out
}

/// Adds each emitter's bloom: a bright core and a long 1/r² halo.
fn add_glare(emitters: &[Emitter], w: usize, h: usize, glare: &mut [[f32; 3]]) {
    for e in emitters {
        let reach = e.size_px * 14.0 + 6.0;
        let (x0, x1) = (
            (e.x_px - reach).max(0.0) as usize,
            ((e.x_px + reach) as usize).min(w),
        );
        let (y0, y1) = (
            (e.y_px - reach).max(0.0) as usize,
            ((e.y_px + reach) as usize).min(h),
        );
        let s2 = e.size_px * e.size_px;
        for y in y0..y1 {
            for x in x0..x1 {
                let r2 = (x as f32 + 0.5 - e.x_px).powi(2) + (y as f32 + 0.5 - e.y_px).powi(2);
                let k =
                    e.power * (0.9 * falloff(r2 / (2.0 * s2)) + 0.12 * 4.0 * s2 / (4.0 * s2 + r2));
                let g = &mut glare[y * w + x];
                for c in 0..3 {
                    g[c] += k * e.colour[c];
                }
            }
        }
    }
}

/// Renders the thermal frame (white-hot, one channel).
pub fn render_ir(scene: &Scene, layers: &Layers) -> GrayImage {
    let (w, h) = (layers.width, layers.height);
    // Long-wave IR sees through fog far better than visible light.
    let beta_ir = scene.fog_beta * 0.12;
    let mut temp: Vec<f32> = layers
        .temp
        .iter()
        .zip(&layers.depth_m)
        .map(|(&t, &d)| {
            if beta_ir > 0.0 {
                let k = falloff(beta_ir * d);
                t * k + 0.36 * (1.0 - k)
            } else {
                t
            }
        })
        .collect();
    // Thermal optics and detector pitch: softer than the RGB camera.
    blur_121(&mut temp, w, h);
    blur_121(&mut temp, w, h);
    let mut img = GrayImage::new(w as u32, h as u32);
    let (sx, sy) = scene.ir_shift_px;
    let seed = scene.noise_seed ^ 0x1f;
    for y in 0..h {
        for x in 0..w {
            // the IR camera sees the scene shifted by its misregistration
            let src_x = (x as i32 - sx).clamp(0, w as i32 - 1) as usize;
            let src_y = (y as i32 - sy).clamp(0, h as i32 - 1) as usize;
            let t = temp[src_y * w + src_x];
            // temporal noise (NETD) and column fixed-pattern noise
            let n = 0.012 * gauss(seed, (y * w + x) as u64) + 0.006 * gauss(seed ^ 0xc01, x as u64);
            let v = ((t - 0.04) * scene.ir_gain / 0.96 + n).clamp(0.0, 1.0);
            img.put_pixel(x as u32, y as u32, image::Luma([(v * 255.0 + 0.5) as u8]));
        }
    }
    img
}

/// In-place separable [1 2 1]/4 blur with clamped edges.
fn blur_121(buf: &mut [f32], w: usize, h: usize) {
    let mut tmp = vec![0.0f32; buf.len()];
    for y in 0..h {
        let row = &buf[y * w..(y + 1) * w];
        for x in 0..w {
            let l = row[x.saturating_sub(1)];
            let r = row[(x + 1).min(w - 1)];
            tmp[y * w + x] = 0.25 * l + 0.5 * row[x] + 0.25 * r;
        }
    }
    for y in 0..h {
        let (u, d) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            buf[y * w + x] = 0.25 * tmp[u * w + x] + 0.5 * tmp[y * w + x] + 0.25 * tmp[d * w + x];
        }
    }
}
