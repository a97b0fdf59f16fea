//! DIMSE command sets (PS3.7 section 9): building requests and responses, reading the fields
//! the node acts on. Command sets are always Implicit VR Little Endian.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{dicom_value, DataElement, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::trim_value;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type value meaning "no data set follows".
pub const NO_DATASET: u16 = 0x0101;
const DATASET_PRESENT: u16 = 0x0000;
const PRIORITY_MEDIUM: u16 = 0x0000;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    // Boxed: dicom-object's errors are large, and every command result would carry their size.
    #[error("could not parse the DIMSE command set: {0}")]
    Parse(Box<dicom_object::ReadError>),
    #[error("could not write the DIMSE command set: {0}")]
    Write(Box<dicom_object::WriteError>),
    #[error("the DIMSE command set lacks {0}")]
    Missing(&'static str),
    #[error("not a flat command set: {0}")]
    NotFlat(&'static str),
}

/// Checks that `bytes` is a flat list of group 0000 elements with defined lengths, as every
/// DIMSE command set is (PS3.7 E.1). dicom-object's reader recurses into sequences without a
/// depth limit, so nested bytes from a peer must never reach it.
fn check_flat(bytes: &[u8]) -> Result<(), CommandError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(CommandError::NotFlat("truncated element header"));
        }
        let group = u16::from_le_bytes([rest[0], rest[1]]);
        let element = u16::from_le_bytes([rest[2], rest[3]]);
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if group != 0x0000 {
            return Err(CommandError::NotFlat("an element outside group 0000"));
        }
        if len == u32::MAX {
            return Err(CommandError::NotFlat("an element of undefined length"));
        }
        // dicom-parser reads a binary value in whole numbers, takes the rest for the next
        // header and allocates the length it finds there (1.9 GB for a 138-byte command set,
        // fuzz/regressions/command/).
        let vr = StandardDataDictionary
            .by_tag(Tag(group, element))
            .map(|e| e.vr().relaxed());
        let number = match vr {
            Some(VR::US | VR::SS) => 2,
            Some(VR::UL | VR::SL | VR::FL | VR::AT) => 4,
            Some(VR::FD) => 8,
            _ => 1,
        };
        if len % number != 0 {
            return Err(CommandError::NotFlat("a binary value that is not whole numbers"));
        }
        let end = 8usize
            .checked_add(len as usize)
            .filter(|&e| e <= rest.len())
            .ok_or(CommandError::NotFlat("an element longer than the command set"))?;
        rest = &rest[end..];
    }
    Ok(())
}

/// The fields of a received command set that the node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub message_id_responded_to: Option<u16>,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub has_dataset: bool,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
}

impl Command {
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        check_flat(bytes)?;
        let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|e| CommandError::Parse(Box::new(e)))?;
        let u16_of = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<u16>().ok());
        let str_of = |tag| {
            obj.element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| trim_value(&s).to_string())
        };
        Ok(Command {
            field: u16_of(tags::COMMAND_FIELD).ok_or(CommandError::Missing("Command Field"))?,
            message_id: u16_of(tags::MESSAGE_ID).unwrap_or(0),
            message_id_responded_to: u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO),
            affected_sop_class_uid: str_of(tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance_uid: str_of(tags::AFFECTED_SOP_INSTANCE_UID),
            has_dataset: u16_of(tags::COMMAND_DATA_SET_TYPE).is_some_and(|v| v != NO_DATASET),
            status: u16_of(tags::STATUS),
            error_comment: str_of(tags::ERROR_COMMENT),
        })
    }
}

fn encode(obj: InMemDicomObject) -> Result<Vec<u8>, CommandError> {
    let mut out = Vec::with_capacity(160);
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| CommandError::Write(Box::new(e)))?;
    Ok(out)
}

fn uid_element(tag: dicom_core::Tag, uid: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, dicom_value!(Str, uid))
}

