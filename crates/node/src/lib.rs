//! # concord-node
//!
//! The `concord` binary's library: [`serve`] runs one cluster member — the runtime's
//! [`Consensus`](concord_runtime::Consensus) over the WebSocket (`ws://`) or ZeroMQ (`tcp://`)
//! transport, with file or memory storage — and exposes the client API of [`api`] (HTTP + JSON,
//! documented in `API.md`). [`cli`] is the command line, and [`client`] the small HTTP/1.1 client
//! it uses.
//!
//! **What it is:** a process you can run on three machines and talk to from any language.
//! **What it is not:** a library for embedding consensus (use `concord-runtime`), nor an HTTPS
//! server (put a TLS proxy in front; peer links can use TLS through `concord-transport-ws`).
//!
//! ```
//! use concord_node::api::encode_json;
//! // Values are stored as compact JSON with sorted object keys, readable from any language.
//! let value: serde_json::Value = serde_json::from_str(r#"{"score": 10, "player": "ada"}"#).unwrap();
//! assert_eq!(&encode_json(&value)[..], br#"{"player":"ada","score":10}"#);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod cli;
pub mod client;
pub mod serve;
