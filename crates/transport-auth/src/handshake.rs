//! The authenticated handshake that opens every connection, as pure functions (no I/O).
//!
//! The dialer speaks first. Both sides contribute a fresh 32-byte nonce, and each proves that it
//! holds the cluster secret with an HMAC-SHA256 over both nonces, the cluster id, both node ids and
//! its role, so a recorded handshake cannot be replayed and a proof cannot be reflected back:
//!
//! ```text
//! dialer   → listener  Hello     { cluster id, dialer id, dialer nonce }
//! listener → dialer    Challenge { listener id, listener nonce, MAC("listener", …) }
//! dialer   → listener  Proof     { MAC("dialer", …) }
//! listener → dialer    Welcome
//! ```
//!
//! The listener refuses a Hello from another cluster or from an id that is not a configured peer
//! before it spends anything on the peer; the dialer refuses a listener that is not the peer it
//! meant to reach or cannot prove the secret. Nothing but these four messages is accepted before
//! Welcome.

use concord_core::id::{ClusterId, NodeId};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;
/// The shortest cluster secret accepted, in bytes: shorter ones are guessable.
pub const SECRET_BYTES_MIN: usize = 16;
/// The largest handshake message, in bytes (a Challenge with the longest node id).
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 6 + NONCE_BYTES + MAC_BYTES + 1 + NodeId::LENGTH_MAX + 8;

const MAGIC: &[u8; 4] = b"CCH1";
const KIND_HELLO: u8 = b'H';
const KIND_CHALLENGE: u8 = b'C';
const KIND_PROOF: u8 = b'P';
const KIND_WELCOME: u8 = b'W';
const ROLE_LISTENER: &[u8] = b"concord listener";
const ROLE_DIALER: &[u8] = b"concord dialer";

/// A fresh nonce.
pub type Nonce = [u8; NONCE_BYTES];
type Tag = [u8; MAC_BYTES];

/// Why a handshake failed, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer sent something that is not the expected handshake message (peer's fault).
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// The peer belongs to another cluster (peer's configuration).
    #[error("peer is in cluster {got:?}, this is cluster {expected:?}")]
    WrongCluster {
        /// This cluster.
        expected: ClusterId,
        /// The peer's.
        got: ClusterId,
    },
    /// The peer's id is not a configured peer of this node (peer's or operator's configuration).
    #[error("{0} is not a configured peer")]
    UnknownPeer(NodeId),
    /// The listener is not the node this link dials (operator's configuration: wrong address).
    #[error("expected to reach {expected} but the listener is {got}")]
    UnexpectedPeer {
        /// Who the link should reach.
        expected: NodeId,
        /// Who answered.
        got: NodeId,
    },
    /// The peer's proof does not verify: it does not hold the cluster secret (peer's fault).
    #[error("the peer did not prove it holds the cluster secret")]
    BadProof,
    /// The handshake did not finish in time (peer or network).
    #[error("handshake timed out")]
    Timeout,
    /// The connection closed during the handshake (peer or network).
    #[error("connection closed during the handshake")]
    Closed,
    /// The operating system gave no randomness for a nonce (local fault).
    #[error("no randomness for a nonce: {0}")]
    Randomness(String),
}

/// The dialer's opening message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The cluster the connection is for.
    pub cluster_id: ClusterId,
    /// The sender's node id.
    pub node_id: NodeId,
    /// The sender's fresh nonce.
    pub nonce: Nonce,
}

/// The listener's answer: its identity, its nonce and its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The sender's node id.
    pub node_id: NodeId,
    /// The sender's fresh nonce.
    pub nonce: Nonce,
    /// The listener's proof that it holds the secret.
    pub proof: Tag,
}

/// A fresh nonce from the operating system. Unpredictability is the point here, so this is the one
/// place the transport does not use a seeded RNG.
pub fn fresh_nonce() -> Result<Nonce, HandshakeError> {
    let mut nonce = [0; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|error| HandshakeError::Randomness(error.to_string()))?;
    Ok(nonce)
}

