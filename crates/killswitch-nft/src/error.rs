//! Errors of the nftables backend.

use killswitch_policy::MalformedRule;
use std::io;

/// Why the firewall could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The ruleset would be misread by the kernel; nothing was sent.
    #[error("refusing a malformed ruleset")]
    Malformed(#[from] MalformedRule),
    /// A rule's comment cannot be encoded.
    #[error("rule comment {0:?} cannot be encoded")]
    Comment(String),
    /// The batch is larger than one netlink message can carry.
    #[error("the batch is {0} bytes, more than netlink can carry in one message")]
    TooLarge(usize),
    /// The netfilter netlink socket could not be opened or configured.
    #[error("cannot open a netfilter netlink socket (is this process root or CAP_NET_ADMIN?)")]
    Socket(#[source] io::Error),
    /// Sending to the kernel failed; nothing was applied.
    #[error("sending the batch to the kernel failed")]
    Send(#[source] io::Error),
    /// Receiving from the kernel failed.
    #[error("receiving the kernel's answer failed")]
    Recv(#[source] io::Error),
    /// The kernel refused part of the batch; the whole batch was rolled back.
    #[error("the kernel rejected {what}")]
    Rejected {
        /// Which message it rejected.
        what: String,
        /// The kernel's error code.
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("no answer from the kernel within {0:?}")]
    Timeout(std::time::Duration),
    /// A message from the kernel could not be parsed.
    #[error("unparseable netlink message from the kernel: {0}")]
    Parse(String),
    /// The table in the kernel is not what was meant.
    #[error("the installed table differs from the intended one: {0}")]
    Mismatch(String),
}
