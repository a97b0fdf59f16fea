//! Rendered images (PS3.18 8.3.5 and 10.4.1.1.3): a frame's modality values (Rescale applied)
//! through its VOI transformation into 8-bit gray, MONOCHROME1 inverted so that it reads like
//! the modality shows it, scaled into the viewport, encoded as PNG or JPEG.
//!
//! The VOI is the request's `window`, else the instance's first Window Center/Width (with its
//! VOI LUT Function), else its VOI LUT, else the range of the values present.

use std::collections::HashMap;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};
use image::{DynamicImage, GrayImage};

use crate::web::accept::RenderedType;
use crate::web::WebError;

/// A VOI LUT function of PS3.3 C.11.2.1.2 and C.11.2.1.3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// A window: center, width and function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

impl Window {
    /// The output value in 0..=255 for modality value `x` (PS3.3 C.11.2.1.2.1, C.11.2.1.3).
    pub fn apply(&self, x: f64) -> u8 {
        let (c, w) = (self.center, self.width);
        let y = match self.function {
            VoiFunction::Linear => {
                if x <= c - 0.5 - (w - 1.0) / 2.0 {
                    0.0
                } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                    255.0
                } else {
                    ((x - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0
                }
            }
            VoiFunction::LinearExact => {
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    255.0
                } else {
                    ((x - c) / w + 0.5) * 255.0
                }
            }
            VoiFunction::Sigmoid => 255.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        };
        y.round().clamp(0.0, 255.0) as u8
    }
}

fn parse_function(name: &str) -> Option<VoiFunction> {
    match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "linear" => Some(VoiFunction::Linear),
        "linear-exact" => Some(VoiFunction::LinearExact),
        "sigmoid" => Some(VoiFunction::Sigmoid),
        _ => None,
    }
}

/// What the query parameters ask of a rendering (PS3.18 8.3.5.1).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderParams {
    pub window: Option<Window>,
    /// Width and height to fit the image into, aspect ratio kept.
    pub viewport: Option<(u32, u32)>,
    /// JPEG quality 1..=100.
    pub quality: u8,
}

/// The largest viewport side served: a rendering is held in memory.
const MAX_VIEWPORT: u32 = 8192;

impl RenderParams {
    pub fn parse(query: &HashMap<String, String>) -> Result<RenderParams, WebError> {
        let window = match query.get("window") {
            None => None,
            Some(w) => {
                let bad = || {
                    WebError::bad_request(format!(
                        "window must be center,width,function (linear, linear-exact or sigmoid), not {w:?}"
                    ))
                };
                let parts: Vec<&str> = w.split(',').collect();
                if parts.len() != 2 && parts.len() != 3 {
                    return Err(bad());
                }
                let center: f64 = parts[0].trim().parse().map_err(|_| bad())?;
                let width: f64 = parts[1].trim().parse().map_err(|_| bad())?;
                let function = match parts.get(2) {
                    Some(f) => parse_function(f).ok_or_else(bad)?,
                    None => VoiFunction::Linear,
                };
                let min_width = if function == VoiFunction::Linear { 1.0 } else { 0.0 };
                if !center.is_finite() || !width.is_finite() || width < min_width || width == 0.0 {
                    return Err(bad());
                }
                Some(Window {
                    center,
                    width,
                    function,
                })
            }
        };
        let viewport = match query.get("viewport") {
            None => None,
            Some(v) => {
                let bad = || {
                    WebError::bad_request(format!(
                        "viewport must be vw,vh (pixels, 1..={MAX_VIEWPORT}), not {v:?}"
                    ))
                };
                let parts: Vec<&str> = v.split(',').collect();
                if parts.len() != 2 {
                    return Err(bad());
                }
                let side = |s: &str| {
                    s.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_VIEWPORT).contains(n))
                        .ok_or_else(bad)
                };
                Some((side(parts[0])?, side(parts[1])?))
            }
        };
        let quality = match query.get("quality") {
            None => 90,
            Some(q) => q
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| WebError::bad_request(format!("quality must be 1..100, not {q:?}")))?,
        };
        Ok(RenderParams {
            window,
            viewport,
            quality,
        })
    }
}

/// Why a frame could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read the instance: {0}")]
    Read(Box<dicom_object::ReadError>),
    #[error("frame {0} does not exist")]
    NoFrame(u32),
    #[error("cannot decode the pixel data: {0}")]
    Decode(Box<dicom_pixeldata::Error>),
    #[error("the pixel values do not fill {rows} rows of {cols} columns")]
    Shape { rows: u32, cols: u32 },
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("cannot encode the image: {0}")]
    Encode(Box<image::ImageError>),
}

