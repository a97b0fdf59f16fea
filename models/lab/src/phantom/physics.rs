//! A deterministic, physics-based CESM phantom ("phantom v2"): paired low-energy (LE) and
//! recombined (RC) mammograms with annotated lesion boxes, for training, tests and demos (no
//! patient data exists here). Every physical parameter, its value and its source are listed in
//! `docs/phantom.md`; the constants below name their sources too.
//!
//! The model, in the order [`simulate`] applies it:
//! 1. **Geometry.** A breast outline (a superellipse with lobes, tilted for MLO) against the
//!    chest wall, a nipple on the outline where the nipple axis leaves it, and for MLO the
//!    pectoral muscle in the upper corner at the chest wall.
//! 2. **Tissue.** A compressed thickness that is flat under the paddle and rounds off towards the
//!    skin line, wrapped in a skin layer. Fibroglandular tissue has structure: a smooth density
//!    envelope (following the BI-RADS density category) carries ducts that branch from the
//!    nipple towards the chest wall with lobules (TDLUs) at their ends, and Cooper's ligaments
//!    as curvilinear strands near the skin. The pectoral muscle is muscle, not glandular tissue.
//! 3. **Contrast.** Lesions of four kinds, each annotated ([`LesionKind`]): enhancing masses
//!    (oval, irregular or spiculated margins), rim enhancement (iodine in a shell around a
//!    necrotic centre), non-mass enhancement (clumped foci in a segment, no mass on LE), and
//!    non-enhancing masses (cysts of fluid, fibroadenomas of glandular-equivalent tissue)
//!    that LE shows and RC does not. Enhancing vessels run from the chest wall towards the
//!    nipple. Background parenchymal enhancement (BPE) at four levels ([`Bpe`]) puts iodine in
//!    proportion to the glandular tissue, in patches and in the lobules.
//! 4. **Exposure.** Beer–Lambert attenuation with NIST mass attenuation coefficients at the
//!    effective energies of real CESM spectra (LE [`LE_KEV`] below the iodine K-edge, HE
//!    [`HE_KEV`] above it), a beam-hardening term fitted to the polyenergetic spectra, scatter
//!    (a blurred fraction of the primary that grows with thickness and energy), a slight
//!    LE/HE misregistration, and quantum noise (Gaussian approximation of Poisson statistics).
//! 5. **Recombination.** RC = ln(HE) − w·ln(LE), with w computed, as a vendor calibrates it,
//!    for a nominal breast (4.5 cm, 50 % glandular); the thickness is removed with the
//!    nominal composition's signal at the local thickness. What is left is iodine plus what
//!    a real RC also shows: residual glandular texture (beam hardening: the real composition
//!    and thickness differ from the nominal ones), the residual of the scatter correction, a
//!    bright rim at the skin line (scatter and misregistration where the signal is steep),
//!    the nipple, and noise.
//! 6. **Display.** Both images are 12-bit MONOCHROME2 For Presentation style: LE is the log
//!    attenuation (air dark, dense tissue bright, the pectoral muscle below white) with
//!    peripheral equalization; RC shows iodine bright on a grey breast and a flat darker
//!    background, on a fixed scale ([`RC_PER_MG`] stored values per mg/cm² of iodine).
//!
//! Orientation follows the DICOM convention of mammography units: a right breast has its chest
//! wall on the right edge of the image (Patient Orientation `P\L`, `P\FL`), a left breast on the
//! left edge (`A\R`, `A\FR`). Everything is computed along the distance from the chest wall, so
//! the R and L images of one seed are exact mirror images.
//!
//! Deterministic: the same [`PhantomConfig`] gives bit-identical output (a small splitmix64
//! generator, no global state). A 3328×2560 case takes under a second on one core: the smooth
//! fields live on a coarse grid that is upsampled bilinearly, thin structures (ducts, vessels,
//! spicules, non-mass foci) are drawn once into full-resolution buffers, and per pixel there is
//! one exponential and one random draw per energy.

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

/// Background parenchymal enhancement, the BI-RADS CEM lexicon's four levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bpe {
    Minimal,
    Mild,
    Moderate,
    Marked,
}

impl Bpe {
    pub fn as_str(self) -> &'static str {
        match self {
            Bpe::Minimal => "minimal",
            Bpe::Mild => "mild",
            Bpe::Moderate => "moderate",
            Bpe::Marked => "marked",
        }
    }

    /// Iodine (mg/cm³) in enhancing glandular tissue: marked BPE through a few cm of dense
    /// tissue reaches the 0.5–1 mg/cm² of a lesion, as marked BPE can hide lesions (see
    /// docs/phantom.md; a model choice scaled to the lesion values, no published per-level
    /// concentration exists).
    fn iodine_mg_cm3(self) -> f32 {
        match self {
            Bpe::Minimal => 0.02,
            Bpe::Mild => 0.06,
            Bpe::Moderate => 0.12,
            Bpe::Marked => 0.25,
        }
    }

    /// Shift of the patch texture: more of the glandular tissue enhances at higher levels
    /// (BI-RADS describes the levels by the share of glandular tissue that enhances).
    fn patch_shift(self) -> f32 {
        match self {
            Bpe::Minimal => -1.2,
            Bpe::Mild => -0.6,
            Bpe::Moderate => 0.0,
            Bpe::Marked => 0.6,
        }
    }
}

/// What one phantom image pair looks like; [`case_config`] derives one from a dataset seed.
#[derive(Debug, Clone)]
pub struct PhantomConfig {
    pub rows: usize,
    pub cols: usize,
    pub density: Density,
    /// Enhancing lesions to place (masses, rims, non-mass enhancement); fewer are placed when
    /// the breast has no room for them.
    pub lesions: usize,
    /// Non-enhancing masses (cysts, fibroadenomas) to place, besides the enhancing lesions.
    pub non_enhancing: usize,
    /// Background parenchymal enhancement level.
    pub bpe: Bpe,
    /// Whether enhancing vessels are drawn.
    pub vessels: bool,
    /// 'L' or 'R'.
    pub laterality: char,
    /// "CC" or "MLO".
    pub view: &'static str,
    pub seed: u64,
}

/// What a lesion box holds, as a radiologist would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LesionKind {
    /// An enhancing mass (oval, irregular or spiculated margins).
    #[default]
    Mass,
    /// Rim enhancement: iodine in a shell around a necrotic centre.
    Rim,
    /// Non-mass enhancement: clumped foci in a segment, no mass on LE.
    NonMass,
    /// A mass that does not enhance (cyst, fibroadenoma): on LE, not on RC.
    NonEnhancing,
}

impl LesionKind {
    /// Whether the lesion takes up iodine (what evaluation scores as a lesion ROI).
    pub fn enhances(self) -> bool {
        self != LesionKind::NonEnhancing
    }
}

/// A lesion's bounding box in pixel coordinates (ends exclusive).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoiBox {
    pub row0: usize,
    pub col0: usize,
    pub row1: usize,
    pub col1: usize,
    /// The lesion lies in dense tissue and is hard to see on LE (non-mass enhancement, which
    /// has no mass, always is).
    pub hidden: bool,
    /// Peak projected iodine (mg/cm²) through the lesion; 0 for a non-enhancing mass.
    pub iodine_mg_cm2: f32,
    /// What the box holds; "mass" when absent (files written before phantom v2).
    #[serde(default)]
    pub kind: LesionKind,
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
    pub bpe: Bpe,
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

/// A case config derived from (dataset seed, patient index, image index): density, BPE, lesion
/// counts, laterality, view all vary deterministically. Image indices 0..4 are the views of
/// [`VIEWS`] (larger indices wrap); density and BPE belong to the patient and the lesion counts
/// to the breast, so a patient's CC and MLO of one side agree.
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
    // Drawn after the v1 draws so that density and enhancing-lesion counts stay as they were.
    // BPE shares, about 45/35/14/6 % minimal/mild/moderate/marked: most women show minimal or
    // mild BPE at CESM (e.g. Sogani et al., Radiology 282:63, 2017); rounded shares.
    let bpe = match rng.uniform() {
        u if u < 0.45 => Bpe::Minimal,
        u if u < 0.8 => Bpe::Mild,
        u if u < 0.94 => Bpe::Moderate,
        _ => Bpe::Marked,
    };
    let benign_per_breast = [benign_count(rng.uniform()), benign_count(rng.uniform())];
    let (laterality, view) = VIEWS[image % VIEWS.len()];
    let side = usize::from(laterality == 'L');
    PhantomConfig {
        rows,
        cols,
        density,
        lesions: lesions_per_breast[side],
        non_enhancing: benign_per_breast[side],
        bpe,
        vessels: true,
        laterality,
        view,
        seed: mix(patient_seed, image as u64),
    }
}

/// Enhancing lesions in one breast for a uniform draw: 0 to 3, one being the most common.
fn lesion_count(u: f32) -> usize {
    match u {
        u if u < 0.2 => 0,
        u if u < 0.6 => 1,
        u if u < 0.88 => 2,
        _ => 3,
    }
}

/// Non-enhancing masses (cysts, fibroadenomas) in one breast: none in most breasts, one in a
/// quarter, two in one in ten (cysts and fibroadenomas are the commonest benign masses).
fn benign_count(u: f32) -> usize {
    match u {
        u if u < 0.65 => 0,
        u if u < 0.9 => 1,
        _ => 2,
    }
}

/// Simulates one LE/RC pair. Panics on a laterality other than 'L'/'R', a view other than
/// "CC"/"MLO", or an image smaller than 32×32.
pub fn simulate(cfg: &PhantomConfig) -> PhantomCase {
    render(cfg, None)
}

// ---------------------------------------------------------------------------------------------
// Attenuation

/// Effective energy (keV) of the low-energy exposure: the energy-weighted mean of the spectrum
/// an energy-integrating detector sees behind 4.5 cm of 50 % glandular breast, for a W/Rh beam
/// at 28 kVp (50 µm Rh, 1 mm Al), computed with SpekPy 2.5 (Poludniowski et al., Med Phys
/// 48:3630, 2021). Below the iodine K-edge.
pub const LE_KEV: f32 = 21.6;
/// Effective energy (keV) of the high-energy exposure, as [`LE_KEV`] for W at 45 kVp with
/// 0.3 mm Cu: above the iodine K-edge.
pub const HE_KEV: f32 = 37.3;
/// The iodine K-edge (keV), NIST (Hubbell & Seltzer, NISTIR 5632).
pub const IODINE_K_EDGE_KEV: f32 = 33.1694;

