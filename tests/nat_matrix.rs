//! The NAT matrix: for every pair of RFC 4787 behaviours (endpoint-independent,
//! address-dependent, address-and-port-dependent mapping and filtering) on the issuer's
//! and the acceptor's router, with and without a static mapping on the issuer's router,
//! whether the devices connect directly — asserted against
//! `scenario::expected_direct` (the reasoning is in `docs/rendezvous.md`).
//!
//! Every case runs the whole S202–S209 flow in its own simulator (`scenario::nat_matrix`,
//! which the tour prints); a case that must not connect has to end with a typed
//! `PeerFailed { HolePunchFailed }` on both devices, not hang or fail in another way
//! (`matrix_case` returns an error otherwise).

use deputy::sim::scenario::{BEHAVIOURS, cell, expected_direct, label, nat_matrix};
use deputy::sim::{Filtering, Mapping};

#[test]
fn without_a_static_mapping_the_matrix_is_as_expected() {
    let rows = nat_matrix(false).unwrap_or_else(|e| panic!("{e}"));
    let mut wrong = Vec::new();
    for row in &rows {
        for (&acceptor, &got) in BEHAVIOURS.iter().zip(&row.cells) {
            let want = expected_direct(row.issuer, acceptor, false);
            if got.is_some() != want {
                wrong.push(format!(
                    "{} ↔ {}: {}, expected {}",
                    label(row.issuer),
                    label(acceptor),
                    cell(got),
                    if want { "direct" } else { "no connection" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The table in docs/rendezvous.md is this run's (the tour prints the same).
    let docs = include_str!("../docs/rendezvous.md");
    for row in &rows {
        let mut line = format!("| {:<21} |", label(row.issuer));
        for (&acceptor, &got) in BEHAVIOURS.iter().zip(&row.cells) {
            let width = label(acceptor).chars().count();
            line += &format!(" {:<width$} |", cell(got));
        }
        assert!(docs.contains(&line), "docs/rendezvous.md lacks\n{line}");
    }
}

#[test]
fn with_a_static_mapping_every_pair_connects_at_once() {
    let rows = nat_matrix(true).unwrap_or_else(|e| panic!("{e}"));
    for row in rows {
        for (&acceptor, got) in BEHAVIOURS.iter().zip(row.cells) {
            assert_eq!(
                got,
                Some(1),
                "{} ↔ {} with a static mapping",
                label(row.issuer),
                label(acceptor)
            );
            assert!(expected_direct(row.issuer, acceptor, true));
        }
    }
}

#[test]
fn the_expected_table_keeps_the_promises() {
    // At least one endpoint-independent mapping, or a static mapping: always direct.
    for &a in &BEHAVIOURS {
        for &b in &BEHAVIOURS {
            if a.0 == Mapping::EndpointIndependent || b.0 == Mapping::EndpointIndependent {
                assert!(expected_direct(a, b, false));
            }
            assert!(expected_direct(a, b, true));
            // Symmetric in the two roles.
            assert_eq!(expected_direct(a, b, false), expected_direct(b, a, false));
        }
    }
    // Address-and-port-dependent mapping and filtering on both sides: never.
    let symmetric = (
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
    );
    assert!(!expected_direct(symmetric, symmetric, false));
    let count = BEHAVIOURS
        .iter()
        .flat_map(|&a| {
            BEHAVIOURS
                .iter()
                .map(move |&b| expected_direct(a, b, false))
        })
        .filter(|d| *d)
        .count();
    assert_eq!(
        count, 69,
        "12 of 81 pairs cannot connect without a static mapping"
    );
}
