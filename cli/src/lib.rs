//! weir: the command-line interface (topics, produce, consume, groups, bench).
//!
//! Empty until the single-node broker issue.
