//! The NAT matrix: for every pair of RFC 4787 behaviours (endpoint-independent,
//! address-dependent, address-and-port-dependent mapping and filtering) on the issuer's
//! and the acceptor's router, with and without a static mapping on the issuer's router,
//! whether the devices connect directly — asserted against
//! `scenario::expected_direct` (the reasoning is in `docs/rendezvous.md`). The tour prints
//! the same table from the same function.
//!
//! Every case runs the whole S202–S209 flow in its own simulator; a case that must not
//! connect has to end with a typed `PeerFailed { HolePunchFailed }` on both devices, not
//! hang or fail in some other way.

use deputy::rendezvous::scenario::{BEHAVIOURS, expected_direct, label, matrix_case};

/// Run the cases whose issuer behaviour is `BEHAVIOURS[row]`.
fn row(row: usize, static_mapping: bool) {
    let issuer = BEHAVIOURS[row];
    let mut wrong = Vec::new();
    for (col, &acceptor) in BEHAVIOURS.iter().enumerate() {
        let seed = 1000 + (row * 9 + col) as u64;
        let got =
            matrix_case(seed, issuer, acceptor, static_mapping).unwrap_or_else(|e| panic!("{e}"));
        let want = expected_direct(issuer, acceptor, static_mapping);
        if got.is_some() != want {
            wrong.push(format!(
                "{} ↔ {}: connected {:?}, expected {want}",
                label(issuer),
                label(acceptor),
                got
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn issuer_eim_eif() {
    row(0, false);
}
#[test]
fn issuer_eim_adf() {
    row(1, false);
}
#[test]
fn issuer_eim_apdf() {
    row(2, false);
}
#[test]
fn issuer_adm_eif() {
    row(3, false);
}
#[test]
fn issuer_adm_adf() {
    row(4, false);
}
#[test]
fn issuer_adm_apdf() {
    row(5, false);
}
#[test]
fn issuer_apdm_eif() {
    row(6, false);
}
#[test]
fn issuer_apdm_adf() {
    row(7, false);
}
#[test]
fn issuer_apdm_apdf() {
    row(8, false);
}

#[test]
fn with_a_static_mapping_every_pair_connects() {
    for r in 0..BEHAVIOURS.len() {
        row(r, true);
    }
}

#[test]
fn the_expected_table_keeps_its_promises() {
    use deputy::sim::{Filtering, Mapping};
    // At least one endpoint-independent mapping, or a static mapping: always direct.
    for &a in &BEHAVIOURS {
        for &b in &BEHAVIOURS {
            if a.0 == Mapping::EndpointIndependent || b.0 == Mapping::EndpointIndependent {
                assert!(expected_direct(a, b, false));
            }
            assert!(expected_direct(a, b, true));
        }
    }
    // Address-and-port-dependent mapping and filtering on both sides: never.
    let symmetric = (
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
    );
    assert!(!expected_direct(symmetric, symmetric, false));
}
