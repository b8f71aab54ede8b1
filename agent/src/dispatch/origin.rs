//! The origin-queue record a pending task carries at the end of its status message. A task's
//! queue decides its pods' template; once moved into the pending queue, the task's own record of
//! it is this message (and, once they exist, its pods' queue label), so every message the agent
//! writes while the task waits keeps the record, and a restarted agent reads it back.

/// The status message a moved task carries; [`origin_from_message`] reads the queue id back.
///
/// The status message is the one record of a pending task's origin queue that survives a restart
/// before its pods exist (they carry it as a label once created), so every status message the
/// agent writes while the task waits ends with this record: see [`explain_message`].
pub fn pending_message(queue_name: &str, queue_id: &str) -> String {
    format!("{ORIGIN_PREFIX}{queue_name} [{queue_id}]")
}

const ORIGIN_PREFIX: &str = "launching from queue ";

/// The status message of a pending task whose pods wait: the reason first (what the UI shows),
/// then the origin record of [`pending_message`], kept so a restarted agent still knows it.
pub fn explain_message(reason: &str, origin: Option<(&str, &str)>) -> String {
    match origin {
        Some((name, id)) => format!("K8S pending: {reason}; {}", pending_message(name, id)),
        None => format!("K8S pending: {reason}"),
    }
}

/// The origin queue id from a message ending with a [`pending_message`] (the last one, so a
/// reason quoting the phrase cannot mislead it).
pub fn origin_from_message(message: &str) -> Option<&str> {
    let rest = &message[message.rfind(ORIGIN_PREFIX)? + ORIGIN_PREFIX.len()..];
    let start = rest.rfind('[')?;
    let id = rest[start + 1..].strip_suffix(']')?;
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_roundtrips_through_the_status_message() {
        for (name, id) in [("red", "abc123"), ("my [weird] queue", "f00")] {
            assert_eq!(origin_from_message(&pending_message(name, id)), Some(id));
        }
        assert_eq!(origin_from_message("K8S pending: x"), None);
        assert_eq!(origin_from_message(""), None);
        assert_eq!(origin_from_message("launching from queue red []"), None);
    }

    /// A pending reason never overwrites the origin record (a restarted agent reads it back),
    /// whatever the reason says, even when it quotes the record's own words.
    #[test]
    fn pending_reasons_keep_the_origin_record() {
        let cases = [
            (
                "pod clearml-id-t is unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                ("gpu", "q1"),
            ),
            ("pod p is waiting: ContainerCreating", ("a [b]", "q2")),
            ("launching from queue evil [zzz]", ("red", "q3")),
            ("", ("red", "q4")),
        ];
        for (reason, (name, id)) in cases {
            let message = explain_message(reason, Some((name, id)));
            assert!(message.starts_with("K8S pending: "), "{message}");
            assert!(message.contains(reason), "{message}");
            assert_eq!(origin_from_message(&message), Some(id), "{message}");
        }
        assert_eq!(origin_from_message(&explain_message("x", None)), None);
    }
}
