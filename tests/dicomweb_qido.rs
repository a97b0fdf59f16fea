//! QIDO-RS against a real node: LE images stored by C-STORE (dcmtk's storescu) are found by
//! Python's dicomweb-client (tests/dicomweb/qido_search.py) and by the exact requests OHIF
//! makes; a derived series made by the shipped generator is found and marked AI-generated.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use serde_json::Value;
use vcnode::fixture::{mammogram, MammogramSpec};

/// Writes an LE image of study `study_seed` with the given patient and study date.
fn le_image(dir: &Path, seed: u64, study_seed: u64, patient: (&str, &str), date: &str) -> PathBuf {
    let spec = MammogramSpec {
        study_seed,
        ..MammogramSpec::low_energy(seed)
    };
    let mut obj = mammogram(&spec);
    for (tag, vr, v) in [
        (tags::PATIENT_ID, VR::LO, patient.0),
        (tags::PATIENT_NAME, VR::PN, patient.1),
        (tags::STUDY_DATE, VR::DA, date),
    ] {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("le-{seed}.dcm"));
    obj.write_to_file(&path).unwrap();
    path
}

/// GET `path_and_query` under /dicomweb as OHIF sends it; the status, headers and body.
async fn get(node: &Node, path_and_query: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/dicomweb{path_and_query}", node.http))
        .header("Accept", "application/dicom+json")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn get_json(node: &Node, path_and_query: &str) -> Vec<Value> {
    let (status, headers, body) = get(node, path_and_query).await;
    assert_eq!(status, 200, "{path_and_query}: {body}");
    assert_eq!(headers["content-type"], "application/dicom+json");
    serde_json::from_str(&body).unwrap()
}

fn first<'a>(dataset: &'a Value, tag: &str) -> &'a Value {
    &dataset[tag]["Value"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_studies_are_found_by_dicomweb_client_and_by_ohifs_requests() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    let files = dir.path().join("in");
    let images = [
        le_image(&files, 1, 101, ("QIDO-A", "Doe^Jane"), "20250110"),
        le_image(&files, 2, 101, ("QIDO-A", "Doe^Jane"), "20250110"),
        le_image(&files, 3, 102, ("QIDO-B", "Roe^Richard"), "20260315"),
        le_image(&files, 4, 103, ("QIDO-C", "Doe^John"), "20261201"),
    ];
    let out = storescu(&node, "MODALITY", &[], &images);
    assert_eq!(successes(&out), 4, "{}", text(&out));
    let studies = serde_json::json!({
        "QIDO-A": study_uid(&images[0]),
        "QIDO-B": study_uid(&images[2]),
        "QIDO-C": study_uid(&images[3]),
    });

    let run = dicomweb_script(
        "qido_search.py",
        &[format!("http://{}/dicomweb", node.http), studies.to_string()],
    );
    assert!(
        run.status.success(),
        "qido_search.py failed:\n{}\nnode log:\n{}",
        text(&run),
        node.log_tail(40)
    );

    // OHIF's study list, exactly as it asks.
    let a = studies["QIDO-A"].as_str().unwrap();
    let list = get_json(
        &node,
        "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060,00080090,00100030",
    )
    .await;
    assert_eq!(list.len(), 3);
    assert_eq!(first(&list[0], "00080020"), "20261201", "newest study first");
    for study in &list {
        assert_eq!(first(study, "00100030"), "19700101", "included PatientBirthDate");
        assert_eq!(first(study, "00080061"), "MG");
        let url = first(study, "00081190").as_str().unwrap();
        assert!(
            url.starts_with(&format!("http://{}/dicomweb/studies/", node.http)),
            "{url}"
        );
    }
    let one = get_json(&node, &format!("/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060,00080090,00100030&StudyInstanceUID={a}")).await;
    assert_eq!(one.len(), 1);
    assert_eq!(first(&one[0], "0020000D"), a);
    // Priors by PatientID tag.
    let priors = get_json(&node, "/studies?00100020=QIDO-A").await;
    assert_eq!(priors.len(), 1);
    assert_eq!(first(&priors[0], "00100010")["Alphabetic"], "Doe^Jane");
    // The series of a study as OHIF asks for them.
    let series = get_json(
        &node,
        &format!("/studies/{a}/series?includefield=00080021,00080031,0008103E,00200011"),
    )
    .await;
    assert_eq!(series.len(), 1);
    assert_eq!(first(&series[0], "00080060"), "MG");
    assert_eq!(first(&series[0], "00200011"), 1, "SeriesNumber (IS) as a number");
    assert_eq!(first(&series[0], "00201209"), 2);
    assert!(first(&series[0], "00081190")
        .as_str()
        .unwrap()
        .ends_with(&format!(
            "/studies/{a}/series/{}",
            first(&series[0], "0020000E").as_str().unwrap()
        )),);
    // Nothing found: 200 with an empty array.
    assert!(get_json(&node, "/studies?PatientID=NOBODY").await.is_empty());

    // Bad queries: 400 with the reason, in the body and a Warning header; the node serves on.
    for (query, reason) in [
        ("/studies?StudyDate=2026-01-01", "not a date"),
        ("/studies?NoSuchKey=1", "not a query parameter"),
        ("/studies?00291010=x", "not supported"),
        ("/studies?limit=many", "limit"),
        ("/instances?StudyInstanceUID=1.2.*", "UID"),
    ] {
        let (status, headers, body) = get(&node, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(reason), "{query}: {body}");
        assert!(headers["warning"].to_str().unwrap().starts_with("299 "));
    }
    assert_eq!(get_json(&node, "/instances").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_series_is_found_and_marked_ai_generated() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_processing(dir.path(), "", "");
    let le = le_image(
        &dir.path().join("in"),
        7,
        107,
        ("QIDO-D", "Doe^Derived"),
        "20261203",
    );
    let study = study_uid(&le);
    let out = storescu(&node, "MODALITY", &[], std::slice::from_ref(&le));
    assert_eq!(successes(&out), 1, "{}", text(&out));
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM jobs WHERE state = 'done'",
        1,
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(done, 1, "job not done; log:\n{}", node.log_tail(40));

    let studies = get_json(&node, "/studies?PatientID=QIDO-D").await;
    assert_eq!(
        first(&studies[0], "00201206"),
        2,
        "the LE series and the derived one"
    );
    let series = get_json(&node, &format!("/studies/{study}/series")).await;
    assert_eq!(series.len(), 2);
    let derived: Vec<&Value> = series
        .iter()
        .filter(|s| {
            first(s, "0008103E")
                .as_str()
                .unwrap_or("")
                .starts_with("AI SYNTHETIC RC")
        })
        .collect();
    assert_eq!(derived.len(), 1, "{series:?}");
    assert_eq!(first(derived[0], "0008001C"), "YES", "Synthetic Data");
    let received = series.iter().find(|s| s["0008001C"].get("Value").is_none());
    assert!(
        received.is_some(),
        "the LE series is not marked synthetic: {series:?}"
    );

    let derived_uid = first(derived[0], "0020000E").as_str().unwrap();
    let instances = get_json(&node, &format!("/studies/{study}/series/{derived_uid}/instances")).await;
    assert_eq!(instances.len(), 1);
    assert_eq!(
        instances[0]["00080008"]["Value"],
        serde_json::json!(["DERIVED", "SECONDARY"])
    );
    assert_eq!(first(&instances[0], "0008001C"), "YES");
    assert_eq!(
        first(&instances[0], "00080016"),
        vcnode::derive::SECONDARY_CAPTURE
    );
    assert_eq!(first(&instances[0], "00280010"), 512, "Rows of the LE image");
    // Its study, by a series-level key: the studies with such a series.
    let studies = get_json(&node, "/studies?SeriesDescription=AI%20SYNTHETIC*").await;
    assert_eq!(studies.len(), 1);
    assert_eq!(first(&studies[0], "0020000D"), study.as_str());
    // Found by its description with a wildcard, across studies.
    let by_description = get_json(&node, "/series?SeriesDescription=AI%20SYNTHETIC*").await;
    assert_eq!(by_description.len(), 1);
    assert_eq!(
        first(&by_description[0], "00100020"),
        "QIDO-D",
        "study attributes in /series"
    );
}
