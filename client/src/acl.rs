//! Building ACL ids on the client side: ZooKeeper's `digest` id of a user and password (what
//! `DigestAuthenticationProvider.generateDigest` computes, kazoo's `make_digest_acl_credential`),
//! so that an application can grant to another party's digest identity without its password.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::Id;

/// The `digest` id a session has after `add_auth("digest", "user:password")`:
/// `user:base64(sha1("user:password"))`.
pub fn digest_id(user: &str, password: &str) -> Id {
    let hash = Sha1::digest(format!("{user}:{password}").as_bytes());
    Id {
        scheme: "digest".into(),
        id: format!(
            "{user}:{}",
            base64::engine::general_purpose::STANDARD.encode(hash)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_id_is_zookeepers() {
        // The conformance suite reads this id back from ZooKeeper itself.
        assert_eq!(
            digest_id("alice", "secret").id,
            "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="
        );
    }
}
