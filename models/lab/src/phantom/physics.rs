//! A deterministic, physics-based CESM phantom: paired low-energy (LE) and recombined (RC)
//! mammograms with lesion boxes, for training, tests and demos (no patient data exists here).
//!
//! The model, in the order [`simulate`] applies it:
//! 1. **Geometry.** A breast outline (a superellipse with lobes, tilted for MLO) against the
//!    chest wall, and for MLO the pectoral muscle in the upper corner at the chest wall.
//! 2. **Tissue.** A compressed thickness that is flat under the paddle and rounds off towards the
//!    skin line; a fibroglandular fraction from band-limited value noise whose level follows the
//!    BI-RADS density category, gathered in the middle of the breast and fading into
//!    subcutaneous fat. The pectoral muscle counts as glandular-equivalent soft tissue.
//! 3. **Contrast.** Lesions are solid masses (ellipsoids with lobulated borders) that displace
//!    most of the fat in their volume and take up iodine, as enhancing cancers do: in fatty tissue
//!    they show on LE as a mass, while those that sit in dense tissue (flagged `hidden`) barely
//!    do. Background parenchymal enhancement adds a little iodine in proportion to the glandular
//!    thickness, in scattered foci.
//! 4. **Exposure.** Beer–Lambert attenuation at one effective energy below the iodine K-edge (LE)
//!    and one above (HE), with quantum noise (Gaussian approximation of Poisson statistics).
//! 5. **Recombination.** RC = ln(HE) − w·ln(LE), with w chosen from the attenuation table so that
//!    glandular and adipose tissue give the same signal; what is left is iodine, the total
//!    thickness (removed with the thickness map, as vendors equalize) and noise.
//! 6. **Display.** Both images are 12-bit MONOCHROME2 For Presentation style: LE is the log
//!    attenuation (air dark, dense tissue bright) with peripheral equalization; RC shows iodine
//!    bright on a flat grey breast and a flat darker background.
//!
//! Orientation follows the DICOM convention of mammography units: a right breast has its chest
//! wall on the right edge of the image (Patient Orientation `P\L`, `P\FL`), a left breast on the
//! left edge (`A\R`, `A\FR`). Everything is computed along the distance from the chest wall, so
//! the R and L images of one seed are exact mirror images.
//!
//! Deterministic: the same [`PhantomConfig`] gives bit-identical output (a small splitmix64
//! generator, no global state). A 3328×2560 case takes a few hundred milliseconds on one core:
//! the smooth fields live on a coarse grid that is upsampled bilinearly, and per pixel there
//! are two exponentials and one random draw per energy.

/// BI-RADS breast density categories: A almost entirely fatty … D extremely dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    A,
    B,
    C,
    D,
}

impl Density {
    /// The category's letter, "A" to "D".
    pub fn as_str(self) -> &'static str {
        match self {
            Density::A => "A",
            Density::B => "B",
            Density::C => "C",
            Density::D => "D",
        }
    }
}

/// What one phantom image pair looks like; [`case_config`] derives one from a dataset seed.
#[derive(Debug, Clone)]
pub struct PhantomConfig {
    pub rows: usize,
    pub cols: usize,
    pub density: Density,
    /// Lesions to place; fewer are placed when the breast has no room for them.
    pub lesions: usize,
    /// 'L' or 'R'.
    pub laterality: char,
    /// "CC" or "MLO".
    pub view: &'static str,
    pub seed: u64,
}

/// A lesion's bounding box in pixel coordinates (ends exclusive).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoiBox {
    pub row0: usize,
    pub col0: usize,
    pub row1: usize,
    pub col1: usize,
    /// The lesion lies in dense tissue and is hard to see on LE.
    pub hidden: bool,
    /// Peak projected iodine (mg/cm²) through the lesion.
    pub iodine_mg_cm2: f32,
}

/// A simulated LE/RC pair.
#[derive(Debug, Clone)]
pub struct PhantomCase {
    pub rows: usize,
    pub cols: usize,
    /// Low-energy image, 12-bit stored values (0..=4095), row-major.
    pub le: Vec<u16>,
    /// Recombined image, 12-bit stored values (0..=4095), row-major.
    pub rc: Vec<u16>,
    pub lesions: Vec<RoiBox>,
    pub breast_mask: Vec<bool>,
    /// (center, width) for display.
    pub le_window: (f32, f32),
    /// (center, width) for display.
    pub rc_window: (f32, f32),
    pub laterality: char,
    pub view: &'static str,
    pub density: Density,
}

/// The four views of a screening exam, in the order [`case_config`] gives image indices 0..4.
pub const VIEWS: [(char, &str); 4] = [('R', "CC"), ('L', "CC"), ('R', "MLO"), ('L', "MLO")];

/// Whether a breast of this laterality has its chest wall on the left edge of the image (a left
/// breast does, a right one has it on the right edge; see the module documentation).
pub fn chest_wall_on_left(laterality: char) -> bool {
    laterality == 'L'
}

/// The shorter image side spans this much of the detector (cm), whatever the pixel count:
/// 2560 pixels at 0.1 mm, as in the paper's 3328×2560 images.
const SHORT_SIDE_CM: f32 = 25.6;

/// Pixel spacing (mm) of a phantom image of this size.
pub fn pixel_spacing_mm(rows: usize, cols: usize) -> f32 {
    SHORT_SIDE_CM * 10.0 / rows.min(cols) as f32
}

/// A case config derived from (dataset seed, patient index, image index): density, lesion count,
/// laterality, view all vary deterministically. Image indices 0..4 are the views of [`VIEWS`]
/// (larger indices wrap); the density belongs to the patient and the lesion count to the breast,
/// so a patient's CC and MLO of one side agree.
pub fn case_config(seed: u64, patient: usize, image: usize, rows: usize, cols: usize) -> PhantomConfig {
    let patient_seed = mix(mix(seed, 0x5048_414e_544f_4d00), patient as u64);
    let mut rng = SplitMix(patient_seed);
    // Population shares of the BI-RADS categories (about 10/40/40/10 %).
    let density = match rng.uniform() {
        u if u < 0.1 => Density::A,
        u if u < 0.5 => Density::B,
        u if u < 0.9 => Density::C,
        _ => Density::D,
    };
    let lesions_per_breast = [lesion_count(rng.uniform()), lesion_count(rng.uniform())];
    let (laterality, view) = VIEWS[image % VIEWS.len()];
    PhantomConfig {
        rows,
        cols,
        density,
        lesions: lesions_per_breast[usize::from(laterality == 'L')],
        laterality,
        view,
        seed: mix(patient_seed, image as u64),
    }
}

