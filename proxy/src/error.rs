//! [`ProxyError`]: everything that can go wrong with one client request, and the one function,
//! [`ProxyError::reply`], that turns it into the error reply a client sees.
//!
//! A backend's own `-ERR ...` reply is not a `ProxyError`: it is data and is forwarded untouched.

use bytes::Bytes;
use protocol::{Frame, ProtocolError};

use crate::backend::BackendError;

/// Why the proxy answers a request with an error of its own.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is not valid RESP; the connection closes after the reply.
    #[error("Protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A command the table does not know, refused by the `unknown_commands` rule.
    #[error("unknown command")]
    UnknownCommand {
        /// The command name as sent.
        name: Bytes,
        /// The first arguments, for Redis's message.
        args: Vec<Bytes>,
    },
    /// An unknown subcommand of a container command.
    #[error("unknown subcommand")]
    UnknownSubcommand {
        /// The container, as sent.
        container: Bytes,
        /// The subcommand, as sent.
        sub: Bytes,
    },
    /// Wrong number of arguments for the named command.
    #[error("wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// Keys of one command hash to different slots and the proxy does not split it.
    #[error("CROSSSLOT")]
    CrossSlot(&'static str),
    /// A key-position error from the command's arguments (bad numkeys, ...).
    #[error("{0}")]
    Keys(&'static str),
    /// The command is not served through the proxy.
    #[error("not supported")]
    Unsupported {
        /// The command.
        command: &'static str,
        /// Why, for the message.
        reason: &'static str,
    },
    /// The command is disabled by `deny_commands`.
    #[error("denied")]
    Denied(&'static str),
    /// No node owns the slot (the map is incomplete).
    #[error("slot not served")]
    SlotNotServed(u16),
    /// The proxy has no slot map: no cluster node has answered it yet.
    #[error("no slot map")]
    NoSlotMap,
    /// The backend failed the request.
    #[error("backend {node}: {failure:?}")]
    Backend {
        /// `host:port`.
        node: String,
        /// What happened.
        failure: BackendError,
    },
    /// Too many redirects for one request.
    #[error("too many redirects")]
    TooManyRedirects,
    /// A password is set and the client has not authenticated.
    #[error("NOAUTH")]
    NoAuth,
    /// HELLO without AUTH when a password is set.
    #[error("NOAUTH HELLO")]
    NoAuthHello,
    /// AUTH with a wrong password.
    #[error("WRONGPASS")]
    WrongPass,
    /// `SELECT n` with n > 0.
    #[error("DB index is out of range")]
    DbOutOfRange,
    /// An argument that must be an integer is not.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// Redis's generic syntax error.
    #[error("syntax error")]
    Syntax,
    /// A complete error text, code included.
    #[error("{0}")]
    Other(String),
}

/// Whether the connection stays open after an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Keep serving the client.
    No,
    /// Close after writing the reply.
    Yes,
}

impl ProxyError {
    /// The error reply for the client, and whether the connection must close.
    pub fn reply(&self) -> (Frame, Close) {
        let text = match self {
            ProxyError::Protocol(e) => {
                return (error(format!("ERR Protocol error: {e}")), Close::Yes);
            }
            ProxyError::UnknownCommand { name, args } => {
                let mut s = format!(
                    "ERR unknown command '{}', with args beginning with: ",
                    lossy(name)
                );
                for a in args.iter().take(4) {
                    s.push_str(&format!("'{}' ", lossy(a)));
                }
                s
            }
            ProxyError::UnknownSubcommand { container, sub } => format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                lossy(sub),
                lossy(container).to_ascii_uppercase()
            ),
            ProxyError::WrongArity(name) => {
                format!("ERR wrong number of arguments for '{name}' command")
            }
            ProxyError::CrossSlot(name) => match *name {
                "msetnx" => "CROSSSLOT Keys in request don't hash to the same slot (command 'msetnx' must set all keys or none, which cannot be done across slots; nothing was written)".to_string(),
                _ => format!(
                    "CROSSSLOT Keys in request don't hash to the same slot (command '{name}' needs all its keys in one slot; use hash tags such as {{user1}}:a and {{user1}}:b)"
                ),
            },
            ProxyError::Keys(text) => {
                if text.starts_with("ERR ") {
                    text.to_string()
                } else {
                    format!("ERR {text}")
                }
            }
            ProxyError::Unsupported { command, reason } => {
                format!("ERR command '{command}' is not supported by Slotway: {reason}")
            }
            ProxyError::Denied(command) => {
                format!("ERR command '{command}' is disabled by the proxy configuration (deny_commands)")
            }
            ProxyError::SlotNotServed(slot) => {
                format!("CLUSTERDOWN Hash slot {slot} not served")
            }
            ProxyError::NoSlotMap => "CLUSTERDOWN The cluster is down: the proxy has no slot map yet (no cluster node has answered it; its log says why)".to_string(),
            ProxyError::Backend { node, failure } => match failure {
                BackendError::NotSent => {
                    format!("CLUSTERDOWN node {node} is unreachable and no other node serves its slots yet")
                }
                BackendError::Lost => format!(
                    "ERR connection to node {node} lost after the command was sent; it may or may not have been applied"
                ),
                BackendError::Timeout => format!(
                    "ERR node {node} did not answer in time; the command may or may not have been applied"
                ),
            },
            ProxyError::TooManyRedirects => {
                "ERR too many cluster redirects for one command".to_string()
            }
            ProxyError::NoAuth => "NOAUTH Authentication required.".to_string(),
            ProxyError::NoAuthHello => {
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".to_string()
            }
            ProxyError::WrongPass => {
                "WRONGPASS invalid username-password pair or user is disabled.".to_string()
            }
            ProxyError::DbOutOfRange => {
                "ERR DB index is out of range (Slotway serves database 0 only; set databases: namespaced, or --databases namespaced, for more)".to_string()
            }
            ProxyError::NotAnInteger => "ERR value is not an integer or out of range".to_string(),
            ProxyError::Syntax => "ERR syntax error".to_string(),
            ProxyError::Other(text) => text.clone(),
        };
        (error(text), Close::No)
    }
}

fn error(text: String) -> Frame {
    Frame::Error(Bytes::from(text))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