/// Everything both proofs cover.
pub struct Transcript<'a> {
    /// The shared cluster secret.
    pub secret: &'a [u8],
    /// The cluster the connection is for.
    pub cluster_id: ClusterId,
    /// The node that opened the connection.
    pub dialer: &'a NodeId,
    /// The node that accepted it.
    pub listener: &'a NodeId,
    /// The dialer's nonce.
    pub dialer_nonce: &'a Nonce,
    /// The listener's nonce.
    pub listener_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn mac(&self, role: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; the error branch cannot happen for HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(role);
        mac.update(&self.cluster_id.0.to_be_bytes());
        for id in [self.dialer, self.listener] {
            mac.update(&[id.as_str().len() as u8]);
            mac.update(id.as_str().as_bytes());
        }
        mac.update(self.dialer_nonce);
        mac.update(self.listener_nonce);
        mac
    }

    /// The listener's proof.
    pub fn listener_proof(&self) -> Tag {
        self.mac(ROLE_LISTENER).finalize().into_bytes().into()
    }

    /// The dialer's proof.
    pub fn dialer_proof(&self) -> Tag {
        self.mac(ROLE_DIALER).finalize().into_bytes().into()
    }

    /// Checks the listener's proof in constant time.
    pub fn verify_listener(&self, proof: &Tag) -> Result<(), HandshakeError> {
        self.mac(ROLE_LISTENER).verify_slice(proof).map_err(|_| HandshakeError::BadProof)
    }

    /// Checks the dialer's proof in constant time.
    pub fn verify_dialer(&self, proof: &Tag) -> Result<(), HandshakeError> {
        self.mac(ROLE_DIALER).verify_slice(proof).map_err(|_| HandshakeError::BadProof)
    }
}

fn header(kind: u8, capacity: usize) -> Vec<u8> {
    let mut message = Vec::with_capacity(MAGIC.len() + 1 + capacity);
    message.extend_from_slice(MAGIC);
    message.push(kind);
    message
}

fn push_id(message: &mut Vec<u8>, id: &NodeId) {
    // NodeId::LENGTH_MAX is 128, so the length fits in a byte.
    debug_assert!(id.as_str().len() <= NodeId::LENGTH_MAX);
    message.push(id.as_str().len() as u8);
    message.extend_from_slice(id.as_str().as_bytes());
}

/// Encodes the Hello message.
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut message = header(KIND_HELLO, 8 + NONCE_BYTES + 1 + hello.node_id.as_str().len());
    message.extend_from_slice(&hello.cluster_id.0.to_be_bytes());
    message.extend_from_slice(&hello.nonce);
    push_id(&mut message, &hello.node_id);
    message
}

/// Encodes the Challenge message.
pub fn encode_challenge(challenge: &Challenge) -> Vec<u8> {
    let mut message = header(KIND_CHALLENGE, NONCE_BYTES + MAC_BYTES + 1 + challenge.node_id.as_str().len());
    message.extend_from_slice(&challenge.nonce);
    message.extend_from_slice(&challenge.proof);
    push_id(&mut message, &challenge.node_id);
    message
}

/// Encodes the Proof message.
pub fn encode_proof(proof: &Tag) -> Vec<u8> {
    let mut message = header(KIND_PROOF, MAC_BYTES);
    message.extend_from_slice(proof);
    message
}

/// Encodes the Welcome message.
pub fn encode_welcome() -> Vec<u8> {
    header(KIND_WELCOME, 0)
}

/// A cursor over an untrusted message: every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn open(message: &'a [u8], kind: u8) -> Result<Self, HandshakeError> {
        if message.len() > HANDSHAKE_MESSAGE_BYTES_MAX {
            return Err(HandshakeError::Malformed("handshake message too long"));
        }
        let Some(rest) = message.strip_prefix(MAGIC.as_slice()) else {
            return Err(HandshakeError::Malformed("not a concord handshake"));
        };
        match rest.split_first() {
            Some((found, rest)) if *found == kind => Ok(Reader { rest }),
            Some(_) => Err(HandshakeError::Malformed("unexpected handshake message")),
            None => Err(HandshakeError::Malformed("empty handshake message")),
        }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], HandshakeError> {
        if self.rest.len() < count {
            return Err(HandshakeError::Malformed("truncated handshake message"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandshakeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn node_id(&mut self) -> Result<NodeId, HandshakeError> {
        let length = self.take(1)?[0] as usize;
        let bytes = self.take(length)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| HandshakeError::Malformed("node id is not UTF-8"))?;
        NodeId::parse(text).map_err(|_| HandshakeError::Malformed("invalid node id"))
    }

    fn finish(self) -> Result<(), HandshakeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Malformed("trailing bytes in handshake message"))
        }
    }
}

