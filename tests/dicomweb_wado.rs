//! WADO-RS against a real node, checked by Python's dicomweb-client (tests/dicomweb/
//! wado_check.py): instances stored by dcmtk's storescu in several transfer syntaxes come back
//! as stored byte for byte or transcoded to Explicit VR LE, with metadata, frames, bulk data,
//! rendered images under their VOI, and the PS3.18 statuses for what cannot be answered.

mod common;

use std::path::Path;

use common::*;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use vcnode::fixture::{mammogram, MammogramSpec};

/// Native and the lossless image codecs (RLE and deflate add nothing for frames).
const SYNTAXES: &[(&str, &[&str], &str, &str)] = TRANSFER_SYNTAXES.split_at(5).0;

fn spec(seed: u64) -> MammogramSpec {
    MammogramSpec {
        rows: 256,
        columns: 208,
        ..MammogramSpec::low_energy(seed)
    }
}

#[test]
fn dicomweb_client_retrieves_metadata_frames_and_rendered_images() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut manifest = Vec::new();
    let mut send = |original: &Path, file: &Path, propose: &str, ts: &str| {
        let out = storescu(&node, "MODALITY", &[propose], &[file.to_path_buf()]);
        assert_eq!(successes(&out), 1, "{ts}: {}\n{}", text(&out), node.log());
        let obj = dicom_object::open_file(file).unwrap();
        let s = |tag| obj.element(tag).unwrap().to_str().unwrap().to_string();
        manifest.push(serde_json::json!({
            "sop": s(tags::SOP_INSTANCE_UID),
            "study": s(tags::STUDY_INSTANCE_UID),
            "series": s(tags::SERIES_INSTANCE_UID),
            "original": original,
            "sent": file,
            "ts": ts,
        }));
    };
    for (i, (tool, args, propose, ts)) in SYNTAXES.iter().enumerate() {
        let original = write_fixtures(&src, &[spec(i as u64 + 1)]).remove(0);
        let file = if tool.is_empty() {
            original.clone()
        } else {
            convert(tool, args, &original, &src.join(format!("ts-{i}.dcm")))
        };
        send(&original, &file, propose, ts);
    }
    // MONOCHROME1 with a Rescale and two windows: rendered with the first, inverted.
    let mut inverted = mammogram(&spec(10));
    for (tag, vr, value) in [
        (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1"),
        (tags::RESCALE_SLOPE, VR::DS, "2"),
        (tags::RESCALE_INTERCEPT, VR::DS, "-100"),
        (tags::RESCALE_TYPE, VR::LO, "US"),
        (tags::WINDOW_CENTER, VR::DS, "3900\\2000"),
        (tags::WINDOW_WIDTH, VR::DS, "6000\\4000"),
    ] {
        inverted.put_str(tag, vr, value);
    }
    let inverted_file = src.join("monochrome1.dcm");
    inverted.write_to_file(&inverted_file).unwrap();
    send(&inverted_file, &inverted_file, "-xe", "1.2.840.10008.1.2.1");

    let manifest_file = dir.path().join("manifest.json");
    std::fs::write(&manifest_file, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = dicomweb_script(
        "wado_check.py",
        &[
            std::ffi::OsString::from(format!("http://{}/dicomweb", node.http)),
            manifest_file.clone().into(),
            node.data_dir.clone().into(),
        ],
    );
    let report = text(&out);
    println!("{report}");
    assert!(
        out.status.success() && report.contains("ALL OK"),
        "{report}\nnode log:\n{}",
        node.log_tail(40)
    );
}
