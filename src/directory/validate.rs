//! The one validation of peers, destinations and routes, for the configuration file
//! ([`crate::config::Config::load`]) and for every change through the admin API and CLI.

use std::collections::HashSet;

use crate::config::{
    check_ae_title, check_dicomweb_peer, invalid, ConfigError, DestinationConfig, DestinationKind,
    PeerConfig, RouteConfig,
};

/// How an entry is named in an error: by position in the file (`destinations[0].url`) or by its
/// key (`destinations["pacs"].url`) for the API and CLI, which have no positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    Index,
    Name,
}

impl KeyStyle {
    fn entry(self, section: &str, i: usize, key: &str) -> String {
        match self {
            KeyStyle::Index => format!("{section}[{i}]"),
            KeyStyle::Name => format!("{section}[{key:?}]"),
        }
    }
}

/// Checks a whole set: each entry on its own, keys unique, and every route naming existing
/// destinations. The first problem is returned with its key and reason (never a credential).
pub fn validate(
    peers: &[PeerConfig],
    destinations: &[DestinationConfig],
    routes: &[RouteConfig],
    style: KeyStyle,
) -> Result<(), ConfigError> {
    let mut titles = HashSet::new();
    for (i, p) in peers.iter().enumerate() {
        let entry = style.entry("peers", i, &p.ae_title);
        check_ae_title(&format!("{entry}.ae_title"), &p.ae_title)?;
        if !titles.insert(p.ae_title.as_str()) {
            return Err(invalid(
                format!("{entry}.ae_title"),
                format!("{:?} is used twice (one entry per AE title)", p.ae_title),
            ));
        }
    }
    let mut names = HashSet::new();
    for (i, d) in destinations.iter().enumerate() {
        let entry = style.entry("destinations", i, &d.name);
        if !names.insert(d.name.as_str()) {
            return Err(invalid(
                format!("{entry}.name"),
                format!("{:?} is used twice", d.name),
            ));
        }
        check_destination(&entry, d)?;
    }
    let mut senders = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let entry = style.entry("routes", i, &r.from_ae);
        if r.from_ae != "*" {
            check_ae_title(&format!("{entry}.from_ae"), &r.from_ae)?;
        }
        if !senders.insert(r.from_ae.as_str()) {
            return Err(invalid(
                format!("{entry}.from_ae"),
                format!(
                    "{:?} is used twice (one route per sender; list all its destinations in `to`)",
                    r.from_ae
                ),
            ));
        }
        for to in &r.to {
            if !names.contains(to.as_str()) {
                return Err(invalid(
                    format!("{entry}.to"),
                    format!("no destination named {to:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// One destination: what its kind needs, and nothing its kind cannot use.
fn check_destination(entry: &str, d: &DestinationConfig) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{entry}.{k}");
    if d.name.trim().is_empty() || d.name.len() > 64 || d.name.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(
            key("name"),
            format!(
                "{:?} must be 1 to 64 characters without '/' or control characters",
                d.name
            ),
        ));
    }
    match d.kind {
        DestinationKind::Dimse => {
            if d.tls.is_some() {
                return Err(invalid(
                    key("tls"),
                    format!(
                        "{:?}: DICOM TLS for C-STORE is not supported; use a dicomweb destination with an https:// URL or a TLS tunnel",
                        d.name
                    ),
                ));
            }
            if d.auth.is_some() {
                return Err(invalid(
                    key("auth"),
                    format!("{:?}: credentials apply to dicomweb destinations only", d.name),
                ));
            }
            check_ae_title(&key("ae_title"), d.ae_title.as_deref().unwrap_or(""))?;
            if d.host.as_deref().unwrap_or("").is_empty() || d.port.is_none() {
                return Err(invalid(
                    key("host/port"),
                    "a dimse destination needs host and port",
                ));
            }
        }
        DestinationKind::Dicomweb => check_dicomweb_peer(
            entry,
            "destination",
            &d.name,
            d.url.as_deref().unwrap_or(""),
            d.tls.as_ref(),
            d.auth.as_ref(),
            d.allow_insecure_auth,
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ae: &str) -> PeerConfig {
        PeerConfig {
            ae_title: ae.into(),
            host: None,
            enabled: true,
        }
    }

    fn dimse(name: &str) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            kind: DestinationKind::Dimse,
            ae_title: Some("PACS".into()),
            host: Some("127.0.0.1".into()),
            port: Some(104),
            url: None,
            tls: None,
            auth: None,
            allow_insecure_auth: false,
        }
    }

    fn route(from: &str, to: &[&str]) -> RouteConfig {
        RouteConfig {
            from_ae: from.into(),
            to: to.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn error(p: &[PeerConfig], d: &[DestinationConfig], r: &[RouteConfig]) -> String {
        validate(p, d, r, KeyStyle::Name).unwrap_err().to_string()
    }

    #[test]
    fn entries_are_named_by_key_for_the_api() {
        validate(
            &[peer("MODALITY")],
            &[dimse("pacs")],
            &[route("*", &["pacs"])],
            KeyStyle::Name,
        )
        .unwrap();
        let err = error(&[peer("MODALITY"), peer("MODALITY")], &[], &[]);
        assert!(
            err.contains(r#"peers["MODALITY"].ae_title"#) && err.contains("used twice"),
            "{err}"
        );
        let err = error(&[peer("A\\B")], &[], &[]);
        assert!(err.contains(r#"peers["A\\B"].ae_title"#), "{err}");
        let err = error(&[], &[dimse("pacs")], &[route("MODALITY", &["archive"])]);
        assert!(
            err.contains(r#"routes["MODALITY"].to"#) && err.contains("\"archive\""),
            "{err}"
        );
        let err = error(
            &[],
            &[dimse("pacs")],
            &[route("*", &["pacs"]), route("*", &["pacs"])],
        );
        assert!(err.contains(r#"routes["*"].from_ae"#), "{err}");
        let err = error(&[], &[], &[route("A_TITLE_FAR_TOO_LONG", &[])]);
        assert!(err.contains("from_ae"), "{err}");
        let err = error(
            &[],
            &[DestinationConfig {
                port: None,
                ..dimse("pacs")
            }],
            &[],
        );
        assert!(err.contains(r#"destinations["pacs"].host/port"#), "{err}");
        let err = error(&[], &[dimse("a/b")], &[]);
        assert!(err.contains("name"), "{err}");
    }

    #[test]
    fn file_entries_are_named_by_position() {
        let err = validate(&[peer("A"), peer("")], &[], &[], KeyStyle::Index)
            .unwrap_err()
            .to_string();
        assert!(err.contains("peers[1].ae_title"), "{err}");
    }
}
