//! One streaming pass over a received data set: the checks ingest needs, with bounded memory
//! and no recursion.
//!
//! dicom-object's reader recurses into sequences without a depth limit and loads every value,
//! so a peer's bytes are first walked here with dicom-parser's token reader, which keeps its
//! nesting on a heap stack and skips values it is not asked for. Only the few top-level values
//! ingest needs are read (and only when short); Pixel Data is measured, never loaded. A deflated
//! data set is inflated as it is walked, under a byte limit, and never written anywhere.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

use dicom_core::header::HasLength;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntax;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;

use crate::queue::IndexedAttributes;

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
    #[error("more than {MAX_ELEMENTS} data elements")]
    TooManyElements,
    #[error("a value ingest relies on is not readable")]
    UnreadableValue(Tag),
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
    /// The raw values of Specific Character Set and of the attributes the DICOMweb index keeps
    /// ([`IndexedAttributes`]), decoded once the walk is done ([`Scanned::indexed_attributes`]).
    pub indexed: Vec<(Tag, Vec<u8>)>,
}

impl Scanned {
    /// The DICOMweb index's attributes of the data set, its text decoded by its Specific
    /// Character Set (as UTF-8 where that set is unknown or the bytes do not fit it).
    pub fn indexed_attributes(&self) -> IndexedAttributes {
        use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
        let charset = self
            .indexed
            .iter()
            .find(|(tag, _)| *tag == tags::SPECIFIC_CHARACTER_SET)
            .and_then(|(_, raw)| {
                let codes = String::from_utf8_lossy(raw).into_owned();
                let first = codes
                    .split('\\')
                    .map(|c| c.trim_matches([' ', '\0']))
                    .find(|c| !c.is_empty())?
                    .to_string();
                SpecificCharacterSet::from_code(&first)
            })
            .unwrap_or_default();
        let mut attrs = IndexedAttributes::default();
        for (tag, raw) in &self.indexed {
            let text = charset
                .decode(raw)
                .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned());
            attrs.set(*tag, &text);
        }
        for (tag, n) in [
            (tags::ROWS, self.rows.map(u64::from)),
            (tags::COLUMNS, self.columns.map(u64::from)),
            (tags::BITS_ALLOCATED, self.bits_allocated.map(u64::from)),
            (tags::NUMBER_OF_FRAMES, self.number_of_frames),
        ] {
            if let Some(n) = n {
                attrs.set(tag, &n.to_string());
            }
        }
        attrs
    }
}

/// The longest value ingest reads. Every value it needs is far shorter; one that is longer is
/// refused rather than skipped, so a padded value cannot pass as missing.
const MAX_READ_VALUE: u32 = 1024;

/// The longest value of an indexed attribute that is kept; a longer one is not indexed (left
/// out of QIDO-RS answers), not refused: nothing in ingest relies on it.
const MAX_INDEXED_VALUE: u32 = 1024;

/// Whether a top-level element is read for the DICOMweb index (besides [`WANTED`]).
fn read_for_index(tag: Tag) -> bool {
    (tag == tags::SPECIFIC_CHARACTER_SET || IndexedAttributes::is_indexed(tag)) && !WANTED.contains(&tag)
}

/// Elements (at any depth) a data set may have. A mammogram has a few hundred; millions of empty
/// elements cost nothing here but would each become an object when a job loads the file.
pub const MAX_ELEMENTS: usize = 1 << 18;

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

/// How long the data set being walked may be.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// A file of this many bytes: a value reaching past it means a truncated data set.
    Exact(u64),
    /// Inflating: a value reaching past this many bytes means a deflate bomb.
    Inflated(u64),
}

/// Counts the bytes the parser really got, and tells it its position: dicom-parser's lazy
/// reader skips values by reading them (it never seeks), so a forward-only source is enough,
/// and a skip that ran into the end shows as fewer bytes counted than the parser assumed.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl<R> Seek for Counted<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::Current(0) => Ok(self.count.get()),
            _ => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }
}

/// Walks a data set of `len` bytes from `source` in `ts` (not deflated: see [`scan_deflated`]).
pub fn scan<R: Read>(
    source: R,
    len: u64,
    ts: &TransferSyntax,
    limits: &Limits,
) -> Result<Scanned, ScanError> {
    walk(source, Bound::Exact(len), ts, limits)
}

/// Walks a Deflated Explicit VR Little Endian data set (raw deflate, PS3.5 A.5) as it inflates,
/// refusing it once it inflates past `limits.max_inflated_bytes`.
pub fn scan_deflated<R: Read>(deflated: R, limits: &Limits) -> Result<Scanned, ScanError> {
    let limit = limits.max_inflated_bytes;
    let inflated = flate2::read::DeflateDecoder::new(deflated).take(limit.saturating_add(1));
    let explicit = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    walk(inflated, Bound::Inflated(limit), &explicit, limits)
}