/// Lesions in one breast for a uniform draw: 0 to 3, one being the most common.
fn lesion_count(u: f32) -> usize {
    match u {
        u if u < 0.2 => 0,
        u if u < 0.6 => 1,
        u if u < 0.88 => 2,
        _ => 3,
    }
}

/// Simulates one LE/RC pair. Panics on a laterality other than 'L'/'R', a view other than
/// "CC"/"MLO", or an image smaller than 32×32.
pub fn simulate(cfg: &PhantomConfig) -> PhantomCase {
    render(cfg, None)
}

// ---------------------------------------------------------------------------------------------
// Attenuation

/// Effective energy (keV) of the low-energy exposure, below the iodine K-edge (33.17 keV).
const LOW_KEV: f32 = 28.0;
/// Effective energy (keV) of the high-energy exposure, above the K-edge.
const HIGH_KEV: f32 = 49.0;

/// Energies (keV) of the attenuation table: NIST XCOM grid points.
const TABLE_KEV: [f32; 4] = [20.0, 30.0, 40.0, 50.0];
/// Mass attenuation coefficients μ/ρ (cm²/g) at [`TABLE_KEV`].
///
/// Iodine: NIST XCOM (Hubbell & Seltzer, X-Ray Mass Attenuation Coefficients, Z = 53); its
/// K-edge lies between 30 and 40 keV. Adipose and glandular tissue: the mixture rule over the
/// NIST element tables for H, C, N, O and P with the compositions of Hammerstein et al.
/// (Radiology 130:485, 1979), by weight: adipose H 11.2, C 61.9, N 1.7, O 25.1 %; glandular
/// H 10.2, C 18.4, N 3.2, O 67.7, P 0.5 %.
const ADIPOSE_MU_RHO: [f32; 4] = [0.5432, 0.2989, 0.2362, 0.2105];
const GLANDULAR_MU_RHO: [f32; 4] = [0.7512, 0.3577, 0.2598, 0.2218];
const IODINE_MU_RHO: [f32; 4] = [25.43, 8.561, 22.10, 12.32];
/// Densities (g/cm³), Hammerstein et al.
const ADIPOSE_DENSITY: f32 = 0.93;
const GLANDULAR_DENSITY: f32 = 1.04;

/// Log-log interpolation of a table at `kev`, within the grid interval around it. The interval
/// 30–40 keV holds the iodine K-edge, where interpolation would be meaningless.
fn interpolate(table: &[f32; 4], kev: f32) -> f32 {
    let i = if (TABLE_KEV[0]..=TABLE_KEV[1]).contains(&kev) {
        0
    } else if (TABLE_KEV[2]..=TABLE_KEV[3]).contains(&kev) {
        2
    } else {
        panic!("{kev} keV is outside the 20-30 and 40-50 keV intervals of the attenuation table")
    };
    let t = (kev / TABLE_KEV[i]).ln() / (TABLE_KEV[i + 1] / TABLE_KEV[i]).ln();
    (table[i].ln() + t * (table[i + 1] / table[i]).ln()).exp()
}

/// Attenuation at one energy: tissues as linear coefficients (1/cm), iodine per areal density
/// (cm²/mg), since lesions and enhancement are described in mg/cm².
#[derive(Debug, Clone, Copy)]
struct Mu {
    adipose: f32,
    glandular: f32,
    iodine: f32,
}

impl Mu {
    fn at(kev: f32) -> Mu {
        Mu {
            adipose: interpolate(&ADIPOSE_MU_RHO, kev) * ADIPOSE_DENSITY,
            glandular: interpolate(&GLANDULAR_MU_RHO, kev) * GLANDULAR_DENSITY,
            iodine: interpolate(&IODINE_MU_RHO, kev) * 1e-3,
        }
    }

    /// The Beer–Lambert exponent through `thickness` cm of breast of which `glandular` cm are
    /// glandular, with `iodine` mg/cm² of iodine.
    fn line_integral(&self, thickness: f32, glandular: f32, iodine: f32) -> f32 {
        self.adipose * (thickness - glandular) + self.glandular * glandular + self.iodine * iodine
    }
}

/// Both exposures and the recombination weight.
struct Physics {
    low: Mu,
    high: Mu,
    /// The weight that makes ln(HE) − w·ln(LE) blind to glandular-vs-adipose composition.
    w: f32,
}

impl Physics {
    fn new() -> Physics {
        let (low, high) = (Mu::at(LOW_KEV), Mu::at(HIGH_KEV));
        let w = (high.glandular - high.adipose) / (low.glandular - low.adipose);
        Physics { low, high, w }
    }
}

// ---------------------------------------------------------------------------------------------
// Exposure and display constants

/// Effective detected quanta per 0.1 mm pixel without attenuation, as left after the noise
/// reduction a CESM unit applies (raw counts would leave RC much noisier). Larger pixels
/// collect proportionally more, so a small phantom is as noisy as a downsampled mammogram.
const QUANTA_LOW: f32 = 4.0e5;
const QUANTA_HIGH: f32 = 2.0e5;
/// LE stored value = offset + gain · line integral: air is dark, 7 cm of glandular tissue ~4000.
const LE_OFFSET: f32 = 60.0;
const LE_GAIN: f32 = 1300.0;
/// Share of the thickness fall-off at the skin line that LE processing compensates (peripheral
/// equalization), so the breast edge is not much darker than its middle.
const PERIPHERAL_EQUALIZATION: f32 = 0.8;
/// RC outside the breast.
const RC_BACKGROUND: u16 = 200;
/// RC of unenhanced breast tissue.
const RC_BASE: f32 = 1000.0;
/// RC stored value per unit of recombined log signal; 1 mg/cm² of iodine gives about 290.
const RC_GAIN: f32 = 30_000.0;
/// Iodine (mg/cm²) that the RC window shows white.
const RC_WHITE_MG_CM2: f32 = 4.0;

