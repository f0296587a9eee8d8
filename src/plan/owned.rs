//! An object meshform writes whole, judged by its spec: the content hash
//! observe read against the spec meshform would write now, and the
//! spec-hash annotation against the hash of that spec. The cross-network
//! Gateway and the reader's ClusterRole and binding (`network.rs`), and
//! istiod's Gateway and VirtualService (`exposure.rs`) are judged so. This only names the state; what to do
//! about it (the finding's wording, the action, whether other field managers
//! block the write) stays with the phase that owns the object.

use crate::observe::model::ObjectFacts;

/// The state of the object of a name meshform writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owned {
    /// There is none: meshform creates it.
    Absent,
    /// Made by someone else (by hand, or again after meshform's was deleted):
    /// used as it is and never touched. `differs` when its content, as read,
    /// is not what meshform would write.
    Unmanaged { differs: bool },
    /// meshform's, written for this spec, and holding it (or its content
    /// was not read: snapshots taken before observe read it).
    Current,
    /// meshform's last write was this very spec, and the content is not it
    /// any more: edited in the cluster, written back.
    Edited,
    /// meshform's, written for another spec (an older meshform, or another
    /// port or revision in the topology or the cluster): an update, no edit.
    Outdated,
}

impl Owned {
    /// Judges `object` against the spec whose annotation hash is `spec_hash`
    /// and whose content hash is `content`.
    pub(super) fn judge(object: Option<&ObjectFacts>, spec_hash: &str, content: &str) -> Owned {
        let Some(object) = object else {
            return Owned::Absent;
        };
        let differs = object.content_sha256.as_deref().is_some_and(|c| c != content);
        match (object.managed, object.spec_hash.as_deref() == Some(spec_hash)) {
            (false, _) => Owned::Unmanaged { differs },
            (true, true) if differs => Owned::Edited,
            (true, true) => Owned::Current,
            (true, false) => Owned::Outdated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(managed: bool, spec_hash: Option<&str>, content: Option<&str>) -> ObjectFacts {
        ObjectFacts {
            uid: "uid".to_string(),
            resource_version: "1".to_string(),
            managed,
            spec_hash: spec_hash.map(Into::into),
            content_sha256: content.map(str::to_string),
            content_owners: Vec::new(),
        }
    }

    fn judged(managed: bool, spec_hash: Option<&str>, content: Option<&str>) -> Owned {
        Owned::judge(Some(&object(managed, spec_hash, content)), "h", "c")
    }

    #[test]
    fn an_edit_is_content_changed_under_the_current_annotation() {
        assert_eq!(Owned::judge(None, "h", "c"), Owned::Absent);
        assert_eq!(judged(true, Some("h"), Some("c")), Owned::Current);
        // Not read (an older snapshot): the annotation is all there is to go by.
        assert_eq!(judged(true, Some("h"), None), Owned::Current);
        assert_eq!(judged(true, Some("h"), Some("x")), Owned::Edited);
        // Another spec in the topology changes the hash too: that is no edit.
        assert_eq!(judged(true, Some("old"), Some("x")), Owned::Outdated);
        assert_eq!(judged(true, None, Some("c")), Owned::Outdated);
        assert_eq!(judged(false, Some("h"), Some("c")), Owned::Unmanaged { differs: false });
        assert_eq!(judged(false, None, Some("x")), Owned::Unmanaged { differs: true });
        assert_eq!(judged(false, None, None), Owned::Unmanaged { differs: false });
    }
}
