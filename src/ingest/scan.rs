//! One streaming pass over a received data set: the checks ingest needs, with bounded memory
//! and no recursion.
//!
//! dicom-object's reader recurses into sequences without a depth limit and loads every value,
//! so a peer's bytes are first walked here with dicom-parser's token reader, which keeps its
//! nesting on a heap stack and skips values it is not asked for. Only the few top-level values
//! ingest needs are read (and only when short); Pixel Data is measured, never loaded. A deflated
//! data set is inflated under a byte limit first.

use std::io::{Read, Seek};

use dicom_core::header::HasLength;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntax;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;

/// What a data set may cost the node.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences nested deeper than this are refused.
    pub max_sequence_depth: usize,
    /// Rows × Columns × frames × samples × bytes per sample, above which an image is refused
    /// before anything decodes it.
    pub max_pixel_bytes: u64,
    /// The largest data set after inflating a deflated transfer syntax.
    pub max_inflated_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    #[error("sequences nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("the data set is truncated or malformed")]
    Malformed,
    #[error("the data set inflates to more than {0} bytes")]
    InflatesTooFar(u64),
    #[error("the image declares {bytes} bytes of pixels, above the limit of {limit}")]
    ImageTooLarge { bytes: u128, limit: u64 },
}

/// The top-level values ingest checks, as read (trimmed; absent when missing or too long).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub photometric: Option<String>,
    pub image_type: Option<Vec<String>>,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub bits_allocated: Option<u32>,
    pub samples_per_pixel: Option<u32>,
    pub number_of_frames: Option<u64>,
    /// Pixel Data: None when absent; Some(None) when encapsulated (undefined length).
    pub pixel_data_len: Option<Option<u64>>,
}

/// Values longer than this are not read (every value ingest needs is far shorter).
const MAX_READ_VALUE: u32 = 1024;

const WANTED: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::IMAGE_TYPE,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::SAMPLES_PER_PIXEL,
    tags::NUMBER_OF_FRAMES,
];

fn trimmed(s: &str) -> String {
    vcnode_scp::trim_value(s).to_string()
}

