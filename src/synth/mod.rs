//! Procedural paired RGB + IR scene generator.
