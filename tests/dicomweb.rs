//! Issue 14's acceptance round trip: Python's dicomweb-client (a client nobody here wrote)
//! stores LE images in a processing `vcnode serve` by STOW-RS, finds them by QIDO-RS, retrieves
//! them by WADO-RS byte for byte, checks `rendered` against the decoded image under its window,
//! and once the node has processed them finds, retrieves and renders the derived series.

mod common;

use std::time::Duration;

use common::*;
use vcnode::fixture::{mammogram, MammogramSpec};

const LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_stores_finds_retrieves_and_renders_le_images_and_their_derived_series() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_processing(dir.path(), "", "");
    // Study A: three LE images (left and right); study B: one. The script gives each study a
    // patient, a date and a name of its own before it sends them.
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    for (name, seed, study_seed) in [("a", 21, 1), ("a", 22, 1), ("a", 23, 1), ("b", 24, 2)] {
        let spec = MammogramSpec {
            study_seed,
            ..MammogramSpec::low_energy(seed)
        };
        mammogram(&spec)
            .write_to_file(fixtures.join(format!("study-{name}-{seed}.dcm")))
            .unwrap();
    }
    let state = dir.path().join("roundtrip.json");
    let base = format!("http://{}/dicomweb", node.http);

    let out = dicomweb_script(
        "client_roundtrip.py",
        &[
            "store".as_ref(),
            base.as_ref(),
            fixtures.as_os_str(),
            state.as_os_str(),
        ],
    );
    assert!(
        out.status.success(),
        "{}\nnode log:\n{}",
        text(&out),
        node.log_tail(40)
    );

    // The node processes what STOW-RS stored, as it would C-STOREd images.
    let done = wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 4, LIMIT).await;
    assert_eq!(done, 4, "{}\n{}", node.jobs_cli(), node.log_tail(40));
    assert_eq!(derived_uids(&node).await.len(), 4);

    let out = dicomweb_script(
        "client_roundtrip.py",
        &["derived".as_ref(), base.as_ref(), state.as_os_str()],
    );
    assert!(
        out.status.success(),
        "{}\nnode log:\n{}",
        text(&out),
        node.log_tail(40)
    );
}
