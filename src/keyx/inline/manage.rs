//! Remote change of the proxy's stores by an authenticated user (¶0025).
//!
//! The seed lets a user on the Internet change part of the address store and the SA store,
//! for instance when a terminal's partner moves. That needs the proxy to be reachable, so
//! for this one purpose it gets an address of its own (the management address): the one
//! exception to ¶0026's "no IP function", and the only packets the proxy ever terminates.
//! The driver terminates TCP on that address and hands the proxy the streams; on each, the
//! proxy runs deputy's secure channel as the server. Only a client the channel
//! authenticated (a PSK identity or a client certificate, per the channel configuration)
//! may change anything; an anonymous client's requests are answered `refused` and counted.
//! Management traffic is consumed: it never reaches a terminal.
//!
//! Requests and answers are deputy messages inside channel records:
//!
//! | type | name | fields |
//! |---|---|---|
//! | `0x58` | ManagementRequest | `0x8001` request id (u32), `0x8002` op (u8) and the op's fields |
//! | `0x5A` | ManagementAnswer | `0x8001` request id (u32), `0x8003` outcome (u8: 0 done, 1 refused: not authenticated, 2 refused: the op failed) |
//!
//! | op | code | fields |
//! |---|---|---|
//! | add policy row | 1 | `0x8010` source start, `0x8011` source end, `0x8012` destination start, `0x8013` destination end (4 or 16 octets each), `0x8014` protocol (u8, absent: any), `0x8015` source ports (2 × u16), `0x8016` destination ports (2 × u16), `0x8017` direction (u8: 0 inbound, 1 outbound, 2 both), `0x8018` action (u8: 0 bypass, 1 discard, 2 protect) |
//! | remove policy rows | 2 | — (clears the table) |
//! | set default action | 3 | `0x8018` action |
//! | bind terminal address | 4 | `0x8020` terminal (u64), `0x8021` address |
//! | unbind terminal | 5 | `0x8020` terminal |
//! | flush a terminal's SAs | 6 | `0x8020` terminal |

use alloc::vec::Vec;
use core::net::IpAddr;

use super::super::transfer::{self, ip_bytes};
use crate::error::InlineError;
use crate::ipsec::{Action, AddrRange, Direction, Policy, PortRange, Selector};
use crate::wire::{self, FieldWriter, Limits};

/// The management request's message type.
pub const REQUEST: u8 = 0x58;
/// The management answer's message type.
pub const ANSWER: u8 = 0x5A;

const F_ID: u16 = 0x8001;
const F_OP: u16 = 0x8002;
const F_OUTCOME: u16 = 0x8003;
const F_SRC_START: u16 = 0x8010;
const F_SRC_END: u16 = 0x8011;
const F_DST_START: u16 = 0x8012;
const F_DST_END: u16 = 0x8013;
const F_PROTO: u16 = 0x8014;
const F_SPORTS: u16 = 0x8015;
const F_DPORTS: u16 = 0x8016;
const F_DIRECTION: u16 = 0x8017;
const F_ACTION: u16 = 0x8018;
const F_TERMINAL: u16 = 0x8020;
const F_ADDRESS: u16 = 0x8021;

const KNOWN: [u16; 14] = [
    F_ID,
    F_OP,
    F_OUTCOME,
    F_SRC_START,
    F_SRC_END,
    F_DST_START,
    F_DST_END,
    F_PROTO,
    F_SPORTS,
    F_DPORTS,
    F_DIRECTION,
    F_ACTION,
    F_TERMINAL,
    F_ADDRESS,
];

/// One change a management user asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementOp {
    /// Append a row to the policy table.
    AddPolicy(Policy),
    /// Clear the policy table.
    ClearPolicy,
    /// Set the action for packets no row matches.
    SetDefault(Action),
    /// Bind an address to a terminal in the address store.
    Bind {
        /// The terminal.
        terminal: u64,
        /// Its address.
        address: IpAddr,
    },
    /// Remove a terminal from the address store, with its SAs.
    Unbind {
        /// The terminal.
        terminal: u64,
    },
    /// Delete a terminal's SAs (the terminal and the peers are told).
    Flush {
        /// The terminal.
        terminal: u64,
    },
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out.
    Done,
    /// Refused: the channel did not authenticate the client.
    NotAuthenticated,
    /// Refused: the change itself failed (a bound, an unknown terminal).
    Failed,
}

