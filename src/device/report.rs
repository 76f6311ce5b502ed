//! What a daemon run sums up: (being moved here from the binary).