// ---------------------------------------------------------------------------------------------
// Anatomy constants

/// Normalised radius where the compressed thickness starts to round off towards the skin.
const EDGE_START: f32 = 0.82;
/// Normalised width of the subcutaneous fat layer.
const SUBCUTANEOUS: f32 = 0.12;
/// How dense a region is: sigmoid(STEEPNESS · (texture + density bias + centre)), between fat
/// (fraction ≤ STROMA) and dense tissue (fraction ≤ GLAND_MAX).
const GLAND_MAX: f32 = 0.92;
const GLAND_STEEPNESS: f32 = 2.2;
const CENTRE_WEIGHT: f32 = 0.8;
/// Largest glandular fraction of fibrous strands in fat, and largest share of dense tissue that
/// fat lobules take.
const STROMA: f32 = 0.2;
const FAT_LOBULES: f32 = 0.4;
/// A lesion whose surroundings are at least this glandular is flagged hidden.
const HIDDEN_GLAND: f32 = 0.5;

impl Density {
    /// Shift of the texture before the sigmoid: mean glandular fractions of about 0.14, 0.21,
    /// 0.34 and 0.47 for A to D (case to case they overlap, as in patients).
    fn gland_bias(self) -> f32 {
        match self {
            Density::A => -2.4,
            Density::B => -1.6,
            Density::C => -0.8,
            Density::D => 0.0,
        }
    }

