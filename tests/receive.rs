//! The storage SCP against real peers: dcmtk's echoscu/storescu, and vcnode's own SCU for the
//! malformed requests dcmtk refuses to send.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dicom_dictionary_std::tags;
use dicom_object::open_file;
use dicom_pixeldata::PixelDecoder;
use vcnode::fixture::{mammogram, pixels, MammogramSpec, CT_IMAGE_STORAGE};
use vcnode_scp::{status, StoreScu, StoreScuOptions};

#[test]
fn echo_answers_known_peers_and_rejects_unknown_titles_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");

    let ok = echoscu(&node, "MODALITY", "VCNODE");
    assert!(ok.status.success(), "{}", text(&ok));
    let anywhere = echoscu(&node, "ANYWHERE", "VCNODE");
    assert!(
        anywhere.status.success(),
        "a peer without host may call from anywhere: {}",
        text(&anywhere)
    );

    let stranger = echoscu(&node, "STRANGER", "VCNODE");
    assert!(!stranger.status.success());
    assert!(
        text(&stranger).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&stranger)
    );
    assert!(
        text(&stranger).contains("Rejected Permanent"),
        "{}",
        text(&stranger)
    );

    let wrong_host = echoscu(&node, "OTHERHOST", "VCNODE");
    assert!(!wrong_host.status.success());
    assert!(
        text(&wrong_host).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&wrong_host)
    );

    let wrong_called = echoscu(&node, "MODALITY", "NOTVCNODE");
    assert!(!wrong_called.status.success());
    assert!(
        text(&wrong_called).contains("Called AE Title Not Recognized"),
        "{}",
        text(&wrong_called)
    );

    // The node keeps serving after the rejections.
    assert!(echoscu(&node, "MODALITY", "VCNODE").status.success());
}

/// One low-energy image per accepted transfer syntax.
const SYNTAXES: &[(&str, &[&str], &str, &str)] = TRANSFER_SYNTAXES;

fn stored_path(node: &Node, uid: &str) -> PathBuf {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rel: String = rt.block_on(async {
        let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
        let p = sqlx::query_scalar("SELECT path FROM instances WHERE sop_instance_uid = ?")
            .bind(uid)
            .fetch_one(q.pool())
            .await
            .unwrap_or_else(|e| panic!("no row for {uid}: {e}"));
        q.close().await;
        p
    });
    node.data_dir.join(rel)
}

/// Every data element of `sent` is in `stored` with the same value (file meta aside).
fn assert_same_dataset(sent: &Path, stored: &Path) {
    let a = open_file(sent).unwrap();
    let b = open_file(stored).unwrap();
    let mut n = 0;
    for elem in a.iter() {
        let tag = elem.header().tag;
        if tag.element() == 0 {
            continue; // group lengths may be recomputed by the sender
        }
        let other = b
            .element(tag)
            .unwrap_or_else(|_| panic!("{tag} missing from {}", stored.display()));
        assert_eq!(
            elem.value(),
            other.value(),
            "{tag} differs in {}",
            stored.display()
        );
        n += 1;
    }
    assert!(n > 20, "compared only {n} elements");
}

