//! `irdistill bench`: (being moved here from the binary).
