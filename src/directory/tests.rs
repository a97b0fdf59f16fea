use super::*;
use crate::queue::Queue;

fn config(toml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load_with_env(Some(&path), Vec::<(String, String)>::new()).unwrap()
}

const FILE: &str = "[[peers]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\n[[peers]]\nae_title = \"CT\"\n\
    [[destinations]]\nname = \"pacs\"\nkind = \"dimse\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = 104\n\
    [[routes]]\nfrom_ae = \"*\"\nto = [\"pacs\"]\n";

fn peer(ae: &str) -> PeerConfig {
    PeerConfig {
        ae_title: ae.into(),
        host: None,
        enabled: true,
    }
}

fn titles(d: &Directory) -> Vec<(String, Origin)> {
    d.snapshot()
        .peers
        .iter()
        .map(|e| (e.def.ae_title.clone(), e.origin))
        .collect()
}

#[tokio::test]
async fn the_file_seeds_and_what_the_api_did_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let file = config(FILE);
    let d = Directory::open_seeded(queue.pool().clone(), &file).await.unwrap();
    assert_eq!(
        titles(&d),
        [
            ("MODALITY".to_string(), Origin::Config),
            ("CT".to_string(), Origin::Config)
        ]
    );
    assert_eq!(d.live().scp_peers().load().len(), 2);

    d.remove::<PeerConfig>("CT").await.unwrap();
    d.create(peer("MR")).await.unwrap();
    d.replace(
        "MODALITY",
        PeerConfig {
            enabled: false,
            ..peer("MODALITY")
        },
    )
    .await
    .unwrap();
    let peers = d.live().scp_peers().load_full();
    assert_eq!(
        peers.iter().map(|p| p.ae_title.as_str()).collect::<Vec<_>>(),
        ["MR"],
        "a disabled peer is not let in"
    );

    // A restart with the same file: the deletion and the changes stand.
    let d = Directory::open_seeded(queue.pool().clone(), &file).await.unwrap();
    assert_eq!(
        titles(&d),
        [
            ("MODALITY".to_string(), Origin::Api),
            ("MR".to_string(), Origin::Api)
        ]
    );
    assert!(!d.snapshot().peers[0].def.enabled);

    // The file's untouched entries follow it: a new one is added, a changed one changes,
    // one taken out goes.
    let edited = config(
        "[[peers]]\nae_title = \"MODALITY\"\n[[peers]]\nae_title = \"CT\"\n[[peers]]\nae_title = \"US\"\n\
         [[destinations]]\nname = \"pacs\"\nkind = \"dimse\"\nae_title = \"PACS\"\nhost = \"10.0.0.1\"\nport = 104\n",
    );
    let d = Directory::open_seeded(queue.pool().clone(), &edited)
        .await
        .unwrap();
    assert_eq!(
        titles(&d),
        [
            ("MODALITY".to_string(), Origin::Api),
            ("MR".to_string(), Origin::Api),
            ("US".to_string(), Origin::Config)
        ]
    );
    let snapshot = d.snapshot();
    assert_eq!(
        snapshot.destination("pacs").unwrap().host.as_deref(),
        Some("10.0.0.1")
    );
    assert!(snapshot.routes.is_empty(), "the route left the file");
    queue.close().await;
}

#[tokio::test]
async fn changes_are_validated_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let d = Directory::open_seeded(queue.pool().clone(), &config(FILE))
        .await
        .unwrap();
    let err = d.create(peer("MODALITY")).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Exists(_)), "{err}");
    let err = d.create(peer("FAR_TOO_LONG_AE_TITLE")).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { .. }), "{err}");
    let err = d.remove::<DestinationConfig>("pacs").await.unwrap_err();
    assert!(
        matches!(err, DirectoryError::InUse(_)) && err.to_string().contains("\"*\""),
        "{err}"
    );
    let err = d
        .create(RouteConfig {
            from_ae: "MODALITY".into(),
            to: vec!["archive".into()],
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("archive"), "{err}");
    let err = d.remove::<PeerConfig>("NOBODY").await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound(_)), "{err}");
    // Nothing of the refused changes is stored.
    let again = Directory::open(queue.pool().clone()).await.unwrap();
    assert_eq!(*again.snapshot(), *d.snapshot());
    queue.close().await;
}

#[tokio::test]
async fn another_process_s_change_is_picked_up_and_secrets_survive_a_masked_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let node = Directory::open_seeded(queue.pool().clone(), &config(FILE))
        .await
        .unwrap();
    let cli = Directory::open(queue.pool().clone()).await.unwrap();
    let web = DestinationConfig {
        name: "web".into(),
        kind: crate::config::DestinationKind::Dicomweb,
        ae_title: None,
        host: None,
        port: None,
        url: Some("https://pacs.example.org/dicom-web".into()),
        tls: None,
        auth: Some(AuthConfig {
            bearer: Some("t0ken".into()),
            basic: None,
        }),
        allow_insecure_auth: false,
    };
    cli.create(web.clone()).await.unwrap();
    assert!(node.live().destination("web").is_none());
    assert!(node.reload_if_changed().await.unwrap());
    assert_eq!(node.live().destination("web"), Some(web.clone()));
    assert!(!node.reload_if_changed().await.unwrap());

    let shown = web.public();
    assert_eq!(shown.auth.as_ref().unwrap().bearer.as_deref(), Some("***"));
    assert!(!format!("{web:?}").contains("t0ken"), "no secret in Debug output");
    let moved = DestinationConfig {
        url: Some("https://other.example.org/dicom-web".into()),
        ..shown
    };
    let stored = node.replace("web", moved).await.unwrap();
    assert_eq!(stored.def.auth.unwrap().bearer.as_deref(), Some("t0ken"));
    queue.close().await;
}