fn us_element(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

pub fn c_echo_rsp(message_id: u16, status: u16) -> Result<Vec<u8>, CommandError> {
    encode(InMemDicomObject::command_from_element_iter([
        uid_element(tags::AFFECTED_SOP_CLASS_UID, crate::VERIFICATION),
        us_element(tags::COMMAND_FIELD, C_ECHO_RSP),
        us_element(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us_element(tags::COMMAND_DATA_SET_TYPE, NO_DATASET),
        us_element(tags::STATUS, status),
    ]))
}

pub fn c_echo_rq(message_id: u16) -> Result<Vec<u8>, CommandError> {
    encode(InMemDicomObject::command_from_element_iter([
        uid_element(tags::AFFECTED_SOP_CLASS_UID, crate::VERIFICATION),
        us_element(tags::COMMAND_FIELD, C_ECHO_RQ),
        us_element(tags::MESSAGE_ID, message_id),
        us_element(tags::COMMAND_DATA_SET_TYPE, NO_DATASET),
    ]))
}

/// A response to any request, for the generic failure paths (field = request field | 0x8000).
pub fn response(
    request_field: u16,
    message_id: u16,
    sop_class_uid: Option<&str>,
    sop_instance_uid: Option<&str>,
    status: u16,
    error_comment: Option<&str>,
) -> Result<Vec<u8>, CommandError> {
    let mut elements = Vec::with_capacity(7);
    if let Some(uid) = sop_class_uid {
        elements.push(uid_element(tags::AFFECTED_SOP_CLASS_UID, uid));
    }
    elements.push(us_element(tags::COMMAND_FIELD, request_field | 0x8000));
    elements.push(us_element(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id));
    elements.push(us_element(tags::COMMAND_DATA_SET_TYPE, NO_DATASET));
    elements.push(us_element(tags::STATUS, status));
    if let Some(uid) = sop_instance_uid {
        elements.push(uid_element(tags::AFFECTED_SOP_INSTANCE_UID, uid));
    }
    if let Some(comment) = error_comment {
        // Error Comment is LO: at most 64 characters.
        let comment: String = comment.chars().take(64).collect();
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            dicom_value!(Str, comment),
        ));
    }
    encode(InMemDicomObject::command_from_element_iter(elements))
}

pub fn c_store_rq(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, CommandError> {
    encode(InMemDicomObject::command_from_element_iter([
        uid_element(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(tags::COMMAND_FIELD, C_STORE_RQ),
        us_element(tags::MESSAGE_ID, message_id),
        us_element(tags::PRIORITY, PRIORITY_MEDIUM),
        us_element(tags::COMMAND_DATA_SET_TYPE, DATASET_PRESENT),
        uid_element(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips() {
        let bytes = c_store_rq(7, "1.2.840.10008.5.1.4.1.1.1.2", "1.2.3.4").unwrap();
        let cmd = Command::parse(&bytes).unwrap();
        assert_eq!(cmd.field, C_STORE_RQ);
        assert_eq!(cmd.message_id, 7);
        assert!(cmd.has_dataset);
        assert_eq!(cmd.affected_sop_instance_uid.as_deref(), Some("1.2.3.4"));
    }

    #[test]
    fn nested_or_foreign_command_sets_are_refused_before_parsing() {
        // A sequence of undefined length holding an item of undefined length, nested deeply.
        let mut nested = Vec::new();
        for _ in 0..100_000 {
            nested.extend_from_slice(&[0x00, 0x00, 0x00, 0x09, 0xFF, 0xFF, 0xFF, 0xFF]);
            nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert!(matches!(Command::parse(&nested), Err(CommandError::NotFlat(_))));
        let mut foreign = c_echo_rq(1).unwrap();
        foreign.extend_from_slice(&[0x08, 0x00, 0x18, 0x00, 0x02, 0x00, 0x00, 0x00, b'1', 0]);
        assert!(matches!(Command::parse(&foreign), Err(CommandError::NotFlat(_))));
        let mut truncated = c_echo_rq(1).unwrap();
        truncated.truncate(truncated.len() - 1);
        assert!(Command::parse(&truncated).is_err());
        // Command Group Length (UL) holding 2 bytes: dicom-object would read a header there.
        let mut partial = vec![0, 0, 0, 0, 2, 0, 0, 0, 0, 0];
        partial.extend_from_slice(&c_echo_rq(1).unwrap());
        assert!(matches!(Command::parse(&partial), Err(CommandError::NotFlat(_))));
    }

    #[test]
    fn failure_response_carries_status_and_truncated_comment() {
        let long = "x".repeat(100);
        let bytes = response(C_STORE_RQ, 9, Some("1.2"), Some("1.2.3"), 0xA900, Some(&long)).unwrap();
        let cmd = Command::parse(&bytes).unwrap();
        assert_eq!(cmd.field, C_STORE_RSP);
        assert_eq!(cmd.message_id_responded_to, Some(9));
        assert_eq!(cmd.status, Some(0xA900));
        assert!(!cmd.has_dataset);
        assert_eq!(cmd.error_comment.unwrap().len(), 64);
    }
}