/// Walks a data set of `len` bytes from `source` (positioned at its start) in `ts`, which must
/// not be deflated (see [`inflate_limited`]).
pub fn scan<R: Read + Seek>(
    source: R,
    len: u64,
    ts: &TransferSyntax,
    limits: &Limits,
) -> Result<Scanned, ScanError> {
    let mut reader = LazyDataSetReader::new_with_ts(source, ts).map_err(|_| ScanError::Malformed)?;
    let mut out = Scanned::default();
    let mut depth = 0usize;
    // Open sequences (false) and items (true). dicom-parser 0.10's lazy reader pops its own
    // stack on a stray delimiter and then panics on the next item header
    // (fuzz/regressions/scan/), so a token that does not fit what is open is refused at once.
    let mut open: Vec<bool> = Vec::new();
    while let Some(token) = reader.advance() {
        let token = token.map_err(|_| ScanError::Malformed)?;
        let fits = match token {
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => {
                open.last() != Some(&false)
            }
            LazyDataToken::ItemStart { .. } | LazyDataToken::SequenceEnd => open.last() == Some(&false),
            LazyDataToken::ItemEnd => open.last() == Some(&true),
            _ => true,
        };
        if !fits {
            return Err(ScanError::Malformed);
        }
        match token {
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => {
                open.push(false);
                depth += 1;
                if depth > limits.max_sequence_depth {
                    return Err(ScanError::TooDeep(limits.max_sequence_depth));
                }
                if depth == 1 && matches!(token, LazyDataToken::PixelSequenceStart) {
                    out.pixel_data_len = Some(None);
                }
            }
            LazyDataToken::SequenceEnd => {
                open.pop();
                depth -= 1;
            }
            LazyDataToken::ItemStart { .. } => open.push(true),
            LazyDataToken::ItemEnd => {
                open.pop();
            }
            LazyDataToken::LazyItemValue {
                len: item_len,
                decoder,
            } => {
                within(decoder.position(), item_len, len)?;
                LazyDataToken::LazyItemValue {
                    len: item_len,
                    decoder,
                }
                .skip()
                .map_err(|_| ScanError::Malformed)?;
            }
            LazyDataToken::LazyValue { header, decoder } => {
                let value_len = header.length().get().ok_or(ScanError::Malformed)?;
                within(decoder.position(), value_len, len)?;
                // dicom-parser's full reader (dicom-object, in the pipeline) reads such a value
                // in whole numbers and leaves the rest unread: it then takes value bytes for the
                // next header and allocates the length it finds there, up to 4 GiB
                // (fuzz/regressions/scan/).
                if value_len % binary_size(header.vr) != 0 {
                    return Err(ScanError::Malformed);
                }
                let token = LazyDataToken::LazyValue { header, decoder };
                if depth > 0 {
                    token.skip().map_err(|_| ScanError::Malformed)?;
                    continue;
                }
                if header.tag == tags::PIXEL_DATA {
                    out.pixel_data_len = Some(Some(value_len as u64));
                    token.skip().map_err(|_| ScanError::Malformed)?;
                    continue;
                }
                if !WANTED.contains(&header.tag) || value_len > MAX_READ_VALUE {
                    token.skip().map_err(|_| ScanError::Malformed)?;
                    continue;
                }
                let value = token.into_value().map_err(|_| ScanError::Malformed)?;
                let text = value.to_str();
                let uint = || value.to_int::<u32>().ok();
                match header.tag {
                    tags::SOP_CLASS_UID => out.sop_class_uid = Some(trimmed(&text)),
                    tags::SOP_INSTANCE_UID => out.sop_instance_uid = Some(trimmed(&text)),
                    tags::STUDY_INSTANCE_UID => out.study_uid = Some(trimmed(&text)),
                    tags::SERIES_INSTANCE_UID => out.series_uid = Some(trimmed(&text)),
                    tags::PHOTOMETRIC_INTERPRETATION => out.photometric = Some(trimmed(&text)),
                    tags::IMAGE_TYPE => {
                        out.image_type = Some(value.to_multi_str().iter().map(|s| trimmed(s)).collect())
                    }
                    tags::ROWS => out.rows = uint(),
                    tags::COLUMNS => out.columns = uint(),
                    tags::BITS_ALLOCATED => out.bits_allocated = uint(),
                    tags::SAMPLES_PER_PIXEL => out.samples_per_pixel = uint(),
                    tags::NUMBER_OF_FRAMES => out.number_of_frames = trimmed(&text).parse().ok(),
                    _ => {}
                }
            }
            // Item delimiters and value-less headers; the enum is non-exhaustive.
            _ => {}
        }
    }
    if !open.is_empty() {
        return Err(ScanError::Malformed);
    }
    check_pixel_budget(&out, limits)?;
    Ok(out)
}