// The two exposures straddle the K-edge: that is what makes iodine stand out in RC.
const _: () = assert!(LE_KEV < IODINE_K_EDGE_KEV && HE_KEV > IODINE_K_EDGE_KEV);

/// Energies (keV) of the attenuation tables: the NIST grid points from 10 to 80 keV, with the
/// iodine K-edge twice (the value just below it, then just above it).
const TABLE_KEV: [f32; 10] = [
    10.0,
    15.0,
    20.0,
    30.0,
    IODINE_K_EDGE_KEV,
    IODINE_K_EDGE_KEV,
    40.0,
    50.0,
    60.0,
    80.0,
];
/// Index in [`TABLE_KEV`] of the value just above the K-edge.
const ABOVE_EDGE: usize = 5;

/// The materials of the phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Material {
    /// Adipose tissue, Hammerstein et al. (Radiology 130:485, 1979): by weight H 11.2, C 61.9,
    /// N 1.7, O 25.1 %; 0.93 g/cm³.
    Adipose,
    /// Fibroglandular tissue, Hammerstein et al. 1979: H 10.2, C 18.4, N 3.2, O 67.7, P 0.5 %;
    /// 1.04 g/cm³. Solid masses (carcinomas, fibroadenomas) are taken as glandular-equivalent
    /// (Johns & Yaffe, Phys Med Biol 32:675, 1987: within a few per cent of it).
    Glandular,
    /// Skin, ICRU Report 44 (1989): H 10.0, C 20.4, N 4.2, O 64.5, Na 0.2, P 0.1, S 0.2,
    /// Cl 0.3, K 0.1 %; 1.09 g/cm³.
    Skin,
    /// Skeletal muscle, ICRU Report 44: H 10.2, C 14.3, N 3.4, O 71.0, Na 0.1, P 0.2, S 0.3,
    /// Cl 0.1, K 0.4 %; 1.05 g/cm³.
    Muscle,
    /// Water, for cyst fluid (a simple cyst's content is water-like); 1.00 g/cm³.
    Water,
    /// Iodine (Z = 53), counted in mg/cm², not by density.
    Iodine,
}

/// Mass attenuation coefficients μ/ρ (cm²/g, coherent scattering included) at [`TABLE_KEV`].
/// Elements from NIST XCOM / Hubbell & Seltzer (NISTIR 5632, "X-Ray Mass Attenuation
/// Coefficients"); compounds by the mixture rule over the element tables with the compositions
/// of [`Material`]. The tissues have no edge here: their values at the iodine edge energy are
/// log-log interpolated between 30 and 40 keV.
const ADIPOSE_MU_RHO: [f32; 10] = [
    3.0753, 1.0248, 0.5432, 0.2989, 0.2754, 0.2754, 0.2362, 0.2105, 0.1962, 0.1794,
];
const GLANDULAR_MU_RHO: [f32; 10] = [
    4.8321, 1.5314, 0.7514, 0.3577, 0.3199, 0.3199, 0.2598, 0.2218, 0.2022, 0.1812,
];
const SKIN_MU_RHO: [f32; 10] = [
    4.9478, 1.5698, 0.7682, 0.3626, 0.3236, 0.3236, 0.2617, 0.2226, 0.2025, 0.1812,
];
const MUSCLE_MU_RHO: [f32; 10] = [
    5.3574, 1.6933, 0.8206, 0.3783, 0.3357, 0.3357, 0.2685, 0.2263, 0.2047, 0.1823,
];
const WATER_MU_RHO: [f32; 10] = [
    5.33, 1.6727, 0.8098, 0.3756, 0.3339, 0.3339, 0.2683, 0.227, 0.2058, 0.1837,
];
/// Iodine, NIST: 6.553 cm²/g just below the K-edge, 35.83 just above it.
const IODINE_MU_RHO: [f32; 10] = [162.6, 55.11, 25.43, 8.561, 6.553, 35.83, 22.1, 12.32, 7.577, 3.51];

impl Material {
    fn table(self) -> &'static [f32; 10] {
        match self {
            Material::Adipose => &ADIPOSE_MU_RHO,
            Material::Glandular => &GLANDULAR_MU_RHO,
            Material::Skin => &SKIN_MU_RHO,
            Material::Muscle => &MUSCLE_MU_RHO,
            Material::Water => &WATER_MU_RHO,
            Material::Iodine => &IODINE_MU_RHO,
        }
    }

    /// Density (g/cm³); iodine's is not used (areal densities are given directly).
    pub fn density(self) -> f32 {
        match self {
            Material::Adipose => 0.93,
            Material::Glandular => 1.04,
            Material::Skin => 1.09,
            Material::Muscle => 1.05,
            Material::Water => 1.0,
            Material::Iodine => 4.93,
        }
    }
}

/// μ/ρ (cm²/g) of a material at `kev` (10–80 keV): log-log interpolation between the two table
/// points around it, never across the iodine K-edge (below the edge the points up to the value
/// just below it, from the edge on the points from the value just above it). Panics outside
/// the table.
pub fn mass_attenuation(material: Material, kev: f32) -> f32 {
    assert!(
        (TABLE_KEV[0]..=TABLE_KEV[TABLE_KEV.len() - 1]).contains(&kev),
        "{kev} keV is outside the 10-80 keV attenuation table"
    );
    let (lo, hi) = if kev < IODINE_K_EDGE_KEV {
        (0, ABOVE_EDGE - 1)
    } else {
        (ABOVE_EDGE, TABLE_KEV.len() - 1)
    };
    let i = (lo..hi).find(|&i| kev <= TABLE_KEV[i + 1]).unwrap_or(hi - 1);
    let table = material.table();
    let t = (kev / TABLE_KEV[i]).ln() / (TABLE_KEV[i + 1] / TABLE_KEV[i]).ln();
    (table[i].ln() + t * (table[i + 1] / table[i]).ln()).exp()
}

/// Path lengths along one ray: tissues in cm, iodine in mg/cm².
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slab {
    pub adipose_cm: f32,
    pub glandular_cm: f32,
    pub skin_cm: f32,
    pub muscle_cm: f32,
    pub water_cm: f32,
    pub iodine_mg_cm2: f32,
}

/// One exposure: linear attenuation coefficients at its effective energy and its
/// beam-hardening fit.
#[derive(Debug, Clone, Copy)]
struct Beam {
    adipose: f32,
    glandular: f32,
    skin: f32,
    muscle: f32,
    water: f32,
    /// cm²/mg.
    iodine: f32,
    /// The polyenergetic log signal of tissue is `thin·A − hardening·A²` for the line integral
    /// A at the effective energy.
    thin: f32,
    hardening: f32,
}

impl Beam {
    fn new(kev: f32, thin: f32, hardening: f32) -> Beam {
        let mu = |m: Material| mass_attenuation(m, kev) * m.density();
        Beam {
            adipose: mu(Material::Adipose),
            glandular: mu(Material::Glandular),
            skin: mu(Material::Skin),
            muscle: mu(Material::Muscle),
            water: mu(Material::Water),
            iodine: mass_attenuation(Material::Iodine, kev) * 1e-3,
            thin,
            hardening,
        }
    }

    fn low() -> Beam {
        Beam::new(LE_KEV, LE_THIN, LE_HARDENING)
    }

    fn high() -> Beam {
        Beam::new(HE_KEV, HE_THIN, HE_HARDENING)
    }

    /// −ln(primary transmission) through a slab. Tissue is hardened; iodine, a thin absorber
    /// (< 0.1 attenuation length), attenuates as at the effective energy.
    fn log_attenuation(&self, s: &Slab) -> f32 {
        let a = self.adipose * s.adipose_cm
            + self.glandular * s.glandular_cm
            + self.skin * s.skin_cm
            + self.muscle * s.muscle_cm
            + self.water * s.water_cm;
        self.thin * a - self.hardening * a * a + self.iodine * s.iodine_mg_cm2
    }

    /// The log attenuation of `t` cm of the nominal breast (50 % glandular).
    fn nominal(&self, t: f32) -> f32 {
        self.log_attenuation(&Slab {
            adipose_cm: (1.0 - NOMINAL_GLAND) * t,
            glandular_cm: NOMINAL_GLAND * t,
            ..Slab::default()
        })
    }

    /// d(log attenuation)/d(glandular fraction) at thickness `t` of nominal composition.
    fn glandular_slope(&self, t: f32) -> f32 {
        let a = (self.adipose * (1.0 - NOMINAL_GLAND) + self.glandular * NOMINAL_GLAND) * t;
        (self.glandular - self.adipose) * t * (self.thin - 2.0 * self.hardening * a)
    }
}

/// Beam hardening: the SpekPy log signals of the LE and HE spectra through 1–8 cm of
/// adipose-to-glandular tissue fitted by `thin·A − hardening·A²` (least squares; largest error
/// 0.02 for LE, 0.006 for HE). `thin` > 1: thin objects see the softer incident spectrum.
const LE_THIN: f32 = 1.153;
const LE_HARDENING: f32 = 0.02275;
const HE_THIN: f32 = 1.0403;
const HE_HARDENING: f32 = 0.00778;

/// The vendor's calibration composition: 50 % glandular tissue (the usual 50/50 dosimetry
/// breast, e.g. Dance et al., Phys Med Biol 45:3225, 2000), at the compressed thickness.
const NOMINAL_GLAND: f32 = 0.5;

/// Noise-free −ln(primary transmission) of a slab at (LE, HE): what the phantom's detector
/// model applies per pixel before scatter and noise.
pub fn log_attenuation(slab: &Slab) -> (f32, f32) {
    (
        Beam::low().log_attenuation(slab),
        Beam::high().log_attenuation(slab),
    )
}

