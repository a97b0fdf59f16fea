//! Deterministic UIDs: 2.25 followed by the decimal value of a name-based UUIDv5 (PS3.5 B.2).
//! The same name always yields the same UID, so reprocessing yields the same instances.

/// A UID derived from `name`.
pub fn uid_from_name(name: &str) -> String {
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    format!("2.25.{}", uuid.as_u128())
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_uids_are_stable_and_valid() {
        let a = super::uid_from_name("vcnode");
        assert_eq!(a, super::uid_from_name("vcnode"));
        assert_ne!(a, super::uid_from_name("vcnode2"));
        assert!(vcnode_scp::is_valid_uid(&a), "{a}");
        assert_eq!(a, crate::store::IMPLEMENTATION_CLASS_UID);
    }
}