// The dicom-rs and image errors are large; boxed, a Result stays small on the happy path.
impl From<dicom_object::ReadError> for RenderError {
    fn from(e: dicom_object::ReadError) -> Self {
        RenderError::Read(Box::new(e))
    }
}
impl From<dicom_pixeldata::Error> for RenderError {
    fn from(e: dicom_pixeldata::Error) -> Self {
        RenderError::Decode(Box::new(e))
    }
}
impl From<image::ImageError> for RenderError {
    fn from(e: image::ImageError) -> Self {
        RenderError::Encode(Box::new(e))
    }
}

fn first_f64(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
}

/// The instance's own first window, if it has one.
fn file_window(obj: &InMemDicomObject) -> Option<Window> {
    let center = first_f64(obj, tags::WINDOW_CENTER)?;
    let width = first_f64(obj, tags::WINDOW_WIDTH)?;
    let function = obj
        .element(tags::VOILUT_FUNCTION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .and_then(|f| parse_function(&f))
        .unwrap_or(VoiFunction::Linear);
    let min_width = if function == VoiFunction::Linear { 1.0 } else { 0.0 };
    (center.is_finite() && width.is_finite() && width >= min_width && width > 0.0).then_some(Window {
        center,
        width,
        function,
    })
}

/// Gray levels of one frame: windowed 0..=255, MONOCHROME1 inverted. `frame` is 0-based.
pub fn gray_levels(
    obj: &FileDicomObject<InMemDicomObject>,
    frame: u32,
    window: Option<Window>,
) -> Result<DynamicImage, RenderError> {
    let frames = super::frames::number_of_frames(obj);
    if frame >= frames {
        return Err(RenderError::NoFrame(frame + 1));
    }
    let decoded = obj.decode_pixel_data_frame(frame)?;
    let (rows, cols) = (decoded.rows(), decoded.columns());
    if decoded.samples_per_pixel() != 1 {
        // Colour has no VOI: 8-bit RGB as it is (decoded pixel data is interleaved).
        if decoded.samples_per_pixel() == 3 && decoded.bits_allocated() == 8 {
            let rgb = image::RgbImage::from_raw(cols, rows, decoded.data().to_vec())
                .ok_or(RenderError::Shape { rows, cols })?;
            return Ok(DynamicImage::ImageRgb8(rgb));
        }
        return Err(RenderError::Unsupported(format!(
            "{} samples of {} bits",
            decoded.samples_per_pixel(),
            decoded.bits_allocated()
        )));
    }
    let options = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(VoiLutOption::Identity);
    // f32 holds every 16-bit stored value after a rescale; half the memory of f64 for a
    // 13-megapixel mammogram.
    let values: Vec<f32> = decoded.to_vec_frame_with_options(0, &options)?;
    let monochrome1 = matches!(
        decoded.photometric_interpretation(),
        dicom_pixeldata::PhotometricInterpretation::Monochrome1
    );
    let lut = decoded
        .voi_lut_sequence()
        .ok()
        .flatten()
        .and_then(|s| s.first().cloned());
    let mut levels: Vec<u8> = match (window.or_else(|| file_window(obj)), lut) {
        (Some(w), _) => values.iter().map(|&x| w.apply(x as f64)).collect(),
        (None, Some(lut)) if !lut.data.is_empty() => {
            let top = ((1u32 << lut.bits_stored.clamp(1, 16)) - 1) as f64;
            values
                .iter()
                .map(|&x| {
                    let i = (x.round() as i64 - lut.min_pixel_value as i64)
                        .clamp(0, lut.data.len() as i64 - 1) as usize;
                    (lut.data[i] as f64 / top * 255.0).round().clamp(0.0, 255.0) as u8
                })
                .collect()
        }
        _ => {
            let (lo, hi) = values
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let span = (hi - lo).max(f32::MIN_POSITIVE);
            values
                .iter()
                .map(|&x| ((x - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect()
        }
    };
    if monochrome1 {
        levels.iter_mut().for_each(|v| *v = 255 - *v);
    }
    let img = GrayImage::from_raw(cols, rows, levels).ok_or(RenderError::Shape { rows, cols })?;
    Ok(DynamicImage::ImageLuma8(img))
}

/// The size that fits `(w, h)` into `viewport` keeping its aspect ratio.
pub fn fit(w: u32, h: u32, viewport: (u32, u32)) -> (u32, u32) {
    let scale = (viewport.0 as f64 / w as f64).min(viewport.1 as f64 / h as f64);
    (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    )
}

/// Renders frame `frame` (0-based) of the file at `path`. Blocking.
pub fn render_file(
    path: &Path,
    frame: u32,
    params: &RenderParams,
    media: RenderedType,
) -> Result<Vec<u8>, RenderError> {
    let obj = dicom_object::open_file(path)?;
    let mut img = gray_levels(&obj, frame, params.window)?;
    if let Some(viewport) = params.viewport {
        let (w, h) = fit(img.width(), img.height(), viewport);
        if (w, h) != (img.width(), img.height()) {
            img = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
        }
    }
    let mut out = Vec::new();
    match media {
        RenderedType::Png => img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))?,
        RenderedType::Jpeg => img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out,
            params.quality,
        ))?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{mammogram, pixels, MammogramSpec};
    use dicom_core::VR;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn linear_window_follows_ps3_3() {
        // Center 2048, width 4096: the ends of the window and the middle.
        let w = Window {
            center: 2048.0,
            width: 4096.0,
            function: VoiFunction::Linear,
        };
        assert_eq!(w.apply(-5.0), 0);
        assert_eq!(w.apply(0.0), 0);
        assert_eq!(w.apply(4095.0), 255);
        assert_eq!(w.apply(9000.0), 255);
        assert_eq!(w.apply(2047.5), 128); // (0 + 0.5) * 255 = 127.5, rounded half away
        let narrow = Window {
            center: 100.0,
            width: 1.0,
            function: VoiFunction::Linear,
        };
        assert_eq!((narrow.apply(99.0), narrow.apply(100.0)), (0, 255));
        let exact = Window {
            center: 100.0,
            width: 50.0,
            function: VoiFunction::LinearExact,
        };
        assert_eq!(
            (exact.apply(75.0), exact.apply(100.0), exact.apply(125.1)),
            (0, 128, 255)
        );
        let sigmoid = Window {
            center: 100.0,
            width: 50.0,
            function: VoiFunction::Sigmoid,
        };
        assert_eq!(sigmoid.apply(100.0), 128);
        assert!(sigmoid.apply(0.0) < 2 && sigmoid.apply(200.0) > 253);
    }

    #[test]
    fn parses_window_viewport_and_quality() {
        let p = RenderParams::parse(&query(&[
            ("window", "40,400,linear-exact"),
            ("viewport", "256,128"),
            ("quality", "70"),
        ]))
        .unwrap();
        assert_eq!(
            p.window,
            Some(Window {
                center: 40.0,
                width: 400.0,
                function: VoiFunction::LinearExact
            })
        );
        assert_eq!((p.viewport, p.quality), (Some((256, 128)), 70));
        for bad in [
            ("window", "40"),
            ("window", "40,0,linear"),
            ("window", "a,400,linear"),
            ("window", "40,400,cubic"),
            ("viewport", "0,10"),
            ("viewport", "10"),
            ("viewport", "99999,10"),
            ("quality", "0"),
            ("quality", "high"),
        ] {
            let err = RenderParams::parse(&query(&[bad])).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert_eq!(fit(400, 200, (100, 100)), (100, 50));
        assert_eq!(fit(200, 400, (100, 100)), (50, 100));
    }

    #[test]
    fn renders_under_the_files_window_and_inverts_monochrome1() {
        let spec = MammogramSpec {
            rows: 32,
            columns: 24,
            ..MammogramSpec::low_energy(1)
        };
        let raw = pixels(&spec);
        let mut obj = mammogram(&spec);
        let w = file_window(&obj).expect("the fixture has a window");
        let img = gray_levels(&obj, 0, None).unwrap().into_luma8();
        assert_eq!(img.dimensions(), (24, 32));
        for (got, &x) in img.as_raw().iter().zip(&raw) {
            assert_eq!(*got, w.apply(x as f64));
        }
        obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1");
        let inverted = gray_levels(&obj, 0, None).unwrap().into_luma8();
        for (a, b) in img.as_raw().iter().zip(inverted.as_raw()) {
            assert_eq!(*a, 255 - *b);
        }
        // Without a window: the value range spans black to white.
        obj.remove_element(tags::WINDOW_CENTER);
        obj.remove_element(tags::WINDOW_WIDTH);
        obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        let ranged = gray_levels(&obj, 0, None).unwrap().into_luma8();
        assert_eq!(ranged.as_raw().iter().min(), Some(&0));
        assert_eq!(ranged.as_raw().iter().max(), Some(&255));
        assert!(matches!(gray_levels(&obj, 1, None), Err(RenderError::NoFrame(2))));
    }
}
