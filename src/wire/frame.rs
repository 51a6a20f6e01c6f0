//! Packet reading and building.
