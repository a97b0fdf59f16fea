//! Reading a mammogram's pixels for the models: decode any accepted transfer syntax, apply the
//! Modality LUT (rescale), make MONOCHROME1 read like MONOCHROME2, and find the VOI window.
//!
//! For Processing images usually carry no VOI window: then the window spans the values
//! present (min to max), which is documented in the derived instance's description.
//!
//! Researchers' data may also be rendered images (CDD-CESM ships JPEGs): [`read_rendered`].

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};
use vcnode_models::preprocess::Window;

#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: Box<dicom_object::ReadError>,
    },
    #[error("cannot decode the pixel data: {0}")]
    Decode(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
}

/// Where the VOI window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSource {
    /// Window Center/Width of the file.
    File,
    /// None in the file: the range of the values present.
    ValueRange,
    /// A rendered JPEG or PNG, windowed when it was exported: the full range of its bit depth.
    Rendered,
}

/// A decoded single-frame grayscale image in modality values, brighter = more attenuating.
#[derive(Debug, Clone)]
pub struct MgImage {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
    pub window: Window,
    pub window_source: WindowSource,
    pub monochrome1: bool,
    pub laterality: Option<String>,
}

impl MgImage {
    pub fn windowed(&self) -> Vec<f32> {
        self.window.apply(&self.values)
    }
}

/// Writes the Image Pixel module of a 12-bit MONOCHROME2 image (16 bits allocated) into `obj`.
pub fn put_monochrome12(obj: &mut InMemDicomObject, rows: usize, cols: usize, pixels: Vec<u16>) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    debug_assert_eq!(pixels.len(), rows * cols);
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("MONOCHROME2"),
    ));
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, rows as u16),
        (tags::COLUMNS, cols as u16),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 12),
        (tags::HIGH_BIT, 11),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
}

pub fn read_file(path: &Path) -> Result<MgImage, PixelError> {
    let obj = dicom_object::open_file(path).map_err(|e| PixelError::Open {
        path: path.display().to_string(),
        source: Box::new(e),
    })?;
    decode(&obj)
}

