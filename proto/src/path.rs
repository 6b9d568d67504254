//! Znode path validation, as ZooKeeper's `PathUtils.validatePath` does it, shared by the client
//! (fail fast, before a round trip) and the server (never trust the client).

/// Why a path is not a valid znode path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPath {
    pub path: String,
    pub reason: &'static str,
}

impl std::fmt::Display for InvalidPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid path {:?}: {}", self.path, self.reason)
    }
}

impl std::error::Error for InvalidPath {}

/// ZooKeeper forbids these UTF-16 units; a character beyond the BMP is a surrogate pair there,
/// so it is forbidden too.
fn forbidden(c: char) -> bool {
    matches!(c, '\u{1}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}')
        || c >= '\u{fff0}'
}

/// Validates a path; `sequential` allows a trailing `/` (the server appends the counter).
pub fn validate_path(path: &str, sequential: bool) -> Result<(), InvalidPath> {
    validate(path, sequential, true)
}

/// [`validate_path`]; with `shortcut`, a path of printable ASCII skips the per-character
/// checks, which it cannot fail (the tests compare both ways).
fn validate(path: &str, sequential: bool, shortcut: bool) -> Result<(), InvalidPath> {
    let err = |reason| {
        Err(InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return err("path length must be > 0");
    }
    if !path.starts_with('/') {
        return err("path must start with / character");
    }
    if path.len() == 1 {
        return if sequential {
            err("path must not end with / character")
        } else {
            Ok(())
        };
    }
    if path.ends_with('/') && !sequential {
        return err("path must not end with / character");
    }
    let body = if sequential && path.ends_with('/') {
        &path[..path.len() - 1]
    } else {
        path
    };
    // Almost every path is printable ASCII, which holds no NUL and no forbidden character:
    // one pass over its bytes spares decoding each component's characters (apply validates
    // the path of every write on every replica).
    let printable = shortcut && body.bytes().all(|b| (0x20..0x7f).contains(&b));
    for component in body[1..].split('/') {
        if component.is_empty() {
            return err("empty node name specified");
        }
        if component == "." || component == ".." {
            return err("relative paths not allowed");
        }
        if printable {
            continue;
        }
        if component.contains('\0') {
            return err("null character not allowed");
        }
        if component.chars().any(forbidden) {
            return err("invalid character");
        }
    }
    Ok(())
}

/// The parent of a valid path other than `/`.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// A valid path, then each of its ancestors up to `/` (for recursive-watch dispatch).
pub fn ancestors_or_self(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = if cur == "/" { None } else { Some(parent(cur)) };
        Some(cur)
    })
}

/// The path of the child `name` of the valid path `parent`.
pub fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The last component of a valid path (`""` for `/`).
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_joins_under_the_root_and_elsewhere() {
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a/b", "c"), "/a/b/c");
        assert_eq!(parent(&child("/a", "b")), "/a");
        assert_eq!(basename(&child("/a", "b")), "b");
    }

    #[test]
    fn valid_and_invalid_paths() {
        for ok in ["/", "/a", "/a/b", "/a.b", "/..a", "/zookeeper/quota", "/é"] {
            assert!(validate_path(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/a\0",
            "/a\u{1}b",
            "/\u{fff5}",
        ] {
            assert!(validate_path(bad, false).is_err(), "{bad:?}");
        }
        assert!(validate_path("/a/", true).is_ok());
        assert!(validate_path("/", true).is_err());
        assert!(validate_path("/a//", true).is_err());
    }

    proptest::proptest! {
        /// The printable-ASCII shortcut gives the verdict and reason of the character-by-character
        /// check, for paths built from slashes, dots, printable ASCII, control characters and
        /// characters beyond ASCII alike.
        #[test]
        fn validation_agrees_with_the_character_by_character_rules(
            path in "/?(/|\\.|[ -~]|[\u{0}-\u{1f}\u{7f}-\u{a0}]|[\u{e000}-\u{e002}\u{fff0}-\u{ffff}é])*",
            sequential: bool,
        ) {
            let got = validate_path(&path, sequential);
            proptest::prop_assert_eq!(got, validate(&path, sequential, false));
        }
    }

    #[test]
    fn parent_and_basename() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(basename("/a/bc"), "bc");
        assert_eq!(basename("/"), "");
        assert_eq!(
            ancestors_or_self("/a/b").collect::<Vec<_>>(),
            vec!["/a/b", "/a", "/"]
        );
        assert_eq!(ancestors_or_self("/").collect::<Vec<_>>(), vec!["/"]);
    }
}