fn walk<R: Read>(
    source: R,
    bound: Bound,
    ts: &TransferSyntax,
    limits: &Limits,
) -> Result<Scanned, ScanError> {
    let consumed = Rc::new(Cell::new(0u64));
    let source = Counted {
        inner: source,
        count: consumed.clone(),
    };
    // A value of `value_len` bytes at `position` must end within the bound, and once skipped
    // must have been there to read.
    let within = |position: u64, value_len: u32| match bound {
        Bound::Exact(len) if position.saturating_add(value_len as u64) > len => Err(ScanError::Malformed),
        Bound::Inflated(limit) if position.saturating_add(value_len as u64) > limit => {
            Err(ScanError::InflatesTooFar(limit))
        }
        _ => Ok(position + value_len as u64),
    };
    let arrived = |end: u64| {
        if consumed.get() < end {
            Err(ScanError::Malformed)
        } else {
            Ok(())
        }
    };
    let mut reader = LazyDataSetReader::new_with_ts(source, ts).map_err(|_| ScanError::Malformed)?;
    let mut out = Scanned::default();
    let mut depth = 0usize;
    let mut elements = 0usize;
    // Open sequences (false) and items (true). dicom-parser 0.10's lazy reader pops its own
    // stack on a stray delimiter and then panics on the next item header
    // (fuzz/regressions/scan/), so a token that does not fit what is open is refused at once.
    let mut open: Vec<bool> = Vec::new();
    // The tags met in the data set and in each open item. dicom-object keeps the last of a
    // repeated tag where this walk checks the first, so a repeated tag would let the pipeline
    // read another UID or geometry than ingest checked: refused (PS3.5 7.1: a tag occurs once).
    let mut seen: Vec<HashSet<Tag>> = vec![HashSet::new()];
    let first_time = |seen: &mut Vec<HashSet<Tag>>, tag: Tag| {
        if seen.last_mut().is_some_and(|level| level.insert(tag)) {
            Ok(())
        } else {
            Err(ScanError::Malformed)
        }
    };
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
        match &token {
            LazyDataToken::SequenceStart { tag, .. } => first_time(&mut seen, *tag)?,
            LazyDataToken::PixelSequenceStart => first_time(&mut seen, tags::PIXEL_DATA)?,
            LazyDataToken::LazyValue { header, .. } => first_time(&mut seen, header.tag)?,
            LazyDataToken::ItemStart { .. } => seen.push(HashSet::new()),
            LazyDataToken::ItemEnd => {
                seen.pop();
            }
            _ => {}
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
                let end = within(decoder.position(), item_len)?;
                LazyDataToken::LazyItemValue {
                    len: item_len,
                    decoder,
                }
                .skip()
                .map_err(|_| ScanError::Malformed)?;
                arrived(end)?;
            }
            LazyDataToken::LazyValue { header, decoder } => {
                let value_len = header.length().get().ok_or(ScanError::Malformed)?;
                let end = within(decoder.position(), value_len)?;
                // dicom-parser's full reader (dicom-object, in the pipeline) reads such a value
                // in whole numbers and leaves the rest unread: it then takes value bytes for the
                // next header and allocates the length it finds there, up to 4 GiB
                // (fuzz/regressions/scan/).
                if value_len % binary_size(header.vr) != 0 {
                    return Err(ScanError::Malformed);
                }
                let token = LazyDataToken::LazyValue { header, decoder };
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(ScanError::TooManyElements);
                }
                let wanted = depth == 0 && WANTED.contains(&header.tag);
                if wanted && value_len > MAX_READ_VALUE {
                    return Err(ScanError::UnreadableValue(header.tag));
                }
                if depth == 0 && header.tag == tags::PIXEL_DATA {
                    out.pixel_data_len = Some(Some(value_len as u64));
                }
                if depth == 0 && read_for_index(header.tag) && value_len <= MAX_INDEXED_VALUE {
                    let mut raw = Vec::with_capacity(value_len as usize);
                    token
                        .read_value_into(&mut raw)
                        .map_err(|_| ScanError::Malformed)?;
                    arrived(end)?;
                    out.indexed.push((header.tag, raw));
                    continue;
                }
                if !wanted {
                    token.skip().map_err(|_| ScanError::Malformed)?;
                    arrived(end)?;
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
                    // As dicom-rs reads it when decoding: the first value, as an integer. A
                    // value it cannot read is refused, not taken for one frame.
                    tags::NUMBER_OF_FRAMES => {
                        out.number_of_frames = Some(
                            value
                                .to_int::<u64>()
                                .map_err(|_| ScanError::UnreadableValue(header.tag))?,
                        )
                    }
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

    /// The walk of a data set in Explicit VR Little Endian, under [`LIMITS`].
    fn scan_explicit_le(bytes: &[u8]) -> Result<Scanned, ScanError> {
        scan(
            Cursor::new(bytes),
            bytes.len() as u64,
            &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            &LIMITS,
        )
    }

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
        let s = scan_explicit_le(&bytes).unwrap();
        assert_eq!(s.sop_instance_uid.as_deref(), Some(sop.as_str()));
        assert_eq!(s.rows, Some(spec.rows as u32));
        assert!(s.image_type.unwrap().iter().any(|v| v == "LOW_ENERGY"));
        assert_eq!(
            s.pixel_data_len,
            Some(Some(spec.rows as u64 * spec.columns as u64 * 2))
        );
        // Truncated anywhere in the pixels: refused, although every header before is whole.
        let cut = &bytes[..bytes.len() - 10];
        assert_eq!(scan_explicit_le(cut), Err(ScanError::Malformed));
    }

    #[test]
    fn the_same_walk_reads_what_the_dicomweb_index_keeps() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let spec = crate::fixture::MammogramSpec::low_energy(5);
        let mut obj = crate::fixture::mammogram(&spec);
        // ISO_IR 100 (Latin-1), as the fixture declares: decoded, not taken for UTF-8.
        obj.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("Müller^Anna"),
        ));
        // Longer than any indexed value may be: left out, not refused.
        obj.put(DataElement::new(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from("x".repeat(2000)),
        ));
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let s = scan_explicit_le(&bytes).unwrap();
        let attrs = s.indexed_attributes();
        assert_eq!(attrs.get(tags::PATIENT_NAME), Some("Müller^Anna"));
        assert_eq!(attrs.get(tags::PATIENT_ID), Some("FIX1"));
        assert_eq!(attrs.get(tags::STUDY_DATE), Some("20261126"));
        assert_eq!(attrs.get(tags::MODALITY), Some("MG"));
        assert_eq!(attrs.get(tags::VIEW_POSITION), Some("CC"));
        assert_eq!(attrs.get(tags::ROWS), Some("512"));
        assert_eq!(attrs.get(tags::STUDY_DESCRIPTION), None);
        let raw_name = s.indexed.iter().find(|(t, _)| *t == tags::PATIENT_NAME).unwrap();
        assert!(raw_name.1.contains(&0xFC), "written as Latin-1: {:?}", raw_name.1);
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
    fn number_of_frames_is_read_as_a_decoder_reads_it() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let spec = crate::fixture::MammogramSpec::low_energy(2);
        let scan_frames = |value: &str| {
            let mut obj = crate::fixture::mammogram(&spec);
            obj.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from(value),
            ));
            let mut bytes = Vec::new();
            obj.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap();
            scan_explicit_le(&bytes)
        };
        // Found by the hostile suite: a second, empty value and a zero-padded value both
        // passed as one frame while the decoder would read 100000.
        assert!(matches!(
            scan_frames("100000\\"),
            Err(ScanError::ImageTooLarge { .. })
        ));
        let padded = format!("{}100000", "0".repeat(1100));
        assert_eq!(
            scan_frames(&padded),
            Err(ScanError::UnreadableValue(tags::NUMBER_OF_FRAMES))
        );
        assert_eq!(scan_frames("1").unwrap().number_of_frames, Some(1));
    }

    #[test]
    fn a_repeated_tag_is_refused() {
        // Found by `make fuzz`: the walk checked the first SOP Instance UID, dicom-object (the
        // pipeline) keeps the last.
        let (mut bytes, _) = encoded(&crate::fixture::MammogramSpec::low_energy(4));
        let again = [0x08, 0x00, 0x18, 0x00, b'U', b'I', 4, 0, b'1', b'.', b'2', 0];
        bytes.splice(0..0, again.iter().copied());
        // Not ascending either way; what counts is that (0008,0018) now occurs twice.
        let r = scan_explicit_le(&bytes);
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
        // 256 private OB elements (0009,1000-10FF) of 1 MiB of zeros each: a valid data set of 256 MiB.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for n in 0..256u16 {
            let element = (0x1000 + n).to_le_bytes();
            enc.write_all(&[0x09, 0x00, element[0], element[1], b'O', b'B', 0, 0])
                .unwrap();
            enc.write_all(&(1u32 << 20).to_le_bytes()).unwrap();
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "256 MiB of zeros deflate small");
        let limits = Limits {
            max_inflated_bytes: 8 << 20,
            ..LIMITS
        };
        assert_eq!(
            scan_deflated(&bomb[..], &limits),
            Err(ScanError::InflatesTooFar(8 << 20))
        );
        // A whole data set deflated is walked as it inflates.
        let (bytes, sop) = encoded(&crate::fixture::MammogramSpec::low_energy(3));
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        let deflated = enc.finish().unwrap();
        let s = scan_deflated(&deflated[..], &LIMITS).unwrap();
        assert_eq!(s.sop_instance_uid, Some(sop));
        assert_eq!(
            scan_deflated(&deflated[..deflated.len() / 2], &LIMITS),
            Err(ScanError::Malformed)
        );
    }
}
