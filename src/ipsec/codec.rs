//! The wire form of a [`ChildSa`]: a body of deputy TLV fields ([`crate::wire`]) that a
//! key-exchange proxy puts in its key-transfer message and seals with the terminal's
//! delegation key. Every field is critical (bit 15): a terminal that does not understand
//! one refuses the SA rather than run it half-understood.
//!
//! | type | field | value |
//! |---|---|---|
//! | 0x8001 / 0x8002 | SPI in / out | u32 |
//! | 0x8003 | suite | u8, [`Suite::id`] |
//! | 0x8004 / 0x8005 | keys in / out | nested: 0x8001 encryption key ‖ salt, 0x8002 integrity key |
//! | 0x8006 | mode | u8: 0 transport, 1 tunnel |
//! | 0x8007 / 0x8008 | tunnel local / remote | address (port 0), tunnel mode only |
//! | 0x8009 / 0x800a | UDP encapsulation local / remote | address and port, optional |
//! | 0x800b / 0x800c | local / remote traffic selector | repeated: protocol u8, start port u16, end port u16, start address, end address (4 or 16 bytes each) |
//! | 0x800d – 0x8010 | soft bytes, hard bytes, soft time, hard time | u64 (time in ns), each optional |
//! | 0x8011 | ESN | u8 0/1 |
//! | 0x8012 | replay window | u32 |
//!
//! The encoding is written into one pre-sized buffer that wipes itself on drop, so no
//! copy of the keys is left behind by reallocation.

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use zeroize::Zeroizing;

use super::IpsecError;
use super::esp::{SaKeys, Suite};
use super::sa::{ChildSa, Lifetime, MAX_TRAFFIC_SELECTORS, Mode, UdpEncap};
use super::selector::{AddrRange, PortRange, TrafficSelector};
use crate::Error;
use crate::wire::{Fields, UnknownFieldPolicy, WireError, decode_addr, encode_addr};

const SPI_IN: u16 = 0x8001;
const SPI_OUT: u16 = 0x8002;
const SUITE: u16 = 0x8003;
const KEYS_IN: u16 = 0x8004;
const KEYS_OUT: u16 = 0x8005;
const MODE: u16 = 0x8006;
const TUNNEL_LOCAL: u16 = 0x8007;
const TUNNEL_REMOTE: u16 = 0x8008;
const ENCAP_LOCAL: u16 = 0x8009;
const ENCAP_REMOTE: u16 = 0x800a;
const LOCAL_TS: u16 = 0x800b;
const REMOTE_TS: u16 = 0x800c;
const SOFT_BYTES: u16 = 0x800d;
const HARD_BYTES: u16 = 0x800e;
const SOFT_TIME: u16 = 0x800f;
const HARD_TIME: u16 = 0x8010;
const ESN: u16 = 0x8011;
const REPLAY_WINDOW: u16 = 0x8012;

const KEY_ENC: u16 = 0x8001;
const KEY_INTEG: u16 = 0x8002;

const KNOWN: [u16; 18] = [
    SPI_IN,
    SPI_OUT,
    SUITE,
    KEYS_IN,
    KEYS_OUT,
    MODE,
    TUNNEL_LOCAL,
    TUNNEL_REMOTE,
    ENCAP_LOCAL,
    ENCAP_REMOTE,
    LOCAL_TS,
    REMOTE_TS,
    SOFT_BYTES,
    HARD_BYTES,
    SOFT_TIME,
    HARD_TIME,
    ESN,
    REPLAY_WINDOW,
];

/// Most fields a Child SA body may have.
const MAX_FIELDS: usize = 16 + 2 * MAX_TRAFFIC_SELECTORS;

/// Largest encoded body (keys ≤ 36 + 32 bytes, selectors ≤ 41 bytes each).
const MAX_LEN: usize = 1024 + 2 * MAX_TRAFFIC_SELECTORS * 41;

