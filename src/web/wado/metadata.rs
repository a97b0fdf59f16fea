//! Instance metadata in DICOM JSON (PS3.18 Annex F) read without the pixel data: every
//! attribute of the data set up to Pixel Data, the Transfer Syntax UID (viewers pick the frame
//! decoder by it), and bulk data (Pixel Data, long binary values) as a `BulkDataURI` on the
//! request's own origin.

use std::path::Path;

use dicom_core::header::Header;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_json::DicomJson;
use dicom_object::OpenFileOptions;
use serde_json::{json, Map, Value};

use super::frames::is_encapsulated;
use crate::queue::StoredInstance;

/// Binary values longer than this are bulk data, served under `bulkdata/{tag}` instead of
/// inline base64 (PS3.18 F.2.7).
pub const BULK_THRESHOLD: u32 = 1024;

fn is_binary(vr: VR) -> bool {
    matches!(vr, VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN)
}

/// `GGGGEEEE`, as DICOM JSON names an attribute and as bulk data URLs end.
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// The WADO-RS URL of an instance, under `base` (`{origin}/dicomweb`).
pub fn instance_url(base: &str, inst: &StoredInstance) -> String {
    format!(
        "{base}/studies/{}/series/{}/instances/{}",
        inst.study_uid, inst.series_uid, inst.sop_instance_uid
    )
}

/// The metadata of one stored instance. Blocking.
pub fn instance_metadata(
    path: &Path,
    inst: &StoredInstance,
    base: &str,
) -> Result<Value, dicom_object::ReadError> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)?;
    let url = instance_url(base, inst);
    let mut map = Map::new();
    map.insert(
        tag_key(tags::TRANSFER_SYNTAX_UID),
        json!({"vr": "UI", "Value": [obj.meta().transfer_syntax().trim_end_matches('\0')]}),
    );
    for elem in obj.iter() {
        let tag = elem.tag();
        let key = tag_key(tag);
        let bulk = is_binary(elem.vr())
            && elem
                .value()
                .primitive()
                .is_some_and(|p| p.to_bytes().len() > BULK_THRESHOLD as usize);
        let value = if bulk {
            json!({"vr": elem.vr().to_string(), "BulkDataURI": format!("{url}/bulkdata/{key}")})
        } else {
            serde_json::to_value(DicomJson::from(elem))
                .unwrap_or_else(|_| json!({"vr": elem.vr().to_string()}))
        };
        map.insert(key, value);
    }
    // Pixel Data was not read: it is always bulk data. OW for native words, else OB.
    if obj.element(tags::ROWS).is_ok() {
        let bits = obj
            .element(tags::BITS_ALLOCATED)
            .ok()
            .and_then(|e| e.to_int::<u16>().ok())
            .unwrap_or(16);
        let vr = if is_encapsulated(obj.meta().transfer_syntax()) || bits <= 8 {
            "OB"
        } else {
            "OW"
        };
        map.insert(
            tag_key(tags::PIXEL_DATA),
            json!({"vr": vr, "BulkDataURI": format!("{url}/bulkdata/{}", tag_key(tags::PIXEL_DATA))}),
        );
    }
    Ok(Value::Object(map))
}
