//! The deterministic network simulator (being written).