/// The size of one number of a binary VR (1 for the others): its values' lengths are multiples.
fn binary_size(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OF | VR::OL => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// A value of `value_len` bytes starting at `position` must end within the data set: seeking
/// past the end would not fail, so a truncated file is caught here.
fn within(position: u64, value_len: u32, len: u64) -> Result<(), ScanError> {
    if position.saturating_add(value_len as u64) > len {
        Err(ScanError::Malformed)
    } else {
        Ok(())
    }
}

/// Rows × Columns × frames × samples × bytes per sample, overflow-free, against the limit.
pub fn check_pixel_budget(s: &Scanned, limits: &Limits) -> Result<(), ScanError> {
    let bytes = [
        s.rows.unwrap_or(0) as u128,
        s.columns.unwrap_or(0) as u128,
        s.number_of_frames.unwrap_or(1).max(1) as u128,
        s.samples_per_pixel.unwrap_or(1).max(1) as u128,
        (s.bits_allocated.unwrap_or(8) as u128).div_ceil(8),
    ]
    .into_iter()
    .fold(1u128, u128::saturating_mul);
    if bytes > limits.max_pixel_bytes as u128 {
        return Err(ScanError::ImageTooLarge {
            bytes,
            limit: limits.max_pixel_bytes,
        });
    }
    Ok(())
}

/// Inflates a Deflated Explicit VR Little Endian data set (raw deflate, PS3.5 A.5) into
/// `into`, refusing to write more than `limit` bytes. Returns the inflated length.
pub fn inflate_limited<R: Read, W: std::io::Write>(
    deflated: R,
    into: &mut W,
    limit: u64,
) -> Result<u64, ScanError> {
    let mut inflater = flate2::read::DeflateDecoder::new(deflated).take(limit + 1);
    let n = std::io::copy(&mut inflater, into).map_err(|_| ScanError::Malformed)?;
    if n > limit {
        return Err(ScanError::InflatesTooFar(limit));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
    use std::io::Cursor;

    const LIMITS: Limits = Limits {
        max_sequence_depth: 16,
        max_pixel_bytes: 64 << 20,
        max_inflated_bytes: 64 << 20,
    };

    fn encoded(spec: &crate::fixture::MammogramSpec) -> (Vec<u8>, String) {
        let obj = crate::fixture::mammogram(spec);
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let sop = obj
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
        (bytes, sop)
    }

    #[test]
    fn a_mammogram_yields_what_ingest_checks() {
        let spec = crate::fixture::MammogramSpec::low_energy(1);
        let (bytes, sop) = encoded(&spec);
        let s = scan(
            Cursor::new(&bytes),
            bytes.len() as u64,
            &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(s.sop_instance_uid.as_deref(), Some(sop.as_str()));
        assert_eq!(s.rows, Some(spec.rows as u32));
        assert!(s.image_type.unwrap().iter().any(|v| v == "LOW_ENERGY"));
        assert_eq!(
            s.pixel_data_len,
            Some(Some(spec.rows as u64 * spec.columns as u64 * 2))
        );
        // Truncated anywhere in the pixels: refused, although every header before is whole.
        let cut = &bytes[..bytes.len() - 10];
        assert_eq!(
            scan(
                Cursor::new(cut),
                cut.len() as u64,
                &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                &LIMITS
            ),
            Err(ScanError::Malformed)
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        // 100,000 sequences of undefined length, each in an item of undefined length (Implicit
        // VR LE, tag (0040,A730) Content Sequence). This would overflow a recursive parser.
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[0x40, 0x00, 0x30, 0xA7, 0xFF, 0xFF, 0xFF, 0xFF]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let r = scan(
            Cursor::new(&bytes),
            bytes.len() as u64,
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            &LIMITS,
        );
        assert_eq!(r, Err(ScanError::TooDeep(16)));
    }

    #[test]
    fn a_stray_item_delimiter_is_refused_not_a_panic() {
        // Found by `make fuzz`: dicom-parser's lazy reader panicked on the item header after it.
        let bytes = [
            0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        let r = scan(
            Cursor::new(&bytes),
            16,
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            &LIMITS,
        );
        assert_eq!(r, Err(ScanError::Malformed));
    }

    #[test]
    fn a_binary_value_of_partial_numbers_is_refused() {
        // Found by `make fuzz`: (0000,0000) UL holding 2 bytes, then nested sequences, made
        // dicom-object read the next header 2 bytes early and allocate 4 GiB for it.
        let bytes = [0, 0, 0, 0, 2, 0, 0, 0, b'1', b' '];
        let r = scan(
            Cursor::new(&bytes),
            10,
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            &LIMITS,
        );
        assert_eq!(r, Err(ScanError::Malformed));
    }

    #[test]
    fn declared_geometry_is_checked_before_decoding() {
        let huge = Scanned {
            rows: Some(65535),
            columns: Some(65535),
            bits_allocated: Some(16),
            ..Default::default()
        };
        assert!(matches!(
            check_pixel_budget(&huge, &LIMITS),
            Err(ScanError::ImageTooLarge { .. })
        ));
        let absurd = Scanned {
            rows: Some(u32::MAX),
            columns: Some(u32::MAX),
            number_of_frames: Some(u64::MAX),
            samples_per_pixel: Some(u32::MAX),
            bits_allocated: Some(u32::MAX),
            ..Default::default()
        };
        assert!(check_pixel_budget(&absurd, &LIMITS).is_err(), "no overflow");
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "256 MiB of zeros deflate small");
        let mut sink = std::io::sink();
        assert_eq!(
            inflate_limited(&bomb[..], &mut sink, 8 << 20),
            Err(ScanError::InflatesTooFar(8 << 20))
        );
    }
}
