//! Scene layout: where the horizon, road, buildings, lamps and objects are,
//! sampled from a seeded RNG. No pixels here: `raster` paints the layout.
//!
//! Geometry is a pinhole camera at height `cam_height_m` looking level over a
//! flat ground plane: a ground point at row `y` lies `cam_height_m *
//! focal_px / (y - horizon_y)` metres away, so object sizes, texture scale,
//! occlusion order, fog and lamp pools all follow one consistent depth.

use crate::shared::condition::Condition;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What an object is. `class_id` follows [`CLASS_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Person,
    Car,
}

/// Class names of the generated data, in class-id order.
pub const CLASS_NAMES: [&str; 2] = ["person", "car"];

impl ObjectKind {
    pub fn class_id(&self) -> usize {
        match self {
            ObjectKind::Person => 0,
            ObjectKind::Car => 1,
        }
    }
}

/// Which side of a car faces the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarView {
    /// Side view; `true` when the front points to the right of the frame.
    Side {
        facing_right: bool,
    },
    Front,
    Rear,
}

#[derive(Debug, Clone)]
pub struct SceneObject {
    pub kind: ObjectKind,
    /// Drawing frame in pixels (the label is measured from the raster).
    pub x0_px: f32,
    pub y0_px: f32,
    pub w_px: f32,
    pub h_px: f32,
    pub depth_m: f32,
    /// Main colours (linear RGB albedo): clothes top/bottom or car paint.
    pub colour_a: [f32; 3],
    pub colour_b: [f32; 3],
    pub skin: [f32; 3],
    /// Person: walking phase in [-1, 1]; car: unused.
    pub stride: f32,
    pub car_view: CarView,
    /// Car engine running (hot hood / grille / exhaust in IR).
    pub engine_on: bool,
    /// Car lights on (night only): lamps glow and light the road ahead.
    pub lights_on: bool,
    /// Body temperature offset, so not every person is equally warm.
    pub temp_offset: f32,
}

/// A rectangle building on the horizon with a grid of windows.
#[derive(Debug, Clone)]
pub struct Building {
    pub x0_px: f32,
    pub x1_px: f32,
    pub top_px: f32,
    pub base_px: f32,
    pub depth_m: f32,
    pub facade: [f32; 3],
    pub window_cols: u32,
    pub window_rows: u32,
    pub lit_seed: u64,
}

#[derive(Debug, Clone)]
pub struct StreetLamp {
    /// World position of the pole's foot on the ground plane (metres).
    pub x_m: f32,
    pub z_m: f32,
    pub height_m: f32,
    /// Emitted colour (linear RGB) and strength when lit.
    pub colour: [f32; 3],
    pub power: f32,
}

/// A sun-heated or otherwise warm patch of ground: visible in IR only.
#[derive(Debug, Clone)]
pub struct WarmPatch {
    pub x_m: f32,
    pub z_m: f32,
    pub radius_m: f32,
    pub heat: f32,
}

#[derive(Debug, Clone)]
pub struct Scene {
    pub condition: Condition,
    pub width_px: u32,
    pub height_px: u32,
    pub horizon_px: f32,
    pub cam_height_m: f32,
    pub focal_px: f32,
    /// Lateral offset of the road centre and half-width, metres.
    pub road_x_m: f32,
    pub road_half_m: f32,
    pub sidewalk_m: f32,
    /// Ground beyond the sidewalks: grass (`true`) or bare earth.
    pub grass: bool,
    pub buildings: Vec<Building>,
    pub lamps: Vec<StreetLamp>,
    pub warm_patches: Vec<WarmPatch>,
    /// Far to near (painter's order).
    pub objects: Vec<SceneObject>,
    /// Irradiance of sun/sky (day, fog) or ambient moonlight/skyglow (night).
    pub ambient: f32,
    /// Fog extinction coefficient, 1/m (0 without fog).
    pub fog_beta: f32,
    pub fog_airlight: [f32; 3],
    /// Thermal camera offset relative to the RGB camera, pixels.
    pub ir_shift_px: (i32, i32),
    /// Seeds of texture and sensor noise.
    pub texture_seed: u64,
    pub noise_seed: u64,
    /// Per-frame thermal variation: ground warmth and gain.
    pub ground_heat: f32,
    pub ir_gain: f32,
}

/// Knobs of the generator that users may change.
#[derive(Debug, Clone)]
pub struct SceneParams {
    pub width_px: u32,
    pub height_px: u32,
    /// Largest RGB↔IR misregistration, pixels (each axis, uniform).
    pub max_misregistration_px: u32,
    /// Fraction of frames with no objects at all.
    pub empty_fraction: f32,
}

impl Default for SceneParams {
    fn default() -> Self {
        Self {
            width_px: 320,
            height_px: 256,
            max_misregistration_px: 2,
            empty_fraction: 0.07,
        }
    }
}

const PERSON_HEIGHT_M: f32 = 1.75;
const CAR_HEIGHT_M: f32 = 1.5;

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// A colour from `palette`, brightness varied by up to ±`amount`.
fn pick_jittered(rng: &mut ChaCha8Rng, palette: &[[f32; 3]], amount: f32) -> [f32; 3] {
    let c = pick(rng, palette);
    let s = 1.0 + rng.random_range(-amount..amount);
    [
        (c[0] * s).clamp(0.01, 0.95),
        (c[1] * s).clamp(0.01, 0.95),
        (c[2] * s).clamp(0.01, 0.95),
    ]
}

const CLOTHES: [[f32; 3]; 12] = [
    [0.05, 0.05, 0.06],
    [0.55, 0.08, 0.07],
    [0.08, 0.15, 0.45],
    [0.10, 0.35, 0.12],
    [0.70, 0.65, 0.55],
    [0.80, 0.80, 0.82],
    [0.45, 0.30, 0.15],
    [0.75, 0.55, 0.08],
    [0.25, 0.25, 0.28],
    [0.40, 0.10, 0.40],
    [0.15, 0.45, 0.55],
    [0.85, 0.35, 0.10],
];
const JEANS: [[f32; 3]; 5] = [
    [0.08, 0.12, 0.30],
    [0.05, 0.05, 0.06],
    [0.35, 0.30, 0.22],
    [0.20, 0.20, 0.22],
    [0.45, 0.42, 0.38],
];
const SKIN: [[f32; 3]; 4] = [
    [0.75, 0.55, 0.42],
    [0.55, 0.37, 0.25],
    [0.35, 0.22, 0.14],
    [0.82, 0.66, 0.55],
];
const PAINT: [[f32; 3]; 10] = [
    [0.75, 0.75, 0.77],
    [0.05, 0.05, 0.06],
    [0.60, 0.05, 0.05],
    [0.08, 0.15, 0.45],
    [0.40, 0.42, 0.45],
    [0.85, 0.85, 0.82],
    [0.10, 0.30, 0.15],
    [0.80, 0.60, 0.10],
    [0.30, 0.20, 0.12],
    [0.20, 0.45, 0.70],
];
const FACADES: [[f32; 3]; 5] = [
    [0.45, 0.20, 0.14],
    [0.50, 0.50, 0.50],
    [0.65, 0.58, 0.45],
    [0.30, 0.32, 0.35],
    [0.55, 0.40, 0.30],
];

impl Scene {
    /// Samples a complete scene for `condition`.
    pub fn sample(params: &SceneParams, condition: Condition, rng: &mut ChaCha8Rng) -> Scene {
        let (w, h) = (params.width_px as f32, params.height_px as f32);
        let horizon_px = h * rng.random_range(0.30..0.46);
        // Focal length for a ~55° horizontal field of view.
        let focal_px = w * rng.random_range(0.9..1.1);
        let max_shift = params.max_misregistration_px as i32;
        let (ambient, fog_beta) = match condition {
            Condition::Day => (rng.random_range(0.85..1.1), 0.0),
            // 5–20 % of daylight: moonlight, skyglow, spill from the city.
            Condition::Night => (rng.random_range(0.05..0.20), 0.0),
            // Overcast daylight; visibility (Koschmieder, 5 % contrast) 20–80 m.
            Condition::Fog => (
                rng.random_range(0.55..0.9),
                3.0 / rng.random_range(20.0..80.0),
            ),
        };
        let grey = rng.random_range(0.65..0.85);
        let mut scene = Scene {
            condition,
            width_px: params.width_px,
            height_px: params.height_px,
            horizon_px,
            cam_height_m: rng.random_range(3.0..5.0),
            focal_px,
            road_x_m: rng.random_range(-10.0..10.0),
            road_half_m: rng.random_range(3.0..7.0),
            sidewalk_m: rng.random_range(1.5..3.5),
            grass: rng.random_bool(0.7),
            buildings: Vec::new(),
            lamps: Vec::new(),
            warm_patches: Vec::new(),
            objects: Vec::new(),
            ambient,
            fog_beta,
            fog_airlight: [grey * 0.97, grey * 0.99, grey],
            ir_shift_px: (
                rng.random_range(-max_shift..=max_shift),
                rng.random_range(-max_shift..=max_shift),
            ),
            texture_seed: rng.random(),
            noise_seed: rng.random(),
            ground_heat: match condition {
                Condition::Day => rng.random_range(0.08..0.18),
                Condition::Night => rng.random_range(-0.04..0.04),
                Condition::Fog => rng.random_range(0.0..0.06),
            },
            ir_gain: rng.random_range(0.9..1.1),
        };
        scene.sample_buildings(rng);
        scene.sample_lamps(rng);
        scene.sample_warm_patches(rng);
        if !rng.random_bool(params.empty_fraction as f64) {
            scene.sample_objects(rng);
        }
        scene
    }

    /// Distance of the ground point at row `y_px` (must be below the horizon).
    pub fn ground_depth_m(&self, y_px: f32) -> f32 {
        self.cam_height_m * self.focal_px / (y_px - self.horizon_px).max(0.05)
    }

    /// Screen column of a ground point at lateral offset `x_m`, depth `z_m`.
    pub fn screen_x(&self, x_m: f32, z_m: f32) -> f32 {
        self.width_px as f32 / 2.0 + x_m * self.focal_px / z_m
    }

    /// Screen row of a ground point at depth `z_m`.
    pub fn screen_y(&self, z_m: f32) -> f32 {
        self.horizon_px + self.cam_height_m * self.focal_px / z_m
    }

    fn sample_buildings(&mut self, rng: &mut ChaCha8Rng) {
        let w = self.width_px as f32;
        let mut x = rng.random_range(-0.2 * w..0.1 * w);
        while x < w {
            let bw = rng.random_range(0.12..0.4) * w;
            if rng.random_bool(0.8) {
                let depth_m = rng.random_range(90.0..250.0);
                let storey_px = 3.5 * self.focal_px / depth_m;
                let storeys = rng.random_range(2..9u32);
                let height = storey_px * storeys as f32;
                self.buildings.push(Building {
                    x0_px: x,
                    x1_px: x + bw,
                    top_px: self.screen_y(depth_m) - height,
                    base_px: self.screen_y(depth_m),
                    depth_m,
                    facade: pick_jittered(rng, &FACADES, 0.2),
                    window_cols: ((bw / storey_px) * 0.8).max(1.0) as u32,
                    window_rows: storeys,
                    lit_seed: rng.random(),
                });
            }
            x += bw + rng.random_range(0.0..0.1) * w;
        }
        // far buildings first, so nearer ones cover them
        self.buildings
            .sort_by(|a, b| b.depth_m.total_cmp(&a.depth_m));
    }

    fn sample_lamps(&mut self, rng: &mut ChaCha8Rng) {
        let count = rng.random_range(0..=3);
        for _ in 0..count {
            let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let sodium = rng.random_bool(0.5);
            self.lamps.push(StreetLamp {
                x_m: self.road_x_m + side * (self.road_half_m + 0.5),
                z_m: rng.random_range(8.0..45.0),
                height_m: rng.random_range(4.5..7.0),
                colour: if sodium {
                    [1.0, 0.62, 0.28]
                } else {
                    [0.92, 0.95, 1.0]
                },
                power: rng.random_range(0.5..1.2),
            });
        }
    }

    fn sample_warm_patches(&mut self, rng: &mut ChaCha8Rng) {
        let count = rng.random_range(1..=4);
        for _ in 0..count {
            self.warm_patches.push(WarmPatch {
                x_m: self.road_x_m + rng.random_range(-12.0..12.0),
                z_m: rng.random_range(6.0..50.0),
                radius_m: rng.random_range(0.5..2.5),
                heat: rng.random_range(0.08..0.22),
            });
        }
    }

    fn sample_objects(&mut self, rng: &mut ChaCha8Rng) {
        const COUNTS: [usize; 10] = [1, 1, 2, 2, 3, 3, 4, 5, 6, 9];
        let target = pick(rng, &COUNTS);
        let mut tries = 0;
        while self.objects.len() < target && tries < target * 30 {
            tries += 1;
            let kind = if rng.random_bool(0.55) {
                ObjectKind::Person
            } else {
                ObjectKind::Car
            };
            // A group of pedestrians now and then: overlaps and occlusion.
            let near = if kind == ObjectKind::Person
                && !self.objects.is_empty()
                && rng.random_bool(0.25)
            {
                Some(self.objects[rng.random_range(0..self.objects.len())].clone())
            } else {
                None
            };
            if let Some(obj) = self.sample_object(kind, near.as_ref(), rng) {
                if self.acceptable(&obj) {
                    self.objects.push(obj);
                }
            }
        }
        self.objects.sort_by(|a, b| b.depth_m.total_cmp(&a.depth_m));
    }

    /// Rejects objects mostly outside the frame, and pairs where the nearer
    /// hides more than 60 % of the farther (a label nobody could see).
    fn acceptable(&self, obj: &SceneObject) -> bool {
        let (w, h) = (self.width_px as f32, self.height_px as f32);
        let inside_w = (obj.x0_px + obj.w_px).min(w) - obj.x0_px.max(0.0);
        let inside_h = (obj.y0_px + obj.h_px).min(h) - obj.y0_px.max(0.0);
        if inside_w < 0.6 * obj.w_px || inside_h < 0.8 * obj.h_px {
            return false;
        }
        self.objects.iter().all(|other| {
            let ix =
                (obj.x0_px + obj.w_px).min(other.x0_px + other.w_px) - obj.x0_px.max(other.x0_px);
            let iy =
                (obj.y0_px + obj.h_px).min(other.y0_px + other.h_px) - obj.y0_px.max(other.y0_px);
            if ix <= 0.0 || iy <= 0.0 {
                return true;
            }
            let farther = if obj.depth_m > other.depth_m {
                obj
            } else {
                other
            };
            ix * iy < 0.6 * farther.w_px * farther.h_px
        })
    }

    /// Samples one object of `kind` (in a group with `near` when given):
    /// size and depth, then view, width, position and looks. `None` when
    /// its feet would fall below the frame or it would be too wide.
    ///
    /// The draws happen in this order on purpose: pairs are reproducible by
    /// seed, so reordering them would change every generated dataset.
    fn sample_object(
        &self,
        kind: ObjectKind,
        near: Option<&SceneObject>,
        rng: &mut ChaCha8Rng,
    ) -> Option<SceneObject> {
        let (w, h) = (self.width_px as f32, self.height_px as f32);
        let (h_px, depth_m) = self.sample_size(kind, near, rng);
        let foot_y = self.screen_y(depth_m);
        if foot_y > h + 0.1 * h_px {
            return None;
        }
        let car_view = sample_car_view(rng);
        let w_px = sample_width(kind, car_view, h_px, rng);
        if w_px > 0.36 * w {
            return None;
        }
        let x_m = self.sample_lateral_m(kind, near, w_px, depth_m, rng);
        let cx = self.screen_x(x_m, depth_m);
        let night = self.condition == Condition::Night;
        let engine_on = rng.random_bool(0.8);
        let (colour_a, colour_b, skin) = sample_colours(kind, rng);
        Some(SceneObject {
            kind,
            x0_px: cx - w_px / 2.0,
            y0_px: foot_y - h_px,
            w_px,
            h_px,
            depth_m,
            colour_a,
            colour_b,
            skin,
            stride: rng.random_range(-1.0..1.0),
            car_view,
            engine_on,
            lights_on: night && engine_on && rng.random_bool(0.7),
            temp_offset: rng.random_range(-0.05..0.05),
        })
    }

    /// Pixel height and depth (metres) of a new object: a log-uniform pixel
    /// height, or, in a group, a depth close to the `near` object's.
    fn sample_size(
        &self,
        kind: ObjectKind,
        near: Option<&SceneObject>,
        rng: &mut ChaCha8Rng,
    ) -> (f32, f32) {
        let h = self.height_px as f32;
        let (real_h, min_px, max_px) = match kind {
            ObjectKind::Person => (PERSON_HEIGHT_M, 8.0f32, 0.34 * h),
            ObjectKind::Car => (CAR_HEIGHT_M, 6.0f32, 0.30 * h),
        };
        // Log-uniform pixel height: as many small objects as large ones.
        let mut h_px = (rng.random_range(min_px.ln()..max_px.ln())).exp();
        let mut depth_m = real_h * self.focal_px / h_px;
        if let Some(other) = near {
            depth_m =
                (other.depth_m * rng.random_range(0.85..1.2)).max(real_h * self.focal_px / max_px);
            h_px = real_h * self.focal_px / depth_m;
        }
        (h_px, depth_m)
    }

    /// Lateral offset (metres) of a new object of pixel width `w_px` at
    /// `depth_m`: beside the `near` object of a group, cars on the road,
    /// people on the road or on either side of it.
    fn sample_lateral_m(
        &self,
        kind: ObjectKind,
        near: Option<&SceneObject>,
        w_px: f32,
        depth_m: f32,
        rng: &mut ChaCha8Rng,
    ) -> f32 {
        let w = self.width_px as f32;
        match (kind, near) {
            (_, Some(other)) => {
                let cx = other.x0_px + other.w_px / 2.0 + rng.random_range(-1.2..1.2) * w_px;
                (cx - w / 2.0) * depth_m / self.focal_px
            }
            (ObjectKind::Car, None) => {
                self.road_x_m + rng.random_range(-0.8..0.8) * self.road_half_m
            }
            (ObjectKind::Person, None) => {
                if rng.random_bool(0.3) {
                    self.road_x_m + rng.random_range(-1.0..1.0) * self.road_half_m
                } else {
                    let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                    self.road_x_m + side * (self.road_half_m + rng.random_range(0.3..8.0))
                }
            }
        }
    }
}

/// Which side of a car faces the camera. Drawn for people too, who ignore
/// it: the draw is part of every object's seeded sequence.
fn sample_car_view(rng: &mut ChaCha8Rng) -> CarView {
    match rng.random_range(0..4) {
        0 => CarView::Front,
        1 => CarView::Rear,
        _ => CarView::Side {
            facing_right: rng.random_bool(0.5),
        },
    }
}

/// Pixel width of an object `h_px` tall: people are slim, cars long from
/// the side and squarer from the front or rear.
fn sample_width(kind: ObjectKind, car_view: CarView, h_px: f32, rng: &mut ChaCha8Rng) -> f32 {
    match kind {
        ObjectKind::Person => h_px * rng.random_range(0.36..0.42),
        ObjectKind::Car => match car_view {
            CarView::Side { .. } => h_px * rng.random_range(2.5..3.0),
            _ => h_px * rng.random_range(1.15..1.3),
        },
    }
}

/// Main colour (car paint or top), trousers and skin of an object, drawn in
/// that order.
fn sample_colours(kind: ObjectKind, rng: &mut ChaCha8Rng) -> ([f32; 3], [f32; 3], [f32; 3]) {
    let main = pick_jittered(
        rng,
        if kind == ObjectKind::Car {
            &PAINT
        } else {
            &CLOTHES
        },
        0.25,
    );
    let trousers = pick_jittered(rng, &JEANS, 0.25);
    let skin = pick_jittered(rng, &SKIN, 0.1);
    (main, trousers, skin)
}