fn action_code(a: Action) -> u8 {
    match a {
        Action::Bypass => 0,
        Action::Discard => 1,
        Action::Protect => 2,
    }
}

fn action_from(c: u8) -> Result<Action, InlineError> {
    Ok(match c {
        0 => Action::Bypass,
        1 => Action::Discard,
        2 => Action::Protect,
        _ => return Err(InlineError::BadManagement),
    })
}

fn ip_from(b: &[u8]) -> Result<IpAddr, InlineError> {
    transfer::ip_from(b).map_err(|_| InlineError::BadManagement)
}

fn ports(r: &PortRange) -> [u8; 4] {
    let (a, b) = (r.start().to_be_bytes(), r.end().to_be_bytes());
    [a[0], a[1], b[0], b[1]]
}

fn ports_from(v: &[u8]) -> Result<PortRange, InlineError> {
    let [a, b, c, d] = <[u8; 4]>::try_from(v).map_err(|_| InlineError::BadManagement)?;
    PortRange::new(u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
        .map_err(|_| InlineError::BadManagement)
}

impl ManagementOp {
    /// The request carrying this op, as a deputy message.
    pub fn encode(&self, id: u32) -> Result<Vec<u8>, InlineError> {
        let w = FieldWriter::new().u32(F_ID, id);
        let w = match self {
            ManagementOp::AddPolicy(p) => {
                let s = &p.selector;
                let mut w = w
                    .u8(F_OP, 1)
                    .bytes(F_SRC_START, &ip_bytes(s.src.start()))
                    .bytes(F_SRC_END, &ip_bytes(s.src.end()))
                    .bytes(F_DST_START, &ip_bytes(s.dst.start()))
                    .bytes(F_DST_END, &ip_bytes(s.dst.end()))
                    .bytes(F_SPORTS, &ports(&s.src_ports))
                    .bytes(F_DPORTS, &ports(&s.dst_ports))
                    .u8(
                        F_DIRECTION,
                        match p.direction {
                            Direction::Inbound => 0,
                            Direction::Outbound => 1,
                            Direction::Both => 2,
                        },
                    )
                    .u8(F_ACTION, action_code(p.action));
                if let Some(proto) = s.protocol {
                    w = w.u8(F_PROTO, proto);
                }
                w
            }
            ManagementOp::ClearPolicy => w.u8(F_OP, 2),
            ManagementOp::SetDefault(a) => w.u8(F_OP, 3).u8(F_ACTION, action_code(*a)),
            ManagementOp::Bind { terminal, address } => w
                .u8(F_OP, 4)
                .u64(F_TERMINAL, *terminal)
                .bytes(F_ADDRESS, &ip_bytes(*address)),
            ManagementOp::Unbind { terminal } => w.u8(F_OP, 5).u64(F_TERMINAL, *terminal),
            ManagementOp::Flush { terminal } => w.u8(F_OP, 6).u64(F_TERMINAL, *terminal),
        };
        wire::encode(REQUEST, 0, w).map_err(|_| InlineError::BadManagement)
    }

    /// Decode a request: its id and op.
    pub fn decode(msg: &[u8]) -> Result<(u32, ManagementOp), InlineError> {
        let bad = |_| InlineError::BadManagement;
        let m = wire::Message::decode(msg, &Limits::default()).map_err(bad)?;
        if m.msg_type() != REQUEST {
            return Err(InlineError::BadManagement);
        }
        let f = m.fields;
        f.check_known(&KNOWN, Default::default()).map_err(bad)?;
        let id = f.u32(F_ID).map_err(bad)?;
        let ip = |ty| f.bytes(ty).map_err(bad).and_then(ip_from);
        let op = match f.u8(F_OP).map_err(bad)? {
            1 => {
                let src = AddrRange::new(ip(F_SRC_START)?, ip(F_SRC_END)?)
                    .map_err(|_| InlineError::BadManagement)?;
                let dst = AddrRange::new(ip(F_DST_START)?, ip(F_DST_END)?)
                    .map_err(|_| InlineError::BadManagement)?;
                let mut sel = Selector::new(src, dst)
                    .src_ports(ports_from(f.bytes(F_SPORTS).map_err(bad)?)?)
                    .dst_ports(ports_from(f.bytes(F_DPORTS).map_err(bad)?)?);
                if let Some(p) = f.get(F_PROTO).map_err(bad)? {
                    let [p] = p else {
                        return Err(InlineError::BadManagement);
                    };
                    sel = sel.protocol(*p);
                }
                let direction = match f.u8(F_DIRECTION).map_err(bad)? {
                    0 => Direction::Inbound,
                    1 => Direction::Outbound,
                    2 => Direction::Both,
                    _ => return Err(InlineError::BadManagement),
                };
                let action = action_from(f.u8(F_ACTION).map_err(bad)?)?;
                ManagementOp::AddPolicy(Policy::new(sel, direction, action))
            }
            2 => ManagementOp::ClearPolicy,
            3 => ManagementOp::SetDefault(action_from(f.u8(F_ACTION).map_err(bad)?)?),
            4 => ManagementOp::Bind {
                terminal: f.u64(F_TERMINAL).map_err(bad)?,
                address: ip(F_ADDRESS)?,
            },
            5 => ManagementOp::Unbind {
                terminal: f.u64(F_TERMINAL).map_err(bad)?,
            },
            6 => ManagementOp::Flush {
                terminal: f.u64(F_TERMINAL).map_err(bad)?,
            },
            _ => return Err(InlineError::BadManagement),
        };
        Ok((id, op))
    }
}

/// An answer to request `id`.
pub fn encode_answer(id: u32, outcome: Outcome) -> Result<Vec<u8>, InlineError> {
    let code = match outcome {
        Outcome::Done => 0,
        Outcome::NotAuthenticated => 1,
        Outcome::Failed => 2,
    };
    wire::encode(
        ANSWER,
        0,
        FieldWriter::new().u32(F_ID, id).u8(F_OUTCOME, code),
    )
    .map_err(|_| InlineError::BadManagement)
}

/// Decode an answer: the request id and what became of it.
pub fn decode_answer(msg: &[u8]) -> Result<(u32, Outcome), InlineError> {
    let bad = |_| InlineError::BadManagement;
    let m = wire::Message::decode(msg, &Limits::default()).map_err(bad)?;
    if m.msg_type() != ANSWER {
        return Err(InlineError::BadManagement);
    }
    let outcome = match m.fields.u8(F_OUTCOME).map_err(bad)? {
        0 => Outcome::Done,
        1 => Outcome::NotAuthenticated,
        2 => Outcome::Failed,
        _ => return Err(InlineError::BadManagement),
    };
    Ok((m.fields.u32(F_ID).map_err(bad)?, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips() {
        let ops = [
            ManagementOp::AddPolicy(Policy::new(
                Selector::parse("2001::1/128", "2001::2/128")
                    .unwrap()
                    .protocol(58)
                    .src_ports(PortRange::single(135)),
                Direction::Inbound,
                Action::Discard,
            )),
            ManagementOp::ClearPolicy,
            ManagementOp::SetDefault(Action::Protect),
            ManagementOp::Bind {
                terminal: 7,
                address: "10.0.0.7".parse().unwrap(),
            },
            ManagementOp::Unbind { terminal: 7 },
            ManagementOp::Flush { terminal: 7 },
        ];
        for (i, op) in ops.iter().enumerate() {
            let bytes = op.encode(i as u32).unwrap();
            assert_eq!(
                ManagementOp::decode(&bytes).unwrap(),
                (i as u32, op.clone())
            );
        }
        let a = encode_answer(9, Outcome::NotAuthenticated).unwrap();
        assert_eq!(decode_answer(&a).unwrap(), (9, Outcome::NotAuthenticated));
        assert_eq!(
            ManagementOp::decode(&a),
            Err(InlineError::BadManagement),
            "an answer is no request"
        );
    }
}
