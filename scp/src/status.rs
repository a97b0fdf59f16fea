//! DIMSE status codes (PS3.4 Annex B.2.3, PS3.7 Annex C) used by the node.

pub const SUCCESS: u16 = 0x0000;
/// Warning: coercion of data elements.
pub const WARNING_COERCION: u16 = 0xB000;
/// Warning: data set does not match SOP class (stored anyway).
pub const WARNING_DATASET_MISMATCH: u16 = 0xB007;
/// Warning: elements discarded.
pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB006;
/// Refused: out of resources (e.g. the disk is above its watermark).
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// Error: data set does not match SOP class.
pub const DATASET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
/// Error: cannot understand (the data set could not be parsed).
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Refused: SOP class not supported.
pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// Failure: unrecognized operation.
pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
/// Failure: processing failure.
pub const PROCESSING_FAILURE: u16 = 0x0110;
/// Failure: duplicate SOP instance (PS3.7 Annex C); to a sender it means "already stored".
pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;

/// How a C-STORE response status reads, per PS3.4 B.2.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Success,
    Warning,
    Failure,
}

pub fn kind(status: u16) -> StatusKind {
    match status {
        SUCCESS => StatusKind::Success,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusKind::Warning,
        _ => StatusKind::Failure,
    }
}