fn put(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    // Lengths are bounded by `validate` (keys) and by construction (everything else).
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

fn put_keys(out: &mut Vec<u8>, ty: u16, keys: &SaKeys) {
    let inner_len = 8 + keys.encryption.len() + keys.integrity.len();
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&u16::try_from(inner_len).unwrap_or(u16::MAX).to_be_bytes());
    put(out, KEY_ENC, &keys.encryption);
    put(out, KEY_INTEG, &keys.integrity);
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn put_ts(out: &mut Vec<u8>, ty: u16, ts: &TrafficSelector) {
    let mut v = Vec::with_capacity(37);
    v.push(ts.protocol);
    v.extend_from_slice(&ts.ports.start().to_be_bytes());
    v.extend_from_slice(&ts.ports.end().to_be_bytes());
    v.extend(ip_bytes(ts.addrs.start()));
    v.extend(ip_bytes(ts.addrs.end()));
    put(out, ty, &v);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ChildSa {
    /// Encode as a body of deputy TLV fields (see the table in this module's source docs
    /// and `docs/ipsec.md`). The SA is validated first. The result holds keys: seal it
    /// before it leaves the device, and let it drop (it wipes itself).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, IpsecError> {
        self.validate()?;
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_LEN));
        put(&mut out, SPI_IN, &self.spi_in.to_be_bytes());
        put(&mut out, SPI_OUT, &self.spi_out.to_be_bytes());
        put(&mut out, SUITE, &[self.suite.id()]);
        put_keys(&mut out, KEYS_IN, &self.keys_in);
        put_keys(&mut out, KEYS_OUT, &self.keys_out);
        match self.mode {
            Mode::Transport => put(&mut out, MODE, &[0]),
            Mode::Tunnel { local, remote } => {
                put(&mut out, MODE, &[1]);
                put(
                    &mut out,
                    TUNNEL_LOCAL,
                    &encode_addr(SocketAddr::new(local, 0)),
                );
                put(
                    &mut out,
                    TUNNEL_REMOTE,
                    &encode_addr(SocketAddr::new(remote, 0)),
                );
            }
        }
        if let Some(e) = self.encap {
            put(&mut out, ENCAP_LOCAL, &encode_addr(e.local));
            put(&mut out, ENCAP_REMOTE, &encode_addr(e.remote));
        }
        for ts in &self.local_ts {
            put_ts(&mut out, LOCAL_TS, ts);
        }
        for ts in &self.remote_ts {
            put_ts(&mut out, REMOTE_TS, ts);
        }
        let l = &self.lifetime;
        for (ty, v) in [
            (SOFT_BYTES, l.soft_bytes),
            (HARD_BYTES, l.hard_bytes),
            (SOFT_TIME, l.soft_time.map(nanos)),
            (HARD_TIME, l.hard_time.map(nanos)),
        ] {
            if let Some(v) = v {
                put(&mut out, ty, &v.to_be_bytes());
            }
        }
        put(&mut out, ESN, &[u8::from(self.esn)]);
        put(&mut out, REPLAY_WINDOW, &self.replay_window.to_be_bytes());
        Ok(out)
    }

    /// Decode what [`ChildSa::encode`] produced, strictly: every field checked, unknown
    /// fields refused, and the result validated.
    pub fn decode(body: &[u8]) -> Result<ChildSa, Error> {
        if body.len() > MAX_LEN {
            return Err(WireError::MessageTooLarge {
                len: body.len(),
                max: MAX_LEN,
            }
            .into());
        }
        let f = Fields::parse(body, MAX_FIELDS)?;
        f.check_known(&KNOWN, UnknownFieldPolicy::Reject)?;
        let suite = Suite::from_id(f.u8(SUITE)?).ok_or(WireError::BadValue(SUITE))?;
        let keys = |ty| -> Result<SaKeys, WireError> {
            let k = f.nested(ty, 2)?;
            k.check_known(&[KEY_ENC, KEY_INTEG], UnknownFieldPolicy::Reject)?;
            Ok(SaKeys::new(k.bytes(KEY_ENC)?, k.bytes(KEY_INTEG)?))
        };
        let mode = match f.u8(MODE)? {
            0 => Mode::Transport,
            1 => Mode::Tunnel {
                local: f.addr(TUNNEL_LOCAL)?.ip(),
                remote: f.addr(TUNNEL_REMOTE)?.ip(),
            },
            _ => return Err(WireError::BadValue(MODE).into()),
        };
        let encap = match (f.get(ENCAP_LOCAL)?, f.get(ENCAP_REMOTE)?) {
            (Some(l), Some(r)) => Some(UdpEncap {
                local: decode_addr(ENCAP_LOCAL, l)?,
                remote: decode_addr(ENCAP_REMOTE, r)?,
            }),
            (None, None) => None,
            _ => return Err(WireError::MissingField(ENCAP_REMOTE).into()),
        };
        let selectors = |ty| -> Result<Vec<TrafficSelector>, Error> {
            f.all(ty).map(|v| decode_ts(ty, v)).collect()
        };
        let time = |ty| -> Result<Option<Duration>, WireError> {
            Ok(f.opt_u64(ty)?.map(Duration::from_nanos))
        };
        let esn = match f.u8(ESN)? {
            0 => false,
            1 => true,
            _ => return Err(WireError::BadValue(ESN).into()),
        };
        let sa = ChildSa {
            spi_in: f.u32(SPI_IN)?,
            spi_out: f.u32(SPI_OUT)?,
            suite,
            keys_in: keys(KEYS_IN)?,
            keys_out: keys(KEYS_OUT)?,
            mode,
            encap,
            local_ts: selectors(LOCAL_TS)?,
            remote_ts: selectors(REMOTE_TS)?,
            lifetime: Lifetime {
                soft_bytes: f.opt_u64(SOFT_BYTES)?,
                hard_bytes: f.opt_u64(HARD_BYTES)?,
                soft_time: time(SOFT_TIME)?,
                hard_time: time(HARD_TIME)?,
            },
            esn,
            replay_window: f.u32(REPLAY_WINDOW)?,
        };
        sa.validate()?;
        Ok(sa)
    }
}