    /// Chance that a lesion is placed in tissue dense enough to hide it (where one is found)
    /// rather than anywhere. Chosen so that about a third of the lesions are hidden overall,
    /// most of them in dense breasts: LE, like full-field digital mammography, shows most of
    /// the cancers that CESM shows, and misses more of them the denser the breast.
    fn dense_placement(self) -> f32 {
        match self {
            Density::A => 0.05,
            Density::B => 0.15,
            Density::C => 0.3,
            Density::D => 0.5,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// splitmix64 (Steele, Lea & Flood 2014): tiny, fast and good enough for textures and noise.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Approximately standard normal: the Irwin–Hall sum of four 16-bit uniforms (mean 2,
    /// variance 1/3), centred and scaled. One 64-bit draw per sample.
    fn gauss(&mut self) -> f32 {
        let v = self.next_u64();
        let sum = (v & 0xFFFF) + (v >> 16 & 0xFFFF) + (v >> 32 & 0xFFFF) + (v >> 48);
        ((sum as f32 + 2.0) / 65536.0 - 2.0) * 3f32.sqrt()
    }
}

/// The splitmix64 output function.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a sub-seed from a seed and a label.
fn mix(seed: u64, label: u64) -> u64 {
    finalize(seed ^ finalize(label.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

fn smoothstep(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

// ---------------------------------------------------------------------------------------------
// Texture

/// Value noise: uniform random values on a lattice, interpolated with a smoothstep.
struct ValueNoise {
    nx: usize,
    cell_x: f32,
    cell_y: f32,
    off_x: f32,
    off_y: f32,
    lattice: Vec<f32>,
}

impl ValueNoise {
    /// Noise covering [0, width] × [0, height] with cells of cell_x × cell_y.
    fn new(rng: &mut SplitMix, width: f32, height: f32, cell_x: f32, cell_y: f32) -> ValueNoise {
        let nx = (width / cell_x) as usize + 3;
        let ny = (height / cell_y) as usize + 3;
        ValueNoise {
            nx,
            cell_x,
            cell_y,
            off_x: rng.uniform(),
            off_y: rng.uniform(),
            lattice: (0..nx * ny).map(|_| 2.0 * rng.uniform() - 1.0).collect(),
        }
    }

    fn sample(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x / self.cell_x + self.off_x, y / self.cell_y + self.off_y);
        let (i, j) = (fx as usize, fy as usize);
        let (tx, ty) = (smoothstep(fx - i as f32), smoothstep(fy - j as f32));
        let at = |i: usize, j: usize| self.lattice[j * self.nx + i];
        lerp(
            lerp(at(i, j), at(i + 1, j), tx),
            lerp(at(i, j + 1), at(i + 1, j + 1), tx),
            ty,
        )
    }
}

/// Band-limited texture: octaves of value noise from a quarter of the shorter image side down
/// to 1/64 of it, elongated along the chest-wall-to-nipple axis like ducts and Cooper's
/// ligaments, scaled to a standard deviation of about 1.
struct Texture {
    octaves: Vec<(ValueNoise, f32)>,
}

impl Texture {
    const OCTAVES: usize = 5;
    /// Amplitude ratio between successive octaves: a rough, clumpy parenchyma.
    const PERSISTENCE: f32 = 0.7;
    /// Cells are this much longer along the chest-wall-to-nipple axis.
    const ELONGATION: f32 = 1.6;
    /// Standard deviation of one octave of smoothstep value noise with uniform [-1, 1] nodes.
    const OCTAVE_STD: f32 = 0.42;

    /// Texture over [0, width] × [0, height] whose coarsest cells are `coarsest` of the shorter
    /// side.
    fn new(rng: &mut SplitMix, width: f32, height: f32, coarsest: f32) -> Texture {
        let mut cell = coarsest * width.min(height);
        let mut amp = 1.0;
        let mut octaves = Vec::with_capacity(Self::OCTAVES);
        for _ in 0..Self::OCTAVES {
            octaves.push((
                ValueNoise::new(rng, width, height, cell * Self::ELONGATION, cell),
                amp,
            ));
            cell *= 0.5;
            amp *= Self::PERSISTENCE;
        }
        let norm = Self::OCTAVE_STD * octaves.iter().map(|(_, a)| a * a).sum::<f32>().sqrt();
        for (_, a) in &mut octaves {
            *a /= norm;
        }
        Texture { octaves }
    }

    fn sample(&self, x: f32, y: f32) -> f32 {
        self.octaves
            .iter()
            .map(|(noise, amp)| amp * noise.sample(x, y))
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Anatomy. Coordinates: `x` is the distance (pixels) from the chest wall, `row` the image row.

/// The skin line: a superellipse centred on the chest wall, with lobes, tilted for MLO.
struct Outline {
    cy: f32,
    ry_top: f32,
    ry_bottom: f32,
    rx: f32,
    /// 2 is an ellipse; larger is boxier.
    exponent: f32,
    /// (frequency, amplitude, phase) of angular modulations of the radius.
    lobes: [(f32, f32, f32); 2],
    /// (sin, cos) of the tilt of the nipple axis (positive: towards the feet).
    tilt: (f32, f32),
}

impl Outline {
    fn new(rng: &mut SplitMix, rows: f32, cols: f32, mlo: bool) -> Outline {
        let lobes = [
            (3.0, rng.range(0.0, 0.04), rng.range(0.0, std::f32::consts::TAU)),
            (5.0, rng.range(0.0, 0.02), rng.range(0.0, std::f32::consts::TAU)),
        ];
        let exponent = rng.range(1.8, 2.6);
        let rx = cols * rng.range(0.5, 0.8);
        if mlo {
            // The MLO breast runs off the top edge into the axilla and droops a little.
            let cy = rows * rng.range(0.45, 0.55);
            Outline {
                cy,
                ry_top: cy * rng.range(1.2, 1.35),
                ry_bottom: (rows - cy) * rng.range(0.75, 0.9),
                rx,
                exponent,
                lobes,
                tilt: rng.range(0.1, 0.3).sin_cos(),
            }
        } else {
            Outline {
                cy: rows * rng.range(0.46, 0.54),
                ry_top: rows * rng.range(0.3, 0.42),
                ry_bottom: rows * rng.range(0.3, 0.42),
                rx,
                exponent,
                lobes,
                tilt: rng.range(-0.05, 0.05).sin_cos(),
            }
        }
    }

    /// Normalised radius: 0 at the centre of the chest wall, 1 on the skin line.
    fn radius(&self, row: f32, x: f32) -> f32 {
        let y = row - self.cy;
        let (sin, cos) = self.tilt;
        let (along, across) = (x * cos + y * sin, y * cos - x * sin);
        let ry = if across < 0.0 { self.ry_top } else { self.ry_bottom };
        let (u, v) = ((along / self.rx).abs(), (across / ry).abs());
        let p = self.exponent;
        let r = (u.powf(p) + v.powf(p)).powf(1.0 / p);
        let theta = across.atan2(along);
        let lobes: f32 = self
            .lobes
            .iter()
            .map(|&(k, amp, phase)| amp * (k * theta + phase).cos())
            .sum();
        r / (1.0 + lobes)
    }
}

/// Compressed thickness (cm) at normalised radius `r`: flat under the paddle, then rounding off
/// like the roughly semicircular edge of a compressed breast.
fn thickness(t0: f32, r: f32) -> f32 {
    if r >= 1.0 {
        0.0
    } else if r <= EDGE_START {
        t0
    } else {
        let q = (r - EDGE_START) / (1.0 - EDGE_START);
        t0 * (1.0 - q * q).sqrt()
    }
}

/// The pectoral muscle of an MLO view: a triangle in the upper corner at the chest wall.
struct Pectoral {
    width: f32,
    height: f32,
    /// Width (pixels) of the soft transition at its border.
    band: f32,
}

impl Pectoral {
    /// 1 inside the muscle, 0 outside.
    fn weight(&self, row: f32, x: f32) -> f32 {
        let inside = 1.0 - x / self.width - row / self.height;
        (inside * self.width.min(self.height) / self.band).clamp(0.0, 1.0)
    }
}

/// Where the fibroglandular tissue is.
struct Parenchyma {
    texture: Texture,
    fine: Texture,
    bias: f32,
    pectoral: Option<Pectoral>,
}

impl Parenchyma {
    /// Fraction of the thickness that is glandular(-equivalent) at a point of normalised radius r.
    fn fraction(&self, row: f32, x: f32, r: f32) -> f32 {
        if r >= 1.0 {
            return 0.0;
        }
        // Glandular tissue gathers in the middle of the breast (r ≈ 0.45) behind the nipple and
        // gives way to subcutaneous fat towards the skin.
        let centre = 1.0 - ((r - 0.45) / 0.45).powi(2);
        let drive = self.texture.sample(x, row) + self.bias + CENTRE_WEIGHT * centre;
        // A finer texture keeps both kinds of region heterogeneous: fibrous strands in the fat,
        // fat lobules in the dense tissue.
        let fine = sigmoid(2.0 * self.fine.sample(x, row));
        let (fat, dense) = (STROMA * (1.0 - fine), GLAND_MAX * (1.0 - FAT_LOBULES * fine));
        let g = lerp(fat, dense, sigmoid(GLAND_STEEPNESS * drive)) * smoothstep((1.0 - r) / SUBCUTANEOUS);
        // Muscle attenuates about like glandular tissue, so it cancels in RC as well.
        lerp(g, GLAND_MAX, self.muscle(row, x))
    }

    /// 1 in the pectoral muscle, 0 elsewhere.
    fn muscle(&self, row: f32, x: f32) -> f32 {
        self.pectoral.as_ref().map_or(0.0, |p| p.weight(row, x))
    }
}

/// An enhancing lesion: a solid ellipsoidal mass holding iodine.
struct Lesion {
    row: f32,
    x: f32,
    /// In-plane semi-axes (pixels) and the (sin, cos) of their orientation.
    a: f32,
    b: f32,
    orientation: (f32, f32),
    /// Lobulation of the border: (frequency, amplitude, phase).
    lobes: (f32, f32, f32),
    /// Extent (cm) along the beam at the centre.
    depth_cm: f32,
    /// Iodine concentration (mg/cm³).
    iodine: f32,
    /// Share of the fat within the lesion's volume that the lesion replaces by glandular-
    /// equivalent tissue: its LE mass contrast. A solid tumour displaces most of it (0.6–1);
    /// a smaller share would make every lesion invisible on LE, unlike most enhancing cancers.
    excess: f32,
    roi: RoiBox,
}

impl Lesion {
    /// Path length (cm) of the beam through the lesion at a pixel; 0 outside.
    fn chord(&self, row: f32, x: f32) -> f32 {
        let (dy, dx) = (row - self.row, x - self.x);
        let (sin, cos) = self.orientation;
        let (u, v) = ((dx * cos + dy * sin) / self.a, (dy * cos - dx * sin) / self.b);
        let (k, amp, phase) = self.lobes;
        let scale = 1.0 + amp * (k * v.atan2(u) + phase).cos();
        let q = (u * u + v * v) / (scale * scale);
        if q >= 1.0 {
            0.0
        } else {
            self.depth_cm * (1.0 - q).sqrt()
        }
    }
}

/// Everything about one case that is not per pixel.
struct Anatomy {
    rows: usize,
    cols: usize,
    chest_left: bool,
    /// Compressed thickness (cm) under the paddle.
    t0: f32,
    outline: Outline,
    parenchyma: Parenchyma,
    /// Background parenchymal enhancement (BPE): iodine (mg/cm³) in enhancing glandular tissue.
    bpe: f32,
    /// Where the glandular tissue enhances: like BI-RADS minimal-to-mild BPE, only part of it
    /// does, in patches that do not follow the density texture.
    enhancing: Texture,
}

/// The smooth per-point quantities, sampled on the coarse grid.
#[derive(Debug, Clone, Copy)]
struct Fields {
    /// Normalised radius: < 1 inside the breast.
    radius: f32,
    /// Glandular fraction of the thickness.
    gland: f32,
    /// Iodine (mg/cm³) in the glandular tissue from BPE.
    bpe: f32,
}

impl Anatomy {
    fn new(cfg: &PhantomConfig, rng: &mut SplitMix) -> Anatomy {
        let (rows, cols) = (cfg.rows as f32, cfg.cols as f32);
        let mlo = cfg.view == "MLO";
        let outline = Outline::new(rng, rows, cols, mlo);
        let pectoral = mlo.then(|| {
            // The muscle's top edge must stay within the breast's top edge at the chest wall.
            let top = (outline.cy / outline.ry_top).min(0.95);
            let top_extent = outline.rx * (1.0 - top * top).sqrt();
            Pectoral {
                width: top_extent * rng.range(0.6, 0.9),
                height: rows * rng.range(0.35, 0.6),
                band: 0.01 * rows.min(cols),
            }
        });
        let margin = 0.05 * rows.min(cols);
        Anatomy {
            rows: cfg.rows,
            cols: cfg.cols,
            chest_left: chest_wall_on_left(cfg.laterality),
            t0: rng.range(4.0, 7.0),
            outline,
            parenchyma: Parenchyma {
                texture: Texture::new(rng, cols + margin, rows + margin, 0.25),
                fine: Texture::new(rng, cols + margin, rows + margin, 0.04),
                bias: cfg.density.gland_bias(),
                pectoral,
            },
            bpe: rng.range(0.04, 0.12),
            enhancing: Texture::new(rng, cols + margin, rows + margin, 0.06),
        }
    }

    fn fields(&self, row: f32, x: f32) -> Fields {
        let radius = self.outline.radius(row, x);
        Fields {
            radius,
            gland: self.parenchyma.fraction(row, x, radius),
            // About a tenth of the glandular tissue enhances, in small foci; the muscle does not.
            bpe: self.bpe
                * sigmoid(8.0 * (self.enhancing.sample(x, row) - 1.2))
                * (1.0 - self.parenchyma.muscle(row, x)),
        }
    }

    fn col(&self, x: usize) -> usize {
        if self.chest_left {
            x
        } else {
            self.cols - 1 - x
        }
    }

    /// Places up to `count` non-overlapping lesions inside the breast, away from the skin line
    /// and the pectoral muscle.
    fn place_lesions(&self, rng: &mut SplitMix, count: usize, density: Density) -> Vec<Lesion> {
        const CANDIDATES: usize = 16;
        const TRIES: usize = 96;
        let px_cm = SHORT_SIDE_CM / self.rows.min(self.cols) as f32;
        let mut lesions: Vec<Lesion> = Vec::with_capacity(count);
        for _ in 0..count {
            let radius_cm = rng.range(0.4, 1.1);
            let a = radius_cm / px_cm;
            let b = a * rng.range(0.6, 1.0);
            let orientation = rng.range(0.0, std::f32::consts::PI).sin_cos();
            let lobes = (
                rng.range(3.0, 6.0).floor(),
                rng.range(0.0, 0.15),
                rng.range(0.0, 6.3),
            );
            let want_dense = rng.uniform() < density.dense_placement();
            // The bounding half-extents of the rotated, lobulated ellipse.
            let (sin, cos) = orientation;
            let grow = 1.0 + lobes.1;
            let half_x = grow * (a * a * cos * cos + b * b * sin * sin).sqrt();
            let half_y = grow * (a * a * sin * sin + b * b * cos * cos).sqrt();
            if 2.0 * half_y + 2.0 >= self.rows as f32 || 2.0 * half_x + 2.0 >= self.cols as f32 {
                continue;
            }
            let mut best: Option<(f32, f32, f32)> = None;
            let mut found = 0;
            for _ in 0..TRIES {
                let row = rng.range(half_y, self.rows as f32 - half_y - 1.0);
                let x = rng.range(half_x, self.cols as f32 - half_x - 1.0);
                let r = self.fields(row, x).radius;
                let in_muscle = self.parenchyma.muscle(row, x) > 0.0;
                let apart = lesions
                    .iter()
                    .all(|l| (l.row - row).hypot(l.x - x) > 1.2 * (l.a + a));
                if r > 0.72 || in_muscle || !apart {
                    continue;
                }
                found += 1;
                let gland = self.local_gland(row, x, a.min(b));
                if best.is_none_or(|(_, _, g)| gland > g) {
                    best = Some((row, x, gland));
                }
                // Anywhere will do, unless a dense spot is wanted: then the first one clearly dense
                // enough (not the densest peak, which would stand out on LE by itself).
                if !want_dense || gland >= HIDDEN_GLAND + 0.05 || found == CANDIDATES {
                    break;
                }
            }
            let Some((row, x, gland)) = best else { continue };
            let depth_cm = (a + b) * px_cm;
            let iodine = rng.range(1.5, 3.5);
            let (c0, c1) = ((x - half_x).floor() as usize, (x + half_x).ceil() as usize + 1);
            let (col0, col1) = if self.chest_left {
                (c0, c1.min(self.cols))
            } else {
                (self.cols - c1.min(self.cols), self.cols - c0)
            };
            lesions.push(Lesion {
                row,
                x,
                a,
                b,
                orientation,
                lobes,
                depth_cm,
                iodine,
                excess: rng.range(0.6, 1.0),
                roi: RoiBox {
                    row0: (row - half_y).floor() as usize,
                    col0,
                    row1: ((row + half_y).ceil() as usize + 1).min(self.rows),
                    col1,
                    hidden: gland >= HIDDEN_GLAND,
                    iodine_mg_cm2: iodine * depth_cm,
                },
            });
        }
        lesions
    }

    /// Mean glandular fraction at a point and at eight points on a circle of `radius` around it.
    fn local_gland(&self, row: f32, x: f32, radius: f32) -> f32 {
        let around: f32 = (0..8)
            .map(|k| {
                let (sin, cos) = (k as f32 * std::f32::consts::FRAC_PI_4).sin_cos();
                self.fields(row + radius * sin, x + radius * cos).gland
            })
            .sum();
        (self.fields(row, x).gland + around) / 9.0
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Simulates a case; with `gland`, also returns the glandular fraction map (for tests).
fn render(cfg: &PhantomConfig, gland: Option<&mut Vec<f32>>) -> PhantomCase {
    assert!(
        cfg.laterality == 'L' || cfg.laterality == 'R',
        "laterality must be 'L' or 'R'"
    );
    assert!(
        cfg.view == "CC" || cfg.view == "MLO",
        "view must be \"CC\" or \"MLO\""
    );
    assert!(
        cfg.rows >= 32 && cfg.cols >= 32,
        "the phantom needs at least 32×32 pixels"
    );
    let (rows, cols) = (cfg.rows, cfg.cols);
    let mut rng = SplitMix(mix(cfg.seed, 1));
    let anatomy = Anatomy::new(cfg, &mut rng);
    let lesions = anatomy.place_lesions(&mut rng, cfg.lesions, cfg.density);
    let physics = Physics::new();

    // The smooth fields on a coarse grid (nodes every `step` pixels, in x from the chest wall),
    // upsampled bilinearly per pixel: the outline and texture are far smoother than a pixel.
    let step = (rows.min(cols) / 512).max(2);
    let (grid_rows, grid_cols) = ((rows - 1) / step + 2, (cols - 1) / step + 2);
    let mut grid = Vec::with_capacity(grid_rows * grid_cols);
    for i in 0..grid_rows {
        for j in 0..grid_cols {
            grid.push(anatomy.fields((i * step) as f32, (j * step) as f32));
        }
    }
    let inv_step = 1.0 / step as f32;

    let mut le = vec![0u16; rows * cols];
    let mut rc = vec![0u16; rows * cols];
    let mut mask = vec![false; rows * cols];
    let mut gland = gland;
    if let Some(g) = gland.as_mut() {
        g.clear();
        g.resize(rows * cols, 0.0);
    }

    let pixel_area = (pixel_spacing_mm(rows, cols) / 0.1).powi(2);
    let (q_low, q_high) = (QUANTA_LOW * pixel_area, QUANTA_HIGH * pixel_area);
    let (ln_q_low, ln_q_high) = (q_low.ln(), q_high.ln());
    let (sd_low, sd_high) = (q_low.sqrt().recip(), q_high.sqrt().recip());
    let (low, high, w) = (physics.low, physics.high, physics.w);
    // What RC = ln(HE) − w·ln(LE) is for unenhanced tissue of thickness T: with w as chosen,
    // glandular and adipose tissue give the same value, so it depends on T alone.
    let rc_intercept = ln_q_high - w * ln_q_low;
    let rc_per_cm = high.adipose - w * low.adipose;
    let noise_seed = mix(cfg.seed, 2);
    let mut active: Vec<&Lesion> = Vec::new();

    for row in 0..rows {
        let mut rng = SplitMix(mix(noise_seed, row as u64));
        let (i0, ty) = (row / step, (row % step) as f32 * inv_step);
        let (upper, lower) = (&grid[i0 * grid_cols..], &grid[(i0 + 1) * grid_cols..]);
        active.clear();
        active.extend(lesions.iter().filter(|l| (l.roi.row0..l.roi.row1).contains(&row)));
        let row_f = row as f32;

        for x in 0..cols {
            let (j0, tx) = (x / step, (x % step) as f32 * inv_step);
            let (nw, ne, sw, se) = (upper[j0], upper[j0 + 1], lower[j0], lower[j0 + 1]);
            let bilinear =
                |f: fn(&Fields) -> f32| lerp(lerp(f(&nw), f(&ne), tx), lerp(f(&sw), f(&se), tx), ty);
            let r = bilinear(|f| f.radius);
            let idx = row * cols + anatomy.col(x);
            if r >= 1.0 {
                // Air: the unattenuated beam, and a flat RC background.
                let le_value = LE_OFFSET - LE_GAIN * rng.gauss() * sd_low;
                le[idx] = le_value.round().clamp(0.0, 4095.0) as u16;
                rc[idx] = RC_BACKGROUND;
                continue;
            }
            let g = bilinear(|f| f.gland);
            let t = thickness(anatomy.t0, r);
            let mut t_gland = g * t;
            let mut iodine = bilinear(|f| f.bpe) * t_gland;
            for lesion in &active {
                let chord = lesion.chord(row_f, x as f32).min(t);
                t_gland += lesion.excess * (1.0 - g) * chord;
                iodine += lesion.iodine * chord;
            }

            // Beer–Lambert, then quantum noise: ln N = ln N̄ + z/√N̄ with N̄ = Q·e^(−A).
            let a_low = low.line_integral(t, t_gland, iodine);
            let a_high = high.line_integral(t, t_gland, iodine);
            let ln_low = ln_q_low - a_low + rng.gauss() * sd_low * (0.5 * a_low).exp();
            let ln_high = ln_q_high - a_high + rng.gauss() * sd_high * (0.5 * a_high).exp();

            let equalized = ln_q_low - ln_low + PERIPHERAL_EQUALIZATION * low.adipose * (anatomy.t0 - t);
            // Iodine lowers ln(HE) more than w·ln(LE): what RC falls short of unenhanced tissue
            // of the same thickness is the enhancement, shown bright.
            let recombined = ln_high - w * ln_low;
            let enhancement = (rc_intercept - rc_per_cm * t) - recombined;
            le[idx] = (LE_OFFSET + LE_GAIN * equalized).round().clamp(0.0, 4095.0) as u16;
            rc[idx] = (RC_BASE + RC_GAIN * enhancement).round().clamp(0.0, 4095.0) as u16;
            mask[idx] = true;
            if let Some(gland) = gland.as_mut() {
                gland[idx] = g;
            }
        }
    }

    PhantomCase {
        rows,
        cols,
        le_window: le_window(&le, &mask),
        rc_window: rc_window(&physics),
        le,
        rc,
        lesions: lesions.into_iter().map(|l| l.roi).collect(),
        breast_mask: mask,
        laterality: cfg.laterality,
        view: cfg.view,
        density: cfg.density,
    }
}

/// Percentiles of the values inside the breast, from a 12-bit histogram.
struct Percentiles {
    histogram: Vec<usize>,
    total: usize,
}

impl Percentiles {
    fn new(values: &[u16], mask: &[bool]) -> Percentiles {
        let mut histogram = vec![0usize; 4096];
        for (&v, _) in values.iter().zip(mask).filter(|(_, &m)| m) {
            histogram[usize::from(v)] += 1;
        }
        let total = histogram.iter().sum();
        Percentiles { histogram, total }
    }

    fn at(&self, p: f32) -> f32 {
        let target = (p * self.total as f32) as usize;
        let mut seen = 0;
        self.histogram
            .iter()
            .position(|&n| {
                seen += n;
                seen > target
            })
            .unwrap_or(4095) as f32
    }
}

/// (center, width) spanning the 0.5th to 99.5th percentile of the breast.
fn le_window(le: &[u16], mask: &[bool]) -> (f32, f32) {
    let p = Percentiles::new(le, mask);
    let (lo, hi) = (p.at(0.005), p.at(0.995));
    ((lo + hi) / 2.0, (hi - lo).max(1.0))
}

/// (center, width) that shows unenhanced tissue at 40 % grey and [`RC_WHITE_MG_CM2`] of
/// iodine white: the same for every case, so RC values mean the same iodine everywhere.
fn rc_window(physics: &Physics) -> (f32, f32) {
    let per_mg = RC_GAIN * (physics.high.iodine - physics.w * physics.low.iodine);
    let width = RC_WHITE_MG_CM2 * per_mg / 0.6;
    (RC_BASE - 0.4 * width + width / 2.0, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        seed: u64,
        density: Density,
        lesions: usize,
        laterality: char,
        view: &'static str,
    ) -> PhantomConfig {
        PhantomConfig {
            rows: 320,
            cols: 256,
            density,
            lesions,
            laterality,
            view,
            seed,
        }
    }

    fn mean_std(values: impl Iterator<Item = f32>) -> (f32, f32) {
        let v: Vec<f32> = values.collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        (mean, var.sqrt())
    }

    fn correlation(a: &[f32], b: &[f32]) -> f32 {
        let (ma, sa) = mean_std(a.iter().copied());
        let (mb, sb) = mean_std(b.iter().copied());
        let cov = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f32>() / a.len() as f32;
        cov / (sa * sb)
    }

    #[test]
    fn deterministic_for_a_seed() {
        let cfg = config(7, Density::C, 2, 'L', "MLO");
        let (a, b) = (simulate(&cfg), simulate(&cfg));
        assert_eq!(a.le, b.le);
        assert_eq!(a.rc, b.rc);
        assert_eq!(a.lesions, b.lesions);
        assert_eq!(a.breast_mask, b.breast_mask);
        let c = simulate(&PhantomConfig { seed: 8, ..cfg });
        assert_ne!(a.le, c.le);
        assert_ne!(a.rc, c.rc);
    }

    #[test]
    fn values_are_12_bit_and_rc_background_is_flat() {
        for (seed, density) in [(1, Density::A), (2, Density::D)] {
            let case = simulate(&config(seed, density, 3, 'R', "CC"));
            assert_eq!(case.le.len(), case.rows * case.cols);
            assert!(case.le.iter().chain(&case.rc).all(|&v| v <= 4095));
            let outside: Vec<u16> = case
                .rc
                .iter()
                .zip(&case.breast_mask)
                .filter(|(_, &m)| !m)
                .map(|(&v, _)| v)
                .collect();
            assert!(!outside.is_empty());
            assert!(outside.iter().all(|&v| v == RC_BACKGROUND));
            let (center, width) = case.le_window;
            assert!(
                width > 1.0 && center > LE_OFFSET && center < 4095.0,
                "{:?}",
                case.le_window
            );
            let (center, width) = case.rc_window;
            assert!(
                (center - 0.1 * width - RC_BASE).abs() < 1.0,
                "{:?}",
                case.rc_window
            );
            assert!(width > 1000.0 && width < 4095.0, "{:?}", case.rc_window);
        }
    }

    /// The recombination weight cancels glandular-vs-adipose contrast exactly, and iodine
    /// attenuates more above the K-edge than below it.
    #[test]
    fn recombination_weight_cancels_tissue() {
        let p = Physics::new();
        let tissue = |mu: &Mu, other: &Mu| mu.glandular - p.w * other.glandular;
        let fat = |mu: &Mu, other: &Mu| mu.adipose - p.w * other.adipose;
        assert!((tissue(&p.high, &p.low) - fat(&p.high, &p.low)).abs() < 1e-6);
        assert!(p.w > 0.2 && p.w < 0.5, "w = {}", p.w);
        assert!(p.high.iodine > p.low.iodine);
        assert!(p.low.glandular > p.low.adipose && p.high.glandular > p.high.adipose);
    }

    /// Contrast-to-noise of a lesion box against a ring around it, in one image.
    fn cnr(case: &PhantomCase, image: &[u16], roi: &RoiBox) -> f32 {
        let (h, w) = (roi.row1 - roi.row0, roi.col1 - roi.col0);
        let gap = h.max(w) / 4 + 1;
        let reach = h.max(w) / 2 + gap;
        let inner =
            |r: usize, c: usize| (roi.row0..roi.row1).contains(&r) && (roi.col0..roi.col1).contains(&c);
        let near = |r: usize, c: usize, d: usize| {
            r + d >= roi.row0 && r < roi.row1 + d && c + d >= roi.col0 && c < roi.col1 + d
        };
        let others = |r: usize, c: usize| {
            case.lesions.iter().any(|o| {
                o != roi && r + gap >= o.row0 && r < o.row1 + gap && c + gap >= o.col0 && c < o.col1 + gap
            })
        };
        let (mut inside, mut ring) = (Vec::new(), Vec::new());
        for r in 0..case.rows {
            for c in 0..case.cols {
                let i = r * case.cols + c;
                if inner(r, c) {
                    inside.push(image[i] as f32);
                } else if case.breast_mask[i] && near(r, c, reach) && !near(r, c, gap) && !others(r, c) {
                    ring.push(image[i] as f32);
                }
            }
        }
        let (m_in, _) = mean_std(inside.into_iter());
        let (m_ring, sd_ring) = mean_std(ring.into_iter());
        (m_in - m_ring) / sd_ring
    }

    #[test]
    fn lesions_stand_out_in_rc_and_hide_in_le() {
        let mut hidden = 0;
        let mut total = 0;
        for seed in 0..12 {
            let density = [Density::A, Density::B, Density::C, Density::D][seed as usize % 4];
            let view = if seed % 3 == 0 { "MLO" } else { "CC" };
            let case = simulate(&config(100 + seed, density, 3, 'R', view));
            for roi in &case.lesions {
                let (rc, le) = (cnr(&case, &case.rc, roi), cnr(&case, &case.le, roi));
                assert!(rc > 2.5, "seed {seed}: RC contrast {rc} too weak for {roi:?}");
                let ratio = if roi.hidden { 0.35 } else { 0.6 };
                assert!(
                    le.abs() < ratio * rc,
                    "seed {seed}: LE contrast {le} vs RC {rc} for {roi:?}"
                );
                total += 1;
                hidden += usize::from(roi.hidden);
            }
        }
        assert!(total >= 24, "only {total} lesions placed");
        assert!(hidden >= 4, "only {hidden} of {total} lesions are hidden");
    }

    #[test]
    fn rc_suppresses_glandular_texture() {
        for (seed, density) in [(3, Density::B), (4, Density::C), (5, Density::D)] {
            let mut gland = Vec::new();
            let case = render(&config(seed, density, 0, 'L', "CC"), Some(&mut gland));
            let inside: Vec<usize> = (0..gland.len()).filter(|&i| case.breast_mask[i]).collect();
            let g: Vec<f32> = inside.iter().map(|&i| gland[i]).collect();
            let le: Vec<f32> = inside.iter().map(|&i| case.le[i] as f32).collect();
            let rc: Vec<f32> = inside.iter().map(|&i| case.rc[i] as f32).collect();
            let (c_le, c_rc) = (correlation(&le, &g), correlation(&rc, &g));
            assert!(c_le > 0.8, "LE follows the glandular map: {c_le}");
            assert!(c_rc.abs() < 0.4, "RC is nearly blind to it: {c_rc} (LE {c_le})");
        }
    }

    #[test]
    fn density_categories_order_the_glandular_fraction() {
        let mut means = Vec::new();
        for density in [Density::A, Density::B, Density::C, Density::D] {
            let mut sum = 0.0;
            for seed in 0..4 {
                let mut gland = Vec::new();
                let case = render(&config(seed, density, 0, 'R', "CC"), Some(&mut gland));
                let (m, _) = mean_std(
                    (0..gland.len())
                        .filter(|&i| case.breast_mask[i])
                        .map(|i| gland[i]),
                );
                sum += m;
            }
            means.push(sum / 4.0);
        }
        assert!(means.windows(2).all(|p| p[1] > p[0] + 0.05), "{means:?}");
        assert!(means[0] < 0.2 && means[3] > 0.4, "{means:?}");
    }

    #[test]
    fn laterality_mirrors_the_chest_wall_side() {
        let right = simulate(&config(11, Density::B, 2, 'R', "MLO"));
        let left = simulate(&config(11, Density::B, 2, 'L', "MLO"));
        let (rows, cols) = (right.rows, right.cols);
        let column =
            |case: &PhantomCase, c: usize| (0..rows).filter(|&r| case.breast_mask[r * cols + c]).count();
        assert!(column(&right, cols - 1) > rows / 2 && column(&right, 0) == 0);
        assert!(column(&left, 0) > rows / 2 && column(&left, cols - 1) == 0);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(right.le[r * cols + c], left.le[r * cols + cols - 1 - c]);
                assert_eq!(right.rc[r * cols + c], left.rc[r * cols + cols - 1 - c]);
            }
        }
        for (a, b) in right.lesions.iter().zip(&left.lesions) {
            assert_eq!(
                (a.row0, a.row1, a.col0, a.col1),
                (b.row0, b.row1, cols - b.col1, cols - b.col0)
            );
        }
    }

    #[test]
    fn case_configs_vary_deterministically() {
        let views: Vec<(char, &str)> = (0..4)
            .map(|i| case_config(5, 0, i, 64, 48))
            .map(|c| (c.laterality, c.view))
            .collect();
        assert_eq!(views, VIEWS);
        for patient in 0..20 {
            let exam: Vec<PhantomConfig> = (0..4).map(|i| case_config(5, patient, i, 64, 48)).collect();
            assert!(exam.iter().all(|c| c.density == exam[0].density));
            assert_eq!(
                exam[0].lesions, exam[2].lesions,
                "right CC and MLO show the same breast"
            );
            assert_eq!(exam[1].lesions, exam[3].lesions);
            assert_eq!(case_config(5, patient, 2, 64, 48).seed, exam[2].seed);
        }
        let densities: std::collections::HashSet<_> = (0..40)
            .map(|p| case_config(5, p, 0, 64, 48).density.as_str())
            .collect();
        assert_eq!(densities.len(), 4);
        assert_ne!(
            case_config(5, 0, 0, 64, 48).seed,
            case_config(6, 0, 0, 64, 48).seed
        );
    }
}