/// Reads a rendered grayscale (or gray-in-RGB) JPEG or PNG, as public CESM sets such as
/// CDD-CESM distribute them. Such an image was windowed when it was exported, so its window is
/// the full range of its bit depth.
pub fn read_rendered(path: &Path) -> Result<MgImage, PixelError> {
    let decoded = image::ImageReader::open(path)
        .map_err(|e| PixelError::Decode(format!("{}: {e}", path.display())))?
        .decode()
        .map_err(|e| PixelError::Decode(format!("{}: {e}", path.display())))?;
    let sixteen = matches!(
        decoded.color(),
        image::ColorType::L16 | image::ColorType::La16 | image::ColorType::Rgb16 | image::ColorType::Rgba16
    );
    let (rows, cols) = (decoded.height() as usize, decoded.width() as usize);
    let (values, levels): (Vec<f32>, f32) = if sixteen {
        let v = decoded
            .to_luma16()
            .into_raw()
            .into_iter()
            .map(f32::from)
            .collect();
        (v, 65536.0)
    } else {
        let v = decoded.to_luma8().into_raw().into_iter().map(f32::from).collect();
        (v, 256.0)
    };
    Ok(MgImage {
        rows,
        cols,
        values,
        window: Window {
            center: levels / 2.0,
            width: levels,
        },
        window_source: WindowSource::Rendered,
        monochrome1: false,
        laterality: None,
    })
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn decode(obj: &FileDicomObject<InMemDicomObject>) -> Result<MgImage, PixelError> {
    let samples = obj
        .element(tags::SAMPLES_PER_PIXEL)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(1);
    if samples != 1 {
        return Err(PixelError::Unsupported(format!(
            "{samples} samples per pixel; mammograms are grayscale"
        )));
    }
    let photometric = text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let monochrome1 = photometric == "MONOCHROME1";
    if !monochrome1 && photometric != "MONOCHROME2" {
        return Err(PixelError::Unsupported(format!(
            "photometric interpretation {photometric:?}"
        )));
    }
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| PixelError::Decode(e.to_string()))?;
    // dicom-pixeldata builds a LUT of 2^Bits Stored entries and asserts 1..=32 (Bits Stored 0
    // from a peer panicked the worker; 32 would allocate gigabytes). Mammograms store <= 16.
    let (stored, allocated) = (decoded.bits_stored(), decoded.bits_allocated());
    if stored == 0 || stored > allocated || stored > 16 {
        return Err(PixelError::Unsupported(format!(
            "Bits Stored {stored} with Bits Allocated {allocated}"
        )));
    }
    let (rows, cols) = (decoded.rows() as usize, decoded.columns() as usize);
    let options = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(VoiLutOption::Identity);
    let mut values: Vec<f32> = decoded
        .to_vec_frame_with_options(0, &options)
        .map_err(|e| PixelError::Decode(e.to_string()))?;
    if values.len() != rows * cols {
        return Err(PixelError::Decode(format!(
            "{} values for {rows}x{cols}",
            values.len()
        )));
    }
    let file_window = decoded.window().ok().flatten().and_then(|w| w.first().copied());
    let (mut window, window_source) = match file_window {
        Some(w) if w.width > 1.0 => (
            Window {
                center: w.center as f32,
                width: w.width as f32,
            },
            WindowSource::File,
        ),
        _ => (Window::from_range(&values), WindowSource::ValueRange),
    };
    if monochrome1 {
        // Mirror values and window about the value range so that dense tissue is bright.
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        values.iter_mut().for_each(|v| *v = lo + hi - *v);
        window.center = lo + hi - window.center;
    }
    Ok(MgImage {
        rows,
        cols,
        values,
        window,
        window_source,
        monochrome1,
        laterality: text(obj, tags::IMAGE_LATERALITY).or_else(|| text(obj, tags::LATERALITY)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{mammogram, pixels, MammogramSpec};
    use dicom_core::VR;

    #[test]
    fn reads_modality_values_and_the_files_window() {
        let spec = MammogramSpec {
            rows: 64,
            columns: 48,
            ..MammogramSpec::low_energy(1)
        };
        let img = decode(&mammogram(&spec)).unwrap();
        assert_eq!((img.rows, img.cols), (64, 48));
        assert_eq!(img.window_source, WindowSource::File);
        assert_eq!(
            img.window,
            Window {
                center: 2000.0,
                width: 4000.0
            }
        );
        let raw: Vec<f32> = pixels(&spec).iter().map(|&v| v as f32).collect();
        assert_eq!(img.values, raw);
    }

    #[test]
    fn monochrome1_reads_bright_where_dense_and_for_processing_falls_back_to_the_value_range() {
        let spec = MammogramSpec {
            rows: 64,
            columns: 48,
            ..MammogramSpec::low_energy(2)
        };
        let mut obj = mammogram(&spec);
        obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1");
        obj.remove_element(tags::WINDOW_CENTER);
        obj.remove_element(tags::WINDOW_WIDTH);
        let img = decode(&obj).unwrap();
        assert!(img.monochrome1);
        assert_eq!(img.window_source, WindowSource::ValueRange);
        let raw = pixels(&spec);
        let (lo, hi) = (
            *raw.iter().min().unwrap() as f32,
            *raw.iter().max().unwrap() as f32,
        );
        // Inverted: the stored maximum (MONOCHROME1: darkest) becomes the minimum.
        for (v, r) in img.values.iter().zip(&raw) {
            assert_eq!(*v, lo + hi - *r as f32);
        }
        let w = img.windowed();
        assert!(w.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn colour_images_are_refused_with_a_reason() {
        let mut obj = mammogram(&MammogramSpec {
            rows: 8,
            columns: 8,
            ..MammogramSpec::low_energy(3)
        });
        obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        let err = decode(&obj).unwrap_err().to_string();
        assert!(err.contains("RGB"), "{err}");
    }
}