#[test]
fn stores_low_energy_images_in_every_transfer_syntax_with_one_job_each() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    let src = dir.path().join("src");
    let mut sent = Vec::new();
    for (i, (tool, args, propose, ts)) in SYNTAXES.iter().enumerate() {
        let spec = MammogramSpec::low_energy(i as u64 + 1);
        let explicit = write_fixtures(&src, std::slice::from_ref(&spec)).remove(0);
        let file = if tool.is_empty() {
            explicit
        } else {
            convert(tool, args, &explicit, &src.join(format!("ts-{i}.dcm")))
        };
        let meta_ts = open_file(&file)
            .unwrap()
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        assert_eq!(&meta_ts, ts, "{tool} made the wrong transfer syntax");
        let out = storescu(&node, "MODALITY", &[propose], std::slice::from_ref(&file));
        assert_eq!(
            successes(&out),
            1,
            "{ts} not acknowledged: {}\n{}",
            text(&out),
            node.log()
        );
        sent.push((spec, file, *ts));
    }
    // A standard (non-CESM) mammogram: stored, no job.
    let plain = MammogramSpec {
        image_type: "ORIGINAL\\PRIMARY".into(),
        ..MammogramSpec::low_energy(100)
    };
    let plain_file = write_fixtures(&src, std::slice::from_ref(&plain)).remove(0);
    assert_eq!(
        successes(&storescu(
            &node,
            "MODALITY",
            &[],
            std::slice::from_ref(&plain_file)
        )),
        1
    );

    for (spec, file, ts) in &sent {
        let uid = sop_instance_uid(file);
        let stored = stored_path(&node, &uid);
        let obj = open_file(&stored).unwrap();
        assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), *ts);
        assert_eq!(
            obj.meta()
                .source_application_entity_title
                .as_deref()
                .map(str::trim),
            Some("MODALITY")
        );
        assert_same_dataset(file, &stored);
        // The stored pixel data decodes to exactly the pixels that were generated.
        let decoded = obj
            .decode_pixel_data()
            .unwrap_or_else(|e| panic!("{ts} does not decode: {e}"));
        let values: Vec<u16> = decoded.to_vec().unwrap();
        assert!(
            values == pixels(spec),
            "{ts}: decoded pixels differ from the source"
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(
            count(&node, "SELECT COUNT(*) FROM instances").await,
            SYNTAXES.len() as i64 + 1
        );
        assert_eq!(
            count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'queued'").await,
            SYNTAXES.len() as i64
        );
        let plain_uid = sop_instance_uid(&plain_file);
        let plain_jobs = count(
            &node,
            &format!("SELECT COUNT(*) FROM jobs WHERE source_uid = '{plain_uid}'"),
        )
        .await;
        assert_eq!(plain_jobs, 0, "a non-LE mammogram must not become a job");
    });

    // Sending the same instance again is acknowledged without a second job.
    let again = storescu(&node, "MODALITY", &[], &[sent[0].1.clone()]);
    assert_eq!(successes(&again), 1, "{}", text(&again));
    rt.block_on(async {
        assert_eq!(
            count(&node, "SELECT COUNT(*) FROM jobs").await,
            SYNTAXES.len() as i64
        );
    });
    let listing = node.jobs_cli();
    assert_eq!(listing.matches(" queued ").count(), SYNTAXES.len(), "{listing}");
    assert!(listing.contains(&sop_instance_uid(&sent[0].1)), "{listing}");
}

fn scu_options(node: &Node, sop_class: &str) -> StoreScuOptions {
    StoreScuOptions {
        calling_ae_title: "MODALITY".into(),
        called_ae_title: "VCNODE".into(),
        address: node.addr.to_string(),
        presentation_contexts: vec![
            (sop_class.into(), vec![vcnode_scp::EXPLICIT_VR_LE.into()]),
            (
                vcnode_scp::VERIFICATION.into(),
                vec![vcnode_scp::IMPLICIT_VR_LE.into()],
            ),
        ],
        max_pdu_length: 65536,
        timeout: std::time::Duration::from_secs(30),
        min_bytes_per_s: 0,
        tls: None,
    }
}