fn decode_ts(ty: u16, v: &[u8]) -> Result<TrafficSelector, Error> {
    let bad = || WireError::BadFieldLength {
        field: ty,
        len: v.len(),
    };
    let (head, addrs) = v.split_at_checked(5).ok_or_else(bad)?;
    let protocol = head[0];
    let ports = PortRange::new(
        u16::from_be_bytes([head[1], head[2]]),
        u16::from_be_bytes([head[3], head[4]]),
    )?;
    let (start, end) = match addrs.len() {
        8 => {
            let s: [u8; 4] = addrs[..4].try_into().map_err(|_| bad())?;
            let e: [u8; 4] = addrs[4..].try_into().map_err(|_| bad())?;
            (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(e)))
        }
        32 => {
            let s: [u8; 16] = addrs[..16].try_into().map_err(|_| bad())?;
            let e: [u8; 16] = addrs[16..].try_into().map_err(|_| bad())?;
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(e)))
        }
        _ => return Err(bad().into()),
    };
    Ok(TrafficSelector {
        addrs: AddrRange::new(start, end)?,
        protocol,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipsec::NAT_T_PORT;
    use alloc::vec;

    fn sample() -> ChildSa {
        let suite = Suite::AesCbc256HmacSha256;
        let mut sa = ChildSa::new(
            0xc1a0_0001,
            0x0000_beef,
            suite,
            SaKeys::new(&[1; 32], &[2; 32]),
            SaKeys::new(&[3; 32], &[4; 32]),
            Mode::Tunnel {
                local: "2001:db8::1".parse().unwrap(),
                remote: "2001:db8::2".parse().unwrap(),
            },
            vec![
                TrafficSelector::new("2001:db8:1::/48".parse().unwrap()),
                TrafficSelector {
                    addrs: "10.0.0.1-10.0.0.9".parse().unwrap(),
                    protocol: 17,
                    ports: PortRange::new(500, 4500).unwrap(),
                },
            ],
            vec![TrafficSelector::any_v6()],
        );
        sa.encap = Some(UdpEncap {
            local: SocketAddr::new("2001:db8::1".parse().unwrap(), NAT_T_PORT),
            remote: SocketAddr::new("2001:db8::2".parse().unwrap(), 61000),
        });
        sa.lifetime = Lifetime {
            soft_bytes: Some(1 << 30),
            hard_bytes: Some(1 << 31),
            soft_time: Some(Duration::from_millis(3_000_001)),
            hard_time: None,
        };
        sa.esn = true;
        sa.replay_window = 1024;
        sa
    }

    #[test]
    fn child_sa_round_trips_through_its_wire_form() {
        let sa = sample();
        let bytes = sa.encode().unwrap();
        assert_eq!(ChildSa::decode(&bytes).unwrap(), sa);
        let mut t = sa.clone();
        t.mode = Mode::Transport;
        t.encap = None;
        t.lifetime = Lifetime::default();
        t.esn = false;
        assert_eq!(ChildSa::decode(&t.encode().unwrap()).unwrap(), t);
    }

    #[test]
    fn decoding_is_strict_and_never_panics() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(ChildSa::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0xff;
            // Any outcome but a panic; most flips are refused.
            let _ = ChildSa::decode(&b);
        }
        // An unknown critical field is refused.
        let mut extra = bytes.to_vec();
        extra.extend_from_slice(&[0x80, 0x7f, 0, 0]);
        assert!(matches!(
            ChildSa::decode(&extra),
            Err(Error::Wire(WireError::UnknownCriticalField(0x807f)))
        ));
        // A wrong key length is caught by validation.
        let mut bad = sample();
        bad.keys_in.integrity.pop();
        assert!(bad.encode().is_err());
    }
}
