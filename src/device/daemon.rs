//! Wires a config into a running daemon: (being moved here from the binary).