fn dataset_bytes(obj: &dicom_object::InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::new();
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    obj.write_dataset_with_ts(&mut out, &ts).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_input_with_the_proper_status_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");

    // A CT image: no presentation context is accepted for its class.
    let ct = MammogramSpec {
        sop_class_uid: CT_IMAGE_STORAGE.into(),
        ..MammogramSpec::low_energy(5)
    };
    let ct_file = write_fixtures(dir.path(), std::slice::from_ref(&ct)).remove(0);
    let out = storescu(&node, "MODALITY", &[], &[ct_file]);
    assert_eq!(successes(&out), 0);
    assert!(text(&out).contains("No presentation context"), "{}", text(&out));
    let scu_ct = StoreScu::connect(&scu_options(&node, CT_IMAGE_STORAGE))
        .await
        .unwrap();
    assert!(
        scu_ct.accepted_context(CT_IMAGE_STORAGE).is_none(),
        "CT must be rejected at negotiation"
    );
    scu_ct.release().await.unwrap();

    let mg = vcnode_scp::MG_FOR_PRESENTATION;
    let good = mammogram(&MammogramSpec::low_energy(7));
    let good_uid = sop_instance_uid_of(&good);
    let good_bytes = dataset_bytes(&good);
    let mut scu = StoreScu::connect(&scu_options(&node, mg)).await.unwrap();

    // Truncated in the middle of the pixel data.
    let truncated = &good_bytes[..good_bytes.len() / 2];
    let rsp = scu.store(mg, &good_uid, truncated).await.unwrap();
    assert_eq!(rsp.status & 0xF000, 0xC000, "truncated data set: {rsp:?}");
    assert!(rsp.error_comment.is_some());

    // Garbage.
    let rsp = scu
        .store(mg, &good_uid, b"\x08\x00\x16\x00UI\xff\xffgarbage")
        .await
        .unwrap();
    assert_eq!(rsp.status & 0xF000, 0xC000, "garbage: {rsp:?}");

    // A CT data set sent as a mammogram.
    let ct_obj = mammogram(&ct);
    let ct_uid = sop_instance_uid_of(&ct_obj);
    let rsp = scu.store(mg, &ct_uid, &dataset_bytes(&ct_obj)).await.unwrap();
    assert_eq!(rsp.status, status::DATASET_DOES_NOT_MATCH_SOP_CLASS, "{rsp:?}");

    // No pixel data.
    let mut no_pixels = good.clone().into_inner();
    no_pixels.remove_element(tags::PIXEL_DATA);
    let rsp = scu
        .store(mg, &good_uid, &dataset_bytes(&no_pixels))
        .await
        .unwrap();
    assert_eq!(rsp.status, status::DATASET_DOES_NOT_MATCH_SOP_CLASS, "{rsp:?}");

    // A SOP Instance UID that would escape data_dir if used as a path.
    let mut evil = good.clone().into_inner();
    evil.put_str(tags::SOP_INSTANCE_UID, dicom_core::VR::UI, "../../../tmp/x");
    let rsp = scu
        .store(mg, "../../../tmp/x", &dataset_bytes(&evil))
        .await
        .unwrap();
    assert_ne!(rsp.status, status::SUCCESS, "{rsp:?}");

    // Nothing refused was recorded; the same association still stores a good instance.
    assert_eq!(count(&node, "SELECT COUNT(*) FROM instances").await, 0);
    let rsp = scu.store(mg, &good_uid, &good_bytes).await.unwrap();
    assert_eq!(rsp.status, status::SUCCESS, "{rsp:?}");
    assert_eq!(scu.echo().await.unwrap(), status::SUCCESS);
    scu.release().await.unwrap();
    assert_eq!(count(&node, "SELECT COUNT(*) FROM jobs").await, 1);
    assert!(!dir.path().join("tmp/x.dcm").exists());
}

fn sop_instance_uid_of(obj: &dicom_object::FileDicomObject<dicom_object::InMemDicomObject>) -> String {
    obj.element(tags::SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_below_its_free_space_watermark_refuses_with_out_of_resources() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "[storage]\nmin_free_mb = 1000000000");
    let obj = mammogram(&MammogramSpec::low_energy(3));
    let mut scu = StoreScu::connect(&scu_options(&node, vcnode_scp::MG_FOR_PRESENTATION))
        .await
        .unwrap();
    let rsp = scu
        .store(
            vcnode_scp::MG_FOR_PRESENTATION,
            &sop_instance_uid_of(&obj),
            &dataset_bytes(&obj),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status, status::OUT_OF_RESOURCES, "{rsp:?}");
    scu.release().await.unwrap();
    assert_eq!(count(&node, "SELECT COUNT(*) FROM instances").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_beyond_the_limit_get_a_transient_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "max_associations = 1");
    let held = StoreScu::connect(&scu_options(&node, vcnode_scp::MG_FOR_PRESENTATION))
        .await
        .unwrap();
    let busy = tokio::task::spawn_blocking({
        let port = node.port();
        move || {
            std::process::Command::new(ECHOSCU)
                .args(["-v", "-aet", "MODALITY", "-aec", "VCNODE", "127.0.0.1", &port])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!busy.status.success());
    assert!(text(&busy).contains("Rejected Transient"), "{}", text(&busy));
    assert!(text(&busy).contains("Local Limit Exceeded"), "{}", text(&busy));
    held.release().await.unwrap();
    // The slot frees once the node has processed the release; wait for that, bounded.
    let mut ok = false;
    for _ in 0..100 {
        if echoscu(&node, "MODALITY", "VCNODE").status.success() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the node did not accept again after the held association was released"
    );
}