/// Decodes a Hello message; anything else (wrong tag, length or content) is a typed error.
pub fn decode_hello(message: &[u8]) -> Result<Hello, HandshakeError> {
    let mut reader = Reader::open(message, KIND_HELLO)?;
    let cluster_id = ClusterId(u64::from_be_bytes(reader.array()?));
    let nonce = reader.array()?;
    let node_id = reader.node_id()?;
    reader.finish()?;
    Ok(Hello { cluster_id, node_id, nonce })
}

/// Decodes a Challenge message; anything else (wrong tag, length or content) is a typed error.
pub fn decode_challenge(message: &[u8]) -> Result<Challenge, HandshakeError> {
    let mut reader = Reader::open(message, KIND_CHALLENGE)?;
    let nonce = reader.array()?;
    let proof = reader.array()?;
    let node_id = reader.node_id()?;
    reader.finish()?;
    Ok(Challenge { node_id, nonce, proof })
}

/// Decodes a Proof message; anything else (wrong tag, length or content) is a typed error.
pub fn decode_proof(message: &[u8]) -> Result<Tag, HandshakeError> {
    let mut reader = Reader::open(message, KIND_PROOF)?;
    let proof = reader.array()?;
    reader.finish()?;
    Ok(proof)
}

/// Decodes a Welcome message; anything else (wrong tag, length or content) is a typed error.
pub fn decode_welcome(message: &[u8]) -> Result<(), HandshakeError> {
    Reader::open(message, KIND_WELCOME)?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(secret: &'a [u8], dialer: &'a NodeId, listener: &'a NodeId) -> Transcript<'a> {
        Transcript {
            secret,
            cluster_id: ClusterId(7),
            dialer,
            listener,
            dialer_nonce: &[1; NONCE_BYTES],
            listener_nonce: &[2; NONCE_BYTES],
        }
    }

    #[test]
    fn messages_round_trip() {
        let hello = Hello { cluster_id: ClusterId(9), node_id: NodeId::new("n1"), nonce: [3; NONCE_BYTES] };
        assert_eq!(decode_hello(&encode_hello(&hello)), Ok(hello));
        let challenge =
            Challenge { node_id: NodeId::new("n2"), nonce: [4; NONCE_BYTES], proof: [5; MAC_BYTES] };
        assert_eq!(decode_challenge(&encode_challenge(&challenge)), Ok(challenge));
        assert_eq!(decode_proof(&encode_proof(&[6; MAC_BYTES])), Ok([6; MAC_BYTES]));
        assert_eq!(decode_welcome(&encode_welcome()), Ok(()));
    }

    #[test]
    fn every_truncation_and_extension_of_a_message_is_refused() {
        let hello =
            encode_hello(&Hello { cluster_id: ClusterId(1), node_id: NodeId::new("node"), nonce: [0; 32] });
        for cut in 0..hello.len() {
            assert!(decode_hello(&hello[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = hello.clone();
        longer.push(0);
        assert!(decode_hello(&longer).is_err());
        assert!(decode_challenge(&hello).is_err(), "a Hello is not a Challenge");
        assert!(decode_hello(&[0xFF; 10_000]).is_err());
    }

    #[test]
    fn proofs_depend_on_the_secret_and_the_role() {
        let (dialer, listener) = (NodeId::new("a"), NodeId::new("b"));
        let right = transcript(b"0123456789abcdef", &dialer, &listener);
        let wrong = transcript(b"0123456789abcdeX", &dialer, &listener);
        assert!(right.verify_listener(&right.listener_proof()).is_ok());
        assert!(right.verify_dialer(&right.dialer_proof()).is_ok());
        assert_eq!(right.verify_dialer(&wrong.dialer_proof()), Err(HandshakeError::BadProof));
        // A listener's proof reflected back is not a dialer's proof.
        assert_eq!(right.verify_dialer(&right.listener_proof()), Err(HandshakeError::BadProof));
        // Swapping who dialed changes the proof.
        let swapped = transcript(b"0123456789abcdef", &listener, &dialer);
        assert_eq!(right.verify_dialer(&swapped.dialer_proof()), Err(HandshakeError::BadProof));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(fresh_nonce().unwrap(), fresh_nonce().unwrap());
    }
}
