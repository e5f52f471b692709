//! Checks of the options every concord network transport has (secret, node id, queue and batch
//! limits, frame size, reconnect backoff). Each transport checks its own extra options after these
//! and wraps the reason in its own error type.

use std::time::Duration;

use concord_core::id::NodeId;

use crate::handshake::{HANDSHAKE_MESSAGE_BYTES_MAX, SECRET_BYTES_MIN};

/// The options all transports share, borrowed from a transport's own options for checking.
#[derive(Clone, Copy, Debug)]
pub struct CommonOptions<'a> {
    /// The cluster secret.
    pub cluster_secret: &'a [u8],
    /// This node's id.
    pub node_id: &'a NodeId,
    /// Limits that must be at least 1, each with its option's name (for the message).
    pub counts: &'a [(&'static str, usize)],
    /// The largest frame, which must hold a handshake message and fit the codec's 32-bit length.
    pub frame_bytes_max: usize,
    /// First reconnect delay.
    pub reconnect_backoff_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_backoff_max: Duration,
}

impl CommonOptions<'_> {
    /// Checks every field; the error says which option is wrong and why (the caller's fault).
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_secret.len() < SECRET_BYTES_MIN {
            return Err(format!("cluster_secret must be at least {SECRET_BYTES_MIN} bytes"));
        }
        if NodeId::parse(self.node_id.as_str()).is_err() {
            return Err(format!("node_id {:?} is not a valid node id", self.node_id.as_str()));
        }
        if let Some((name, _)) = self.counts.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.frame_bytes_max < HANDSHAKE_MESSAGE_BYTES_MAX || self.frame_bytes_max > u32::MAX as usize {
            return Err(format!(
                "frame_bytes_max must be between {HANDSHAKE_MESSAGE_BYTES_MAX} and {}",
                u32::MAX
            ));
        }
        if self.reconnect_backoff_min.is_zero() || self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err("reconnect_backoff_min must be above zero and at most reconnect_backoff_max".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wrong_option_is_named() {
        let node_id = NodeId::from("a");
        let good = CommonOptions {
            cluster_secret: &[7; SECRET_BYTES_MIN],
            node_id: &node_id,
            counts: &[("send_queue_frames_max", 1)],
            frame_bytes_max: HANDSHAKE_MESSAGE_BYTES_MAX,
            reconnect_backoff_min: Duration::from_millis(1),
            reconnect_backoff_max: Duration::from_millis(1),
        };
        assert_eq!(good.validate(), Ok(()));
        let short_secret = [7; SECRET_BYTES_MIN - 1];
        let cases = [
            (CommonOptions { cluster_secret: &short_secret, ..good }, "cluster_secret"),
            (CommonOptions { counts: &[("a_max", 1), ("b_max", 0)], ..good }, "b_max"),
            (CommonOptions { frame_bytes_max: HANDSHAKE_MESSAGE_BYTES_MAX - 1, ..good }, "frame_bytes_max"),
            (CommonOptions { reconnect_backoff_min: Duration::ZERO, ..good }, "reconnect_backoff_min"),
            (
                CommonOptions { reconnect_backoff_max: Duration::from_micros(999), ..good },
                "reconnect_backoff_min",
            ),
        ];
        for (options, name) in cases {
            let reason = options.validate().unwrap_err();
            assert!(reason.starts_with(name), "{reason}");
        }
    }
}