/// Both exposures and the recombination weight.
struct Physics {
    low: Beam,
    high: Beam,
    /// The weight that makes ln(HE) − w·ln(LE) blind to glandular-vs-adipose composition for
    /// a breast of nominal composition at the compressed thickness (vendors calibrate the
    /// weight per thickness); other compositions leave a residual through beam hardening.
    w: f32,
}

impl Physics {
    /// The calibration for a breast compressed to `t0` cm.
    fn new(t0: f32) -> Physics {
        let (low, high) = (Beam::low(), Beam::high());
        let w = high.glandular_slope(t0) / low.glandular_slope(t0);
        Physics { low, high, w }
    }

    /// Recombined signal of one mg/cm² of iodine.
    fn per_mg(&self) -> f32 {
        self.high.iodine - self.w * self.low.iodine
    }

    /// What the vendor subtracts at thickness `t`: the recombined signal of the nominal breast.
    fn baseline(&self, t: f32) -> f32 {
        self.high.nominal(t) - self.w * self.low.nominal(t)
    }
}

// ---------------------------------------------------------------------------------------------
// Exposure, scatter and display constants

/// Effective detected quanta per 0.1 mm pixel without attenuation, as left after the noise
/// reduction a CESM unit applies (raw counts would leave RC much noisier). Larger pixels
/// collect proportionally more, so a small phantom is as noisy as a downsampled mammogram.
const QUANTA_LOW: f32 = 4.0e5;
const QUANTA_HIGH: f32 = 2.0e5;
/// Scatter-to-primary ratio behind an anti-scatter grid, per cm of compressed breast: about
/// 0.2 (LE) and 0.25 (HE) for 5 cm. Boone et al. (Med Phys 27:2408, 2000) give SPR without a
/// grid of about 0.3–1 over 2–8 cm, rising with thickness and slightly with energy; a
/// mammography grid passes roughly a quarter to a third of the scatter.
const SPR_PER_CM_LOW: f32 = 0.04;
const SPR_PER_CM_HIGH: f32 = 0.05;
/// Width (standard deviation, cm) of the scatter point spread: scatter reaches centimetres
/// from where it arises (Boone et al. 2000 scatter kernels).
const SCATTER_SIGMA_CM: f32 = 1.5;
/// Share of the scatter left in the images the recombination uses after the vendor's scatter
/// correction (a model choice: corrections remove most scatter; what remains shows as the
/// bright RC rim at the skin line, documented in docs/phantom.md).
const SCATTER_RESIDUAL: f32 = 0.1;
/// Largest LE/HE misregistration (mm): patient motion between the two exposures, taken about a
/// second apart, shifts the HE image by up to one or two 0.1 mm pixels.
const MISREGISTRATION_MM: f32 = 0.15;
/// LE stored value = offset + gain · log attenuation: air is dark, 8 cm of muscle stays below
/// 4095.
const LE_OFFSET: f32 = 60.0;
const LE_GAIN: f32 = 620.0;
/// Share of the thickness fall-off at the skin line that LE processing compensates (peripheral
/// equalization), so the breast edge is not much darker than its middle.
const PERIPHERAL_EQUALIZATION: f32 = 0.8;
/// RC outside the breast.
const RC_BACKGROUND: u16 = 200;
/// RC of unenhanced breast tissue of the nominal composition.
const RC_BASE: f32 = 1000.0;
/// RC stored values per mg/cm² of iodine.
pub const RC_PER_MG: f32 = 400.0;
/// Iodine (mg/cm²) that the RC window shows white.
const RC_WHITE_MG_CM2: f32 = 3.0;

// ---------------------------------------------------------------------------------------------
// Anatomy constants

/// Normalised radius where the compressed thickness starts to round off towards the skin.
const EDGE_START: f32 = 0.82;
/// Normalised width of the subcutaneous fat layer.
const SUBCUTANEOUS: f32 = 0.12;
/// Skin thickness (cm): 1.45 mm mean from breast CT (Huang et al., Med Phys 35:1199, 2008).
const SKIN_CM: f32 = 0.145;
/// How dense a region is: sigmoid(STEEPNESS · (texture + density bias + centre)), between fat
/// (fraction ≤ STROMA) and dense tissue (fraction ≤ GLAND_MAX).
const GLAND_MAX: f32 = 0.85;
const GLAND_STEEPNESS: f32 = 2.2;
const CENTRE_WEIGHT: f32 = 0.8;
/// Largest glandular fraction of fibrous strands in fat, and largest share of dense tissue that
/// fat lobules take.
const STROMA: f32 = 0.15;
const FAT_LOBULES: f32 = 0.4;
/// Glandular fraction that Cooper's ligaments add where they run.
const LIGAMENT: f32 = 0.15;
/// A lesion whose surroundings are at least this glandular is flagged hidden.
const HIDDEN_GLAND: f32 = 0.5;
/// Peak projected iodine (mg/cm²) of enhancing lesions: about 0.5–2 mg/cm², the clinical range
/// of enhancing lesions at dual-energy mammography (Lewin et al., Radiology 229:261, 2003;
/// Dromain et al., Breast Cancer Res 13:R2, 2011 for the CESM protocol and uptake).
const LESION_IODINE_MG_CM2: (f32, f32) = (0.5, 2.0);
/// Iodine concentration (mg/cm³) of blood during a CESM exam: 1.5 mL/kg of 300 mgI/mL contrast
/// (Dromain et al., Eur Radiol 2009; Jochelson et al., Radiology 266:743, 2013) diluted in
/// blood and extracellular space gives a few mg/mL a few minutes after injection (estimate).
const BLOOD_IODINE_MG_CM3: f32 = 3.0;
/// Normal nipple-areolar enhancement (mg/cm²): the nipple often enhances a little on CESM and
/// contrast MRI (a model choice of magnitude, documented in docs/phantom.md).
const NIPPLE_IODINE_MG_CM2: f32 = 0.3;
/// Iodine (mg/cm³) in the pectoral muscle: perfused muscle takes up a little contrast and shows
/// faintly on clinical RC (a model choice of magnitude: about a tenth of blood's concentration,
/// the muscle's extracellular share; documented in docs/phantom.md).
const MUSCLE_IODINE_MG_CM3: f32 = 0.1;

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
    /// rather than anywhere: LE, like full-field digital mammography, shows most of the
    /// cancers that CESM shows, and misses more of them the denser the breast.
    fn dense_placement(self) -> f32 {
        match self {
            Density::A => 0.05,
            Density::B => 0.15,
            Density::C => 0.3,
            Density::D => 0.5,
        }
    }

    /// Main ducts from the nipple: more in denser breasts.
    fn ducts(self) -> usize {
        match self {
            Density::A => 5,
            Density::B => 7,
            Density::C => 9,
            Density::D => 11,
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

/// Projected skin path (cm) at normalised radius `r` where the breast is `t` cm thick: twice the
/// skin under the paddle, more towards the skin line where the beam runs tangentially through
/// the rounded edge (the chord through the outer minus the chord through the inner surface of
/// the skin shell, the edge taken as an ellipse `edge_cm` wide and `t0` thick).
fn skin_path(t0: f32, t: f32, r: f32, edge_cm: f32) -> f32 {
    if t <= 0.0 {
        return 0.0;
    }
    let inner_t0 = (t0 - 2.0 * SKIN_CM).max(0.0);
    let inner = if r <= EDGE_START {
        inner_t0
    } else {
        let q = (r - EDGE_START) / (1.0 - EDGE_START) * edge_cm / (edge_cm - SKIN_CM).max(1e-3);
        inner_t0 * (1.0 - q * q).max(0.0).sqrt()
    };
    (t - inner).clamp(0.0, t)
}

/// Where the fibroglandular tissue is: a smooth envelope with Cooper's ligaments.
struct Parenchyma {
    texture: Texture,
    fine: Texture,
    /// Wobbles the ligament arcs and breaks them into pieces.
    ligaments: Texture,
    bias: f32,
    pectoral: Option<Pectoral>,
}

impl Parenchyma {
    /// Fraction of the thickness that is glandular at a point of normalised radius r.
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
        // Cooper's ligaments: thin curvilinear strands roughly parallel to the skin line in the
        // outer breast, where they suspend the parenchyma from the skin; broken into pieces.
        let wobble = self.ligaments.sample(x, row);
        let phase = 7.0 * r + 0.25 * wobble;
        let strand = (-((phase - phase.round()) / 0.04).powi(2)).exp();
        let outer = smoothstep((r - 0.55) / 0.2) * smoothstep((0.97 - r) / 0.05);
        let pieces = smoothstep(2.0 * self.ligaments.sample(row, x));
        (g + LIGAMENT * strand * outer * pieces).min(GLAND_MAX)
    }

    /// 1 in the pectoral muscle, 0 elsewhere.
    fn muscle(&self, row: f32, x: f32) -> f32 {
        self.pectoral.as_ref().map_or(0.0, |p| p.weight(row, x))
    }
}

/// A lesion drawn per pixel from its ellipsoid: a mass, a rim or a non-enhancing mass.
struct Lesion {
    row: f32,
    x: f32,
    /// In-plane semi-axes (pixels) and the (sin, cos) of their orientation.
    a: f32,
    b: f32,
    orientation: (f32, f32),
    /// Border modulation: two (frequency, amplitude, phase) harmonics; larger amplitudes make
    /// an irregular margin.
    lobes: [(f32, f32, f32); 2],
    /// Extent (cm) along the beam at the centre.
    depth_cm: f32,
    /// Iodine concentration (mg/cm³).
    iodine: f32,
    /// For a rim: the necrotic centre's size relative to the lesion (0: solid).
    core: f32,
    /// Share of the fat within the lesion's volume that the lesion replaces by glandular-
    /// equivalent tissue: its LE mass contrast. A solid tumour displaces most of it (0.6–1).
    excess: f32,
    /// Fluid (a cyst) instead of solid tissue.
    fluid: bool,
    roi: RoiBox,
}

impl Lesion {
    /// Path length (cm) of the beam through the ellipsoid scaled by `scale` at a pixel.
    fn chord_scaled(&self, row: f32, x: f32, scale: f32) -> f32 {
        let (dy, dx) = (row - self.row, x - self.x);
        let (sin, cos) = self.orientation;
        let (u, v) = ((dx * cos + dy * sin) / self.a, (dy * cos - dx * sin) / self.b);
        let theta = v.atan2(u);
        let border = 1.0
            + self
                .lobes
                .iter()
                .map(|&(k, amp, phase)| amp * (k * theta + phase).cos())
                .sum::<f32>();
        let s = border * scale;
        let q = (u * u + v * v) / (s * s);
        if q >= 1.0 {
            0.0
        } else {
            self.depth_cm * scale * (1.0 - q).sqrt()
        }
    }

    /// (tissue chord, iodine chord) in cm at a pixel.
    fn chords(&self, row: f32, x: f32) -> (f32, f32) {
        let outer = self.chord_scaled(row, x, 1.0);
        if outer == 0.0 || self.iodine == 0.0 {
            return (outer, 0.0);
        }
        let inner = if self.core > 0.0 {
            self.chord_scaled(row, x, self.core)
        } else {
            0.0
        };
        (outer, outer - inner)
    }

    /// Half extents (rows, x) of the bounding box.
    fn half_extents(a: f32, b: f32, orientation: (f32, f32), grow: f32) -> (f32, f32) {
        let (sin, cos) = orientation;
        (
            grow * (a * a * sin * sin + b * b * cos * cos).sqrt(),
            grow * (a * a * cos * cos + b * b * sin * sin).sqrt(),
        )
    }
}

/// Full-resolution buffers (chest-wall coordinates) of thin structures: extra glandular path
/// (cm) from ducts, lobules and spicules, and iodine (mg/cm²) from vessels, lobules' BPE and
/// non-mass foci.
struct Thin {
    rows: usize,
    cols: usize,
    gland: Vec<f32>,
    iodine: Vec<f32>,
}

impl Thin {
    fn new(rows: usize, cols: usize) -> Thin {
        Thin {
            rows,
            cols,
            gland: vec![0.0; rows * cols],
            iodine: vec![0.0; rows * cols],
        }
    }

    /// Adds a cylinder of radius `radius` (pixels) from `p` to `q` ((row, x) pixels) to both
    /// buffers: `gland` cm of glandular path and `iodine` mg/cm² per cm of chord through it. A
    /// segment of zero length is a sphere. Chords are in cm with `px_cm` per pixel.
    #[allow(clippy::too_many_arguments)]
    fn tube(&mut self, p: (f32, f32), q: (f32, f32), radius: f32, gland: f32, iodine: f32, px_cm: f32) {
        let (r0, r1) = (p.0.min(q.0) - radius, p.0.max(q.0) + radius);
        let (x0, x1) = (p.1.min(q.1) - radius, p.1.max(q.1) + radius);
        let (row0, row1) = (
            r0.floor().max(0.0) as usize,
            (r1.ceil() as usize + 1).min(self.rows),
        );
        let (col0, col1) = (
            x0.floor().max(0.0) as usize,
            (x1.ceil() as usize + 1).min(self.cols),
        );
        let (dr, dx) = (q.0 - p.0, q.1 - p.1);
        let len2 = dr * dr + dx * dx;
        for row in row0..row1 {
            for x in col0..col1 {
                let (pr, px) = (row as f32 - p.0, x as f32 - p.1);
                let t = if len2 > 0.0 {
                    ((pr * dr + px * dx) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let d2 = (pr - t * dr).powi(2) + (px - t * dx).powi(2);
                if d2 < radius * radius {
                    let chord = 2.0 * (radius * radius - d2).sqrt() * px_cm;
                    let i = row * self.cols + x;
                    // Overlapping segments share tissue rather than stacking at their joints.
                    self.gland[i] = self.gland[i].max(gland * chord);
                    self.iodine[i] = self.iodine[i].max(iodine * chord);
                }
            }
        }
    }
}

/// Everything about one case that is not per pixel.
struct Anatomy {
    rows: usize,
    cols: usize,
    chest_left: bool,
    /// Pixel size (cm).
    px_cm: f32,
    /// Compressed thickness (cm) under the paddle.
    t0: f32,
    outline: Outline,
    parenchyma: Parenchyma,
    /// The nipple (row, x) and its radius (pixels).
    nipple: (f32, f32, f32),
    /// BPE: iodine (mg/cm³) in enhancing glandular tissue, and where it enhances.
    bpe: f32,
    bpe_shift: f32,
    enhancing: Texture,
}

/// The smooth per-point quantities, sampled on the coarse grid.
#[derive(Debug, Clone, Copy, Default)]
struct Fields {
    /// Normalised radius: < 1 inside the breast.
    radius: f32,
    /// Glandular fraction of the thickness outside the muscle.
    gland: f32,
    /// Muscle fraction of the thickness.
    muscle: f32,
    /// Iodine (mg/cm³) in the glandular tissue from BPE.
    bpe: f32,
    /// ln(1 + S/P) at LE and HE: scatter in the detected signal.
    scatter_low: f32,
    scatter_high: f32,
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
        let px_cm = SHORT_SIDE_CM / rows.min(cols);
        let t0 = rng.range(4.0, 7.0);
        let texture = Texture::new(rng, cols + margin, rows + margin, 0.25);
        let fine = Texture::new(rng, cols + margin, rows + margin, 0.04);
        let ligaments = Texture::new(rng, cols.max(rows) + margin, cols.max(rows) + margin, 0.12);
        let enhancing = Texture::new(rng, cols + margin, rows + margin, 0.06);
        // The nipple sits on the skin line where the nipple axis leaves the breast; about
        // 0.5 cm in radius.
        let (sin, cos) = outline.tilt;
        let mut reach = outline.rx;
        while reach > 1.0 && outline.radius(outline.cy + reach * sin, reach * cos) > 0.97 {
            reach -= 0.5;
        }
        let nipple = (outline.cy + reach * sin, reach * cos, 0.5 / px_cm);
        Anatomy {
            rows: cfg.rows,
            cols: cfg.cols,
            chest_left: chest_wall_on_left(cfg.laterality),
            px_cm,
            t0,
            outline,
            parenchyma: Parenchyma {
                texture,
                fine,
                ligaments,
                bias: cfg.density.gland_bias(),
                pectoral,
            },
            nipple,
            bpe: cfg.bpe.iodine_mg_cm3(),
            bpe_shift: cfg.bpe.patch_shift(),
            enhancing,
        }
    }

    fn fields(&self, row: f32, x: f32) -> Fields {
        let radius = self.outline.radius(row, x);
        let muscle = self.parenchyma.muscle(row, x);
        // BPE in patches that cover more of the glandular tissue at higher levels; the muscle
        // does not take part.
        let patch = sigmoid(4.0 * (self.enhancing.sample(x, row) + self.bpe_shift));
        Fields {
            radius,
            gland: self.parenchyma.fraction(row, x, radius),
            muscle,
            bpe: self.bpe * patch * (1.0 - muscle),
            ..Fields::default()
        }
    }

    fn col(&self, x: usize) -> usize {
        if self.chest_left {
            x
        } else {
            self.cols - 1 - x
        }
    }

    /// Image columns [col0, col1) of chest-wall coordinates [x0, x1).
    fn cols_of(&self, x0: usize, x1: usize) -> (usize, usize) {
        let x1 = x1.min(self.cols);
        if self.chest_left {
            (x0, x1)
        } else {
            (self.cols - x1, self.cols - x0)
        }
    }

    /// Ducts branching from the nipple towards the chest wall, lobules (TDLUs) at their ends
    /// and along them, drawn into `thin`. Main ducts are about 2 mm wide near the nipple and
    /// narrow at each branching (Going & Moffat, J Pathol 203:538, 2004, on the duct tree).
    fn draw_ducts(&self, rng: &mut SplitMix, thin: &mut Thin, density: Density) {
        let px = self.px_cm;
        let (sin, cos) = self.outline.tilt;
        // Backwards along the nipple axis, towards the chest wall.
        let back = (-sin, -cos);
        let base_angle = back.0.atan2(back.1);
        let mut stack: Vec<((f32, f32), f32, f32, usize)> = (0..density.ducts())
            .map(|_| {
                let angle = base_angle + rng.range(-0.9, 0.9);
                ((self.nipple.0, self.nipple.1), angle, 0.12 / px, 0)
            })
            .collect();
        let step = 0.5 / px;
        let mut segments = 0;
        while let Some((mut p, mut angle, radius, depth)) = stack.pop() {
            let steps = 4 + (rng.uniform() * 6.0) as usize;
            for _ in 0..steps {
                if segments > 3000 {
                    return;
                }
                angle += rng.range(-0.25, 0.25);
                let q = (p.0 + step * angle.sin(), p.1 + step * angle.cos());
                let r = self.outline.radius(q.0, q.1);
                if r >= 0.98 || q.1 < 0.0 || self.parenchyma.muscle(q.0, q.1) > 0.0 {
                    break;
                }
                let g = self.parenchyma.fraction(q.0, q.1, r);
                // The duct and its periductal stroma: a wider, fainter sleeve.
                thin.tube(p, q, (4.0 * radius).max(1.0), 0.5, 0.0, px);
                thin.tube(p, q, radius.max(0.6), 1.0, 0.0, px);
                segments += 1;
                if rng.uniform() < 0.3 * (0.3 + g) {
                    // A lobule beside the duct: a cluster of acini about 1–2 mm across, whose
                    // tissue takes part in BPE.
                    let l = (
                        q.0 + rng.range(-2.0, 2.0) * radius,
                        q.1 + rng.range(-2.0, 2.0) * radius,
                    );
                    let lr = rng.range(0.05, 0.1) / px;
                    thin.tube(l, l, lr.max(0.8), 1.0, 2.0 * self.bpe, px);
                }
                p = q;
            }
            if depth < 4 && rng.uniform() < 0.85 {
                for side in [-1.0, 1.0] {
                    stack.push((p, angle + side * rng.range(0.2, 0.6), radius * 0.75, depth + 1));
                }
            } else {
                let lr = rng.range(0.08, 0.15) / px;
                thin.tube(p, p, lr.max(0.8), 0.8, 2.0 * self.bpe, px);
            }
        }
    }

    /// Enhancing vessels: from the chest wall (or the axilla in MLO) towards the nipple, about
    /// 1–2 mm wide, with blood's iodine concentration.
    fn draw_vessels(&self, rng: &mut SplitMix, thin: &mut Thin) {
        let px = self.px_cm;
        let count = 2 + (rng.uniform() * 3.0) as usize;
        for _ in 0..count {
            let mut p = (
                self.outline.cy + rng.range(-0.6, 0.6) * self.outline.ry_bottom.min(self.outline.ry_top),
                1.0,
            );
            let mut angle = (self.nipple.0 - p.0).atan2(self.nipple.1 - p.1) + rng.range(-0.5, 0.5);
            let radius = rng.range(0.05, 0.1) / px;
            let step = 0.4 / px;
            for _ in 0..60 {
                angle += rng.range(-0.2, 0.2);
                let q = (p.0 + step * angle.sin(), p.1 + step * angle.cos());
                if self.outline.radius(q.0, q.1) >= 0.93 {
                    break;
                }
                if self.parenchyma.muscle(q.0, q.1) == 0.0 {
                    thin.tube(p, q, radius.max(0.5), 0.0, BLOOD_IODINE_MG_CM3, px);
                }
                p = q;
            }
        }
    }

    /// Places up to `count` non-overlapping lesions of the kinds `kind` draws inside the breast,
    /// away from the skin line and the pectoral muscle, after `placed`.
    fn place_lesions(
        &self,
        rng: &mut SplitMix,
        count: usize,
        density: Density,
        placed: &mut Vec<Lesion>,
        thin: &mut Thin,
        enhancing: bool,
    ) -> Vec<RoiBox> {
        const CANDIDATES: usize = 16;
        const TRIES: usize = 96;
        let px_cm = self.px_cm;
        let mut boxes = Vec::new();
        for _ in 0..count {
            let kind = if enhancing {
                match rng.uniform() {
                    u if u < 0.6 => LesionKind::Mass,
                    u if u < 0.75 => LesionKind::Rim,
                    _ => LesionKind::NonMass,
                }
            } else {
                LesionKind::NonEnhancing
            };
            let cyst = kind == LesionKind::NonEnhancing && rng.uniform() < 0.5;
            let radius_cm = match kind {
                LesionKind::NonMass => rng.range(0.8, 1.8),
                _ if cyst => rng.range(0.4, 1.0),
                _ => rng.range(0.4, 1.1),
            };
            let a = radius_cm / px_cm;
            let b = a * match kind {
                LesionKind::NonMass => rng.range(0.35, 0.6),
                _ if cyst => rng.range(0.8, 1.0),
                _ => rng.range(0.6, 1.0),
            };
            let orientation = rng.range(0.0, std::f32::consts::PI).sin_cos();
            // Margins: oval (smooth), irregular (strong lobulation) or spiculated (irregular
            // with spicules); cysts are smooth, fibroadenomas oval or gently lobulated.
            let margin = rng.uniform();
            let (amp1, amp2) = match kind {
                LesionKind::Mass if margin >= 0.35 => (rng.range(0.08, 0.2), rng.range(0.04, 0.1)),
                _ if cyst => (rng.range(0.0, 0.03), 0.0),
                _ => (rng.range(0.0, 0.08), rng.range(0.0, 0.03)),
            };
            let spiculated = kind == LesionKind::Mass && margin >= 0.7;
            let lobes = [
                (rng.range(2.0, 5.0).floor(), amp1, rng.range(0.0, 6.3)),
                (rng.range(5.0, 9.0).floor(), amp2, rng.range(0.0, 6.3)),
            ];
            let want_dense = rng.uniform() < density.dense_placement();
            let grow = 1.0 + amp1 + amp2 + if spiculated { 0.8 } else { 0.0 };
            let (half_y, half_x) = Lesion::half_extents(a, b, orientation, grow);
            if 2.0 * half_y + 2.0 >= self.rows as f32 || 2.0 * half_x + 2.0 >= self.cols as f32 {
                continue;
            }
            let mut best: Option<(f32, f32, f32)> = None;
            let mut found = 0;
            for _ in 0..TRIES {
                let row = rng.range(half_y, self.rows as f32 - half_y - 1.0);
                let x = rng.range(half_x, self.cols as f32 - half_x - 1.0);
                let r = self.outline.radius(row, x);
                let in_muscle = self.parenchyma.muscle(row, x) > 0.0;
                let apart = placed
                    .iter()
                    .all(|l| (l.row - row).hypot(l.x - x) > 1.2 * (l.a + a) * grow);
                if r > 0.72 || in_muscle || !apart {
                    continue;
                }
                found += 1;
                let gland = self.local_gland(row, x, a.min(b));
                if best.is_none_or(|(_, _, g)| gland > g) {
                    best = Some((row, x, gland));
                }
                // Anywhere will do, unless a dense spot is wanted: then the first one clearly
                // dense enough (not the densest peak, which would stand out on LE by itself).
                if !want_dense || gland >= HIDDEN_GLAND + 0.05 || found == CANDIDATES {
                    break;
                }
            }
            let Some((row, x, gland)) = best else { continue };
            let depth_cm = (a + b) * px_cm;
            let peak = rng.range(LESION_IODINE_MG_CM2.0, LESION_IODINE_MG_CM2.1);
            let core = if kind == LesionKind::Rim {
                rng.range(0.55, 0.75)
            } else {
                0.0
            };
            let (x0, x1) = ((x - half_x).floor() as usize, (x + half_x).ceil() as usize + 1);
            let (col0, col1) = self.cols_of(x0, x1);
            let roi = RoiBox {
                row0: (row - half_y).floor() as usize,
                col0,
                row1: ((row + half_y).ceil() as usize + 1).min(self.rows),
                col1,
                hidden: kind == LesionKind::NonMass || gland >= HIDDEN_GLAND,
                iodine_mg_cm2: if kind.enhances() { peak } else { 0.0 },
                kind,
            };
            // A rim's projected iodine peaks where the beam grazes the necrotic centre.
            let iodine = match kind {
                LesionKind::NonEnhancing | LesionKind::NonMass => 0.0,
                _ => peak / (depth_cm * (1.0 - core * core).sqrt()),
            };
            if kind == LesionKind::NonMass {
                // Clumped foci along a segment pointing to the nipple: small spheres of iodine
                // in the glandular tissue, without a mass.
                let foci = 8 + (rng.uniform() * 12.0) as usize;
                let (sin, cos) = orientation;
                for _ in 0..foci {
                    let (u, v) = (rng.range(-1.0, 1.0) * a, rng.range(-1.0, 1.0) * b);
                    if (u / a).powi(2) + (v / b).powi(2) > 1.0 {
                        continue;
                    }
                    let c = (row + u * sin + v * cos, x + u * cos - v * sin);
                    let fr = rng.range(0.1, 0.25) / px_cm;
                    // Peak areal iodine of a focus = concentration × its diameter.
                    let conc = peak / (2.0 * fr * px_cm);
                    thin.tube(c, c, fr.max(0.8), 0.0, conc * rng.range(0.6, 1.0), px_cm);
                }
            }
            if spiculated {
                // Spicules: thin strands of tissue radiating from the mass, about as long as
                // its radius.
                let n = 8 + (rng.uniform() * 10.0) as usize;
                for k in 0..n {
                    let angle = k as f32 * std::f32::consts::TAU / n as f32 + rng.range(-0.2, 0.2);
                    let start = (row + 0.8 * b * angle.sin(), x + 0.8 * a * angle.cos());
                    let len = rng.range(0.9, 1.7) * a;
                    let end = (row + len * angle.sin(), x + len * angle.cos());
                    thin.tube(start, end, (0.02 / px_cm).max(0.6), 1.0, 0.0, px_cm);
                }
            }
            placed.push(Lesion {
                row,
                x,
                a,
                b,
                orientation,
                lobes,
                depth_cm,
                iodine,
                core,
                excess: match kind {
                    LesionKind::NonMass => 0.0,
                    _ => rng.range(0.6, 1.0),
                },
                fluid: cyst,
                roi: roi.clone(),
            });
            boxes.push(roi);
        }
        boxes
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

/// Per-pixel maps for tests: glandular fraction and muscle weight, in image coordinates.
#[derive(Debug, Default)]
struct Maps {
    gland: Vec<f32>,
    muscle: Vec<f32>,
}

/// Blurs a grid of `rows` × `cols` in place: three box passes per axis approximate a Gaussian
/// of standard deviation `sigma` nodes; the image edges repeat the edge value.
fn blur(values: &mut [f32], rows: usize, cols: usize, sigma: f32) {
    let half = (((4.0 * sigma * sigma + 1.0).sqrt() - 1.0) / 2.0)
        .round()
        .max(1.0) as isize;
    let width = (2 * half + 1) as f32;
    let mut line = Vec::new();
    let pass = |get: &mut dyn FnMut(usize) -> f32, n: usize, line: &mut Vec<f32>| {
        line.clear();
        line.extend((0..n).map(get));
        for _ in 0..3 {
            let at = |i: isize| line[i.clamp(0, n as isize - 1) as usize];
            let mut sum: f32 = (-half..=half).map(at).sum();
            let mut out = Vec::with_capacity(n);
            for i in 0..n as isize {
                out.push(sum / width);
                sum += at(i + half + 1) - at(i - half);
            }
            *line = out;
        }
    };
    for r in 0..rows {
        pass(&mut |c| values[r * cols + c], cols, &mut line);
        values[r * cols..(r + 1) * cols].copy_from_slice(&line);
    }
    for c in 0..cols {
        pass(&mut |r| values[r * cols + c], rows, &mut line);
        for (r, v) in line.iter().enumerate() {
            values[r * cols + c] = *v;
        }
    }
}

/// Simulates a case; with `maps`, also returns per-pixel maps (for tests).
fn render(cfg: &PhantomConfig, maps: Option<&mut Maps>) -> PhantomCase {
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
    let mut thin = Thin::new(rows, cols);
    let mut lesions = Vec::new();
    let mut boxes = anatomy.place_lesions(&mut rng, cfg.lesions, cfg.density, &mut lesions, &mut thin, true);
    boxes.extend(anatomy.place_lesions(
        &mut rng,
        cfg.non_enhancing,
        cfg.density,
        &mut lesions,
        &mut thin,
        false,
    ));
    let mut structure_rng = SplitMix(mix(cfg.seed, 3));
    anatomy.draw_ducts(&mut structure_rng, &mut thin, cfg.density);
    if cfg.vessels {
        anatomy.draw_vessels(&mut structure_rng, &mut thin);
    }
    let (t0, px_cm) = (anatomy.t0, anatomy.px_cm);
    let physics = Physics::new(t0);
    let (low, high, w) = (physics.low, physics.high, physics.w);
    let edge_cm = (1.0 - EDGE_START) * anatomy.outline.rx * px_cm;

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
    // Scatter: every point of the breast scatters SPR(t0) times its primary, spread by the
    // scatter kernel; S/P is then that blurred field over the local primary.
    let sigma = SCATTER_SIGMA_CM / (px_cm * step as f32);
    for (spr, beam, high_energy) in [
        (SPR_PER_CM_LOW * t0, &low, false),
        (SPR_PER_CM_HIGH * t0, &high, true),
    ] {
        let primary: Vec<f32> = grid
            .iter()
            .map(|f| {
                let t = thickness(t0, f.radius);
                let slab = Slab {
                    adipose_cm: (1.0 - f.gland) * (1.0 - f.muscle) * t,
                    glandular_cm: f.gland * (1.0 - f.muscle) * t,
                    muscle_cm: f.muscle * t,
                    ..Slab::default()
                };
                (-beam.log_attenuation(&slab)).exp()
            })
            .collect();
        let mut scatter: Vec<f32> = grid
            .iter()
            .zip(&primary)
            .map(|(f, p)| if f.radius < 1.0 { spr * p } else { 0.0 })
            .collect();
        blur(&mut scatter, grid_rows, grid_cols, sigma);
        for ((f, p), s) in grid.iter_mut().zip(&primary).zip(&scatter) {
            let term = (s / p).ln_1p();
            if high_energy {
                f.scatter_high = term;
            } else {
                f.scatter_low = term;
            }
        }
    }
    // What scatter the recombination sees in the nominal interior, which its calibration removes.
    let scatter_nominal = (
        (SCATTER_RESIDUAL * SPR_PER_CM_LOW * t0).ln_1p(),
        (SCATTER_RESIDUAL * SPR_PER_CM_HIGH * t0).ln_1p(),
    );
    let inv_step = 1.0 / step as f32;
    let sample = |row: usize, x: usize| -> (Fields, f32) {
        let (i0, ty) = (row / step, (row % step) as f32 * inv_step);
        let (j0, tx) = (x / step, (x % step) as f32 * inv_step);
        let (nw, ne) = (grid[i0 * grid_cols + j0], grid[i0 * grid_cols + j0 + 1]);
        let (sw, se) = (
            grid[(i0 + 1) * grid_cols + j0],
            grid[(i0 + 1) * grid_cols + j0 + 1],
        );
        let bl = |f: fn(&Fields) -> f32| lerp(lerp(f(&nw), f(&ne), tx), lerp(f(&sw), f(&se), tx), ty);
        // Air, about half of the image, needs nothing else.
        let radius = bl(|f| f.radius);
        if radius >= 1.0 {
            return (
                Fields {
                    radius,
                    ..Fields::default()
                },
                0.0,
            );
        }
        let fields = Fields {
            radius,
            gland: bl(|f| f.gland),
            muscle: bl(|f| f.muscle),
            bpe: bl(|f| f.bpe),
            scatter_low: bl(|f| f.scatter_low),
            scatter_high: bl(|f| f.scatter_high),
        };
        (fields, thickness(t0, fields.radius))
    };

    // Pass 1, noise-free primary log attenuation of HE (chest-wall coordinates), so that pass 2
    // can read it shifted by the misregistration.
    let mut high_att = vec![0.0f32; rows * cols];
    let mut low_att = vec![0.0f32; rows * cols];
    let mut active: Vec<&Lesion> = Vec::new();
    let (nipple_row, nipple_x, nipple_r) = anatomy.nipple;
    for row in 0..rows {
        active.clear();
        active.extend(lesions.iter().filter(|l| (l.roi.row0..l.roi.row1).contains(&row)));
        let row_f = row as f32;
        for x in 0..cols {
            let (f, t) = sample(row, x);
            if f.radius >= 1.0 {
                continue;
            }
            let i = row * cols + x;
            let skin = skin_path(t0, t, f.radius, edge_cm);
            let muscle = f.muscle * (t - skin);
            let inner = t - skin - muscle;
            let mut gland = f.gland * inner + thin.gland[i];
            let mut water = 0.0;
            let mut iodine = f.bpe * f.gland * inner + thin.iodine[i];
            for lesion in &active {
                let (tissue, uptake) = lesion.chords(row_f, x as f32);
                if tissue == 0.0 {
                    continue;
                }
                let tissue = tissue.min(inner);
                if lesion.fluid {
                    // A cyst's fluid displaces both fat and glandular tissue.
                    water += tissue;
                    gland -= f.gland * tissue;
                } else {
                    gland += lesion.excess * (1.0 - f.gland) * tissue;
                }
                iodine += lesion.iodine * uptake.min(inner);
            }
            let (dr, dx) = (row_f - nipple_row, x as f32 - nipple_x);
            let nipple = (1.0 - (dr * dr + dx * dx) / (nipple_r * nipple_r))
                .max(0.0)
                .sqrt();
            iodine += NIPPLE_IODINE_MG_CM2 * nipple + MUSCLE_IODINE_MG_CM3 * muscle;
            let gland = gland.clamp(0.0, inner - water);
            let slab = Slab {
                adipose_cm: inner - water - gland,
                glandular_cm: gland,
                skin_cm: skin,
                muscle_cm: muscle,
                water_cm: water,
                iodine_mg_cm2: iodine,
            };
            low_att[i] = low.log_attenuation(&slab);
            high_att[i] = high.log_attenuation(&slab);
        }
    }

    // Pass 2: scatter, misregistration, noise, recombination and display.
    let pixel_area = (pixel_spacing_mm(rows, cols) / 0.1).powi(2);
    let (q_low, q_high) = (QUANTA_LOW * pixel_area, QUANTA_HIGH * pixel_area);
    let (sd_low, sd_high) = (q_low.sqrt().recip(), q_high.sqrt().recip());
    let shift_px = rng.range(0.0, MISREGISTRATION_MM) / (10.0 * px_cm);
    let (shift_y, shift_x) = {
        let (s, c) = rng.range(0.0, std::f32::consts::TAU).sin_cos();
        (shift_px * s, shift_px * c)
    };
    let shifted = |row: usize, x: usize| -> f32 {
        let (r, c) = (
            (row as f32 + shift_y).clamp(0.0, (rows - 1) as f32),
            (x as f32 + shift_x).clamp(0.0, (cols - 1) as f32),
        );
        let (r0, c0) = ((r as usize).min(rows - 2), (c as usize).min(cols - 2));
        let (tr, tc) = (r - r0 as f32, c - c0 as f32);
        let at = |r: usize, c: usize| high_att[r * cols + c];
        lerp(
            lerp(at(r0, c0), at(r0, c0 + 1), tc),
            lerp(at(r0 + 1, c0), at(r0 + 1, c0 + 1), tc),
            tr,
        )
    };
    let per_mg = physics.per_mg();
    let nominal_t0 = low.nominal(t0);
    let mut le = vec![0u16; rows * cols];
    let mut rc = vec![0u16; rows * cols];
    let mut mask = vec![false; rows * cols];
    let mut maps = maps;
    if let Some(m) = maps.as_mut() {
        m.gland = vec![0.0; rows * cols];
        m.muscle = vec![0.0; rows * cols];
    }
    let noise_seed = mix(cfg.seed, 2);
    for row in 0..rows {
        let mut rng = SplitMix(mix(noise_seed, row as u64));
        for x in 0..cols {
            let (f, t) = sample(row, x);
            let idx = row * cols + anatomy.col(x);
            if f.radius >= 1.0 {
                // Air: the unattenuated beam, and a flat RC background.
                let le_value = LE_OFFSET - LE_GAIN * rng.gauss() * sd_low;
                le[idx] = le_value.round().clamp(0.0, 4095.0) as u16;
                rc[idx] = RC_BACKGROUND;
                continue;
            }
            let i = row * cols + x;
            // Detected log attenuation: primary less scatter, plus quantum noise
            // (σ(ln N) = 1/√N̄ with N̄ = Q·e^(−L)).
            let measured_low = low_att[i] - f.scatter_low;
            let noise_low = rng.gauss() * sd_low * (0.5 * measured_low).exp();
            let primary_high = shifted(row, x);
            let noise_high = rng.gauss() * sd_high * (0.5 * (primary_high - f.scatter_high)).exp();
            // The recombination works on scatter-corrected images: what the correction leaves
            // is a share of the scatter, and its nominal level is part of the calibration.
            let residual =
                |term: f32, share_of: f32, nominal: f32| (share_of * term.exp_m1()).ln_1p() - nominal;
            let rc_low =
                low_att[i] - residual(f.scatter_low, SCATTER_RESIDUAL, scatter_nominal.0) + noise_low;
            let rc_high =
                primary_high - residual(f.scatter_high, SCATTER_RESIDUAL, scatter_nominal.1) + noise_high;
            // Iodine raises the HE attenuation more than w times the LE one: what the
            // recombined attenuation exceeds the nominal breast of this thickness by is the
            // enhancement, in mg/cm² of iodine.
            let iodine = (rc_high - w * rc_low - physics.baseline(t)) / per_mg;
            let equalized =
                measured_low + noise_low + PERIPHERAL_EQUALIZATION * (nominal_t0 - low.nominal(t));
            le[idx] = (LE_OFFSET + LE_GAIN * equalized).round().clamp(0.0, 4095.0) as u16;
            rc[idx] = (RC_BASE + RC_PER_MG * iodine).round().clamp(0.0, 4095.0) as u16;
            mask[idx] = true;
            if let Some(m) = maps.as_mut() {
                m.gland[idx] = f.gland;
                m.muscle[idx] = f.muscle;
            }
        }
    }

    PhantomCase {
        rows,
        cols,
        le_window: le_window(&le, &mask),
        rc_window: rc_window(),
        le,
        rc,
        lesions: boxes,
        breast_mask: mask,
        laterality: cfg.laterality,
        view: cfg.view,
        density: cfg.density,
        bpe: cfg.bpe,
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

/// (center, width) from below the breast's 0.5th percentile to its 99.5th: fat shows dark grey
/// against a black background, as on a mammography display (the lower end lies 30 % of the
/// breast's range below its 0.5th percentile, never below the air level).
fn le_window(le: &[u16], mask: &[bool]) -> (f32, f32) {
    let p = Percentiles::new(le, mask);
    let (lo, hi) = (p.at(0.005), p.at(0.995));
    let lo = (lo - 0.3 * (hi - lo)).max(LE_OFFSET);
    ((lo + hi) / 2.0, (hi - lo).max(1.0))
}

/// (center, width) that shows unenhanced tissue at 40 % grey and [`RC_WHITE_MG_CM2`] of
/// iodine white: the same for every case, so RC values mean the same iodine everywhere.
fn rc_window() -> (f32, f32) {
    let width = RC_WHITE_MG_CM2 * RC_PER_MG / 0.6;
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
            non_enhancing: 0,
            bpe: Bpe::Mild,
            vessels: true,
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
        let cfg = PhantomConfig {
            non_enhancing: 1,
            ..config(7, Density::C, 2, 'L', "MLO")
        };
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

    /// The table reproduces the NIST grid points and jumps at the iodine K-edge instead of
    /// interpolating across it.
    #[test]
    fn attenuation_tables_hold_nist_points_and_the_iodine_k_edge() {
        for (kev, value) in [(20.0, 25.43), (30.0, 8.561), (40.0, 22.1), (50.0, 12.32)] {
            let got = mass_attenuation(Material::Iodine, kev);
            assert!((got - value).abs() < 1e-3 * value, "{kev} keV: {got}");
        }
        let below = mass_attenuation(Material::Iodine, IODINE_K_EDGE_KEV - 0.01);
        let above = mass_attenuation(Material::Iodine, IODINE_K_EDGE_KEV + 0.01);
        assert!(
            (below - 6.553).abs() < 0.01 && (above - 35.83).abs() < 0.05,
            "{below} {above}"
        );
        // Between grid points, log-log: iodine at 25 keV lies between 20 and 30 keV's values,
        // near the power-law value.
        let mid = mass_attenuation(Material::Iodine, 25.0);
        let power_law = 25.43 * (25.0f32 / 20.0).powf((8.561f32 / 25.43).ln() / 1.5f32.ln());
        assert!((mid - power_law).abs() < 1e-3 * mid, "{mid} vs {power_law}");
        // Tissues have no edge; glandular tissue attenuates more than fat, muscle more still.
        let g = |m: Material, kev: f32| mass_attenuation(m, kev) * m.density();
        for kev in [LE_KEV, HE_KEV] {
            assert!(g(Material::Adipose, kev) < g(Material::Glandular, kev));
            assert!(g(Material::Glandular, kev) < g(Material::Muscle, kev));
        }
        let tissue_jump = mass_attenuation(Material::Glandular, IODINE_K_EDGE_KEV + 0.01)
            / mass_attenuation(Material::Glandular, IODINE_K_EDGE_KEV - 0.01);
        assert!((tissue_jump - 1.0).abs() < 0.01, "{tissue_jump}");
    }

    /// A slab with a known iodine areal density: the log-signal difference at each energy is
    /// (μ/ρ)_I(E)·ρA, and above the K-edge iodine attenuates more although the energy is higher.
    #[test]
    fn iodine_contrast_follows_the_tabulated_mu_rho_at_the_effective_energies() {
        let breast = Slab {
            adipose_cm: 2.5,
            glandular_cm: 2.5,
            skin_cm: 0.3,
            ..Slab::default()
        };
        for areal in [0.5f32, 1.0, 2.0] {
            let (low0, high0) = log_attenuation(&breast);
            let (low1, high1) = log_attenuation(&Slab {
                iodine_mg_cm2: areal,
                ..breast
            });
            for (diff, kev) in [(low1 - low0, LE_KEV), (high1 - high0, HE_KEV)] {
                let expected = mass_attenuation(Material::Iodine, kev) * areal * 1e-3;
                assert!(
                    (diff - expected).abs() < 0.01 * expected,
                    "{areal} mg/cm² at {kev} keV: {diff} vs {expected}"
                );
            }
            // The K-edge jump: HE/LE contrast ratio (about 1.28) instead of the ~0.2 that
            // iodine's E^-2.7 fall-off would give without an edge.
            let ratio = (high1 - high0) / (low1 - low0);
            assert!(ratio > 1.2 && ratio < 1.4, "HE/LE iodine contrast {ratio}");
        }
        // And the recombination turns it into a fixed RC scale: per mg/cm² the recombined
        // signal is μ_I(HE) − w·μ_I(LE).
        let p = Physics::new(4.5);
        let per_mg = (mass_attenuation(Material::Iodine, HE_KEV)
            - p.w * mass_attenuation(Material::Iodine, LE_KEV))
            * 1e-3;
        assert!((p.per_mg() - per_mg).abs() < 1e-6);
    }

    /// The recombination weight cancels glandular-vs-adipose contrast for the nominal breast,
    /// and the energies straddle the K-edge.
    #[test]
    fn recombination_weight_cancels_the_nominal_breast() {
        let t = 4.5;
        let p = Physics::new(t);
        let rc = |g: f32| {
            let slab = Slab {
                adipose_cm: (1.0 - g) * t,
                glandular_cm: g * t,
                ..Slab::default()
            };
            p.high.log_attenuation(&slab) - p.w * p.low.log_attenuation(&slab)
        };
        let slope = (rc(0.51) - rc(0.49)) / 0.02;
        assert!(slope.abs() < 1e-4, "residual slope {slope}");
        assert!(p.w > 0.2 && p.w < 0.35, "w = {}", p.w);
        // Another composition leaves a residual: beam hardening makes the weight depend on it.
        let other = |g: f32| {
            let slab = Slab {
                adipose_cm: (1.0 - g) * t,
                glandular_cm: g * t,
                ..Slab::default()
            };
            p.high.log_attenuation(&slab) - p.w * p.low.log_attenuation(&slab)
        };
        assert!(((other(0.21) - other(0.19)) / 0.02).abs() > 1e-3);
    }

    /// (mean of the central half of a lesion box − mean of a ring around the box, SD of the
    /// ring) in one image. The centre, because a box holds a spiculated mass's spicules too.
    fn contrast(case: &PhantomCase, image: &[u16], roi: &RoiBox) -> (f32, f32) {
        let (h, w) = (roi.row1 - roi.row0, roi.col1 - roi.col0);
        let gap = h.max(w) / 4 + 1;
        let reach = h.max(w) / 2 + gap;
        let inner = |r: usize, c: usize| {
            (roi.row0 + h / 4..roi.row1 - h / 4).contains(&r)
                && (roi.col0 + w / 4..roi.col1 - w / 4).contains(&c)
        };
        let in_box =
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
                if inner(r, c) && case.breast_mask[i] {
                    inside.push(image[i] as f32);
                } else if case.breast_mask[i]
                    && !in_box(r, c)
                    && near(r, c, reach)
                    && !near(r, c, gap)
                    && !others(r, c)
                {
                    ring.push(image[i] as f32);
                }
            }
        }
        let (m_in, _) = mean_std(inside.into_iter());
        // Median and robust spread of the ring: a ring that reaches the skin line's bright rim
        // or a vessel is not a noisier background.
        ring.sort_by(f32::total_cmp);
        let median = ring[ring.len() / 2];
        let mut deviations: Vec<f32> = ring.iter().map(|v| (v - median).abs()).collect();
        deviations.sort_by(f32::total_cmp);
        (m_in - median, 1.4826 * deviations[deviations.len() / 2])
    }

    /// The 99th percentile of RC in a box minus the median of RC in the ring around it.
    fn peak_rise(case: &PhantomCase, roi: &RoiBox) -> f32 {
        let mut inside: Vec<f32> = (roi.row0..roi.row1)
            .flat_map(|r| (roi.col0..roi.col1).map(move |c| r * case.cols + c))
            .filter(|&i| case.breast_mask[i])
            .map(|i| case.rc[i] as f32)
            .collect();
        inside.sort_by(f32::total_cmp);
        let (rise, _) = contrast(case, &case.rc, roi);
        let (centre, _) = mean_std(
            (roi.row0 + (roi.row1 - roi.row0) / 4..roi.row1 - (roi.row1 - roi.row0) / 4)
                .flat_map(|r| {
                    (roi.col0 + (roi.col1 - roi.col0) / 4..roi.col1 - (roi.col1 - roi.col0) / 4)
                        .map(move |c| r * case.cols + c)
                })
                .filter(|&i| case.breast_mask[i])
                .map(|i| case.rc[i] as f32),
        );
        // contrast() gives centre mean − ring median: recover the ring median from it.
        let ring_median = centre - rise;
        inside[inside.len() * 99 / 100] - ring_median
    }

    fn cnr(case: &PhantomCase, image: &[u16], roi: &RoiBox) -> f32 {
        let (rise, sd) = contrast(case, image, roi);
        rise / sd
    }

    #[test]
    fn enhancing_lesions_stand_out_in_rc_and_masses_hide_in_dense_le() {
        let mut kinds = std::collections::HashMap::new();
        let (mut hidden, mut weak, mut rc_cnrs) = (0, 0, Vec::new());
        for seed in 0..12 {
            let density = [Density::A, Density::B, Density::C, Density::D][seed as usize % 4];
            let view = if seed % 3 == 0 { "MLO" } else { "CC" };
            let case = simulate(&config(100 + seed, density, 3, 'R', view));
            for roi in &case.lesions {
                assert!(roi.kind.enhances());
                assert!(
                    (LESION_IODINE_MG_CM2.0..=LESION_IODINE_MG_CM2.1).contains(&roi.iodine_mg_cm2),
                    "{roi:?}"
                );
                let (rc, le) = (cnr(&case, &case.rc, roi), cnr(&case, &case.le, roi));
                // The annotated uptake shows: the box's peak rises above the surroundings by
                // most of the annotated iodine on the fixed RC scale.
                let peak = peak_rise(&case, roi);
                assert!(
                    peak > 0.5 * roi.iodine_mg_cm2 * RC_PER_MG,
                    "seed {seed}: RC peak {peak} for {roi:?}"
                );
                // Masses and rims rise as a whole; the faintest (0.5 mg/cm², a few pixels) only a
                // little. Non-mass foci are sparse in their segment.
                if roi.kind != LesionKind::NonMass {
                    assert!(rc > 0.5, "seed {seed}: RC contrast {rc} for {roi:?}");
                    weak += usize::from(rc < 2.0);
                    rc_cnrs.push(rc);
                }
                // A mass in dense tissue barely shows on LE (non-mass enhancement has no mass at
                // all: its LE box is whatever tissue lies there).
                if roi.hidden && roi.kind != LesionKind::NonMass {
                    assert!(le.abs() < 0.5 * rc, "seed {seed}: LE {le} vs RC {rc} for {roi:?}");
                }
                hidden += usize::from(roi.hidden);
                *kinds.entry(roi.kind).or_insert(0) += 1;
            }
        }
        let total: usize = kinds.values().sum();
        assert!(total >= 24, "{kinds:?}");
        assert!(
            weak * 10 <= rc_cnrs.len(),
            "{weak} of {} masses with RC CNR < 2: {rc_cnrs:?}",
            rc_cnrs.len()
        );
        assert!(
            kinds.len() == 3,
            "masses, rims and non-mass enhancement: {kinds:?}"
        );
        assert!(hidden >= 4, "only {hidden} lesions are hidden");
    }

    /// A physicist's check: a cyst or fibroadenoma shows on LE as a density against its
    /// surroundings and has no uptake on RC.
    #[test]
    fn non_enhancing_masses_show_on_le_and_not_on_rc() {
        let mut le_cnrs = Vec::new();
        for seed in 0..10 {
            let density = [Density::A, Density::B][seed as usize % 2];
            let cfg = PhantomConfig {
                lesions: 0,
                non_enhancing: 2,
                bpe: Bpe::Minimal,
                ..config(300 + seed, density, 0, 'L', "CC")
            };
            let case = simulate(&cfg);
            for roi in &case.lesions {
                assert_eq!(roi.kind, LesionKind::NonEnhancing);
                assert_eq!(roi.iodine_mg_cm2, 0.0);
                let (rc_rise, _) = contrast(&case, &case.rc, roi);
                // No uptake: the box's RC does not rise (less than 0.1 mg/cm² of iodine). A cyst
                // reads a little darker than tissue (water's HE/LE attenuation ratio is lower
                // than breast tissue's), never as an enhancement.
                assert!(
                    rc_rise < 0.1 * RC_PER_MG && rc_rise > -RC_PER_MG,
                    "seed {seed}: RC rises {rc_rise} in {roi:?}"
                );
                if !roi.hidden {
                    le_cnrs.push(cnr(&case, &case.le, roi));
                }
            }
        }
        // Denser than the fat around them: all brighter on LE, most of them clearly (a small
        // cyst in tissue of some density is as subtle as in patients).
        let n = le_cnrs.len();
        assert!(n >= 8, "only {n} visible non-enhancing masses");
        le_cnrs.sort_by(f32::total_cmp);
        assert!(
            le_cnrs[0] > 0.0 && le_cnrs[n / 4] > 1.0 && le_cnrs[n / 2] > 2.0,
            "LE contrasts {le_cnrs:?}"
        );
    }

    /// Residual texture: RC of a lesion-free breast (minimal BPE, no vessels) keeps some
    /// glandular texture, as real RC does, but its spread inside the breast (away from the skin
    /// line) stays below 0.3 mg/cm² of iodine (docs/phantom.md), while LE shows the glands.
    #[test]
    fn rc_of_a_lesion_free_breast_has_residual_texture_below_the_stated_level() {
        for (seed, density) in [(3, Density::B), (4, Density::C), (5, Density::D)] {
            let cfg = PhantomConfig {
                bpe: Bpe::Minimal,
                vessels: false,
                ..config(seed, density, 0, 'L', "CC")
            };
            let mut maps = Maps::default();
            let case = render(&cfg, Some(&mut maps));
            // Away from the skin line: 12 pixels (1 cm here) inside the breast mask.
            let (rows, cols) = (case.rows, case.cols);
            let margin = 12;
            let interior: Vec<usize> = (margin..rows - margin)
                .flat_map(|r| (margin..cols - margin).map(move |c| r * cols + c))
                .filter(|&i| {
                    let (r, c) = (i / cols, i % cols);
                    [
                        (0, 0),
                        (margin, 0),
                        (0, margin),
                        (2 * margin, margin),
                        (margin, 2 * margin),
                    ]
                    .iter()
                    .all(|&(dr, dc)| case.breast_mask[(r + dr - margin) * cols + c + dc - margin])
                })
                .collect();
            assert!(interior.len() > rows * cols / 5);
            let rc: Vec<f32> = interior.iter().map(|&i| case.rc[i] as f32).collect();
            let (_, sd) = mean_std(rc.iter().copied());
            let residual = sd / RC_PER_MG;
            assert!(residual < 0.3, "{density:?}: RC texture {residual} mg/cm²");
            let g: Vec<f32> = interior.iter().map(|&i| maps.gland[i]).collect();
            let le: Vec<f32> = interior.iter().map(|&i| case.le[i] as f32).collect();
            let c_le = correlation(&le, &g);
            assert!(c_le > 0.7, "LE follows the glandular map: {c_le}");
        }
    }

    #[test]
    fn the_pectoral_muscle_does_not_saturate_le() {
        for seed in 0..4 {
            let cfg = PhantomConfig {
                rows: 416,
                cols: 320,
                ..config(40 + seed, Density::D, 0, 'R', "MLO")
            };
            let mut maps = Maps::default();
            let case = render(&cfg, Some(&mut maps));
            let muscle: Vec<u16> = (0..case.le.len())
                .filter(|&i| maps.muscle[i] > 0.99 && case.breast_mask[i])
                .map(|i| case.le[i])
                .collect();
            assert!(muscle.len() > 1000, "seed {seed}: {} muscle pixels", muscle.len());
            let max = *muscle.iter().max().unwrap();
            assert!(max < 4000, "seed {seed}: pectoral muscle reaches {max}");
            // And it is brighter than the fatty breast: it shows as muscle.
            let (m, _) = mean_std(muscle.iter().map(|&v| v as f32));
            let (b, _) = mean_std(
                (0..case.le.len())
                    .filter(|&i| maps.muscle[i] == 0.0 && case.breast_mask[i])
                    .map(|i| case.le[i] as f32),
            );
            assert!(m > b, "seed {seed}: muscle {m} vs breast {b}");
        }
    }

    #[test]
    fn density_categories_order_the_glandular_fraction() {
        let mut means = Vec::new();
        for density in [Density::A, Density::B, Density::C, Density::D] {
            let mut sum = 0.0;
            for seed in 0..4 {
                let mut maps = Maps::default();
                let case = render(&config(seed, density, 0, 'R', "CC"), Some(&mut maps));
                let (m, _) = mean_std(
                    (0..maps.gland.len())
                        .filter(|&i| case.breast_mask[i])
                        .map(|i| maps.gland[i]),
                );
                sum += m;
            }
            means.push(sum / 4.0);
        }
        assert!(means.windows(2).all(|p| p[1] > p[0] + 0.04), "{means:?}");
        assert!(means[0] < 0.2 && means[3] > 0.35, "{means:?}");
    }

    #[test]
    fn laterality_mirrors_the_chest_wall_side() {
        let cfg = PhantomConfig {
            non_enhancing: 1,
            ..config(11, Density::B, 2, 'R', "MLO")
        };
        let right = simulate(&cfg);
        let left = simulate(&PhantomConfig {
            laterality: 'L',
            ..cfg
        });
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
        assert_eq!(right.lesions.len(), left.lesions.len());
        for (a, b) in right.lesions.iter().zip(&left.lesions) {
            assert_eq!(
                (a.row0, a.row1, a.col0, a.col1, a.kind),
                (b.row0, b.row1, cols - b.col1, cols - b.col0, b.kind)
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
            assert!(exam
                .iter()
                .all(|c| c.density == exam[0].density && c.bpe == exam[0].bpe));
            assert_eq!(
                (exam[0].lesions, exam[0].non_enhancing),
                (exam[2].lesions, exam[2].non_enhancing),
                "right CC and MLO show the same breast"
            );
            assert_eq!(exam[1].lesions, exam[3].lesions);
            assert_eq!(case_config(5, patient, 2, 64, 48).seed, exam[2].seed);
        }
        let densities: std::collections::HashSet<_> = (0..40)
            .map(|p| case_config(5, p, 0, 64, 48).density.as_str())
            .collect();
        assert_eq!(densities.len(), 4);
        let bpes: std::collections::HashSet<_> = (0..60)
            .map(|p| case_config(5, p, 0, 64, 48).bpe.as_str())
            .collect();
        assert_eq!(bpes.len(), 4);
        assert_ne!(
            case_config(5, 0, 0, 64, 48).seed,
            case_config(6, 0, 0, 64, 48).seed
        );
    }

    #[test]
    fn roi_json_without_a_kind_reads_as_a_mass() {
        let old = r#"{"row0":1,"col0":2,"row1":3,"col1":4,"hidden":false,"iodine_mg_cm2":1.5}"#;
        let roi: RoiBox = serde_json::from_str(old).unwrap();
        assert_eq!(roi.kind, LesionKind::Mass);
        let written = serde_json::to_value(RoiBox {
            kind: LesionKind::NonEnhancing,
            ..roi
        })
        .unwrap();
        assert_eq!(written["kind"], "non-enhancing");
        let non_mass: LesionKind = serde_json::from_str(r#""non-mass""#).unwrap();
        assert_eq!(non_mass, LesionKind::NonMass);
    }
}
