//! The sync Lambda. Not written yet.

fn main() {}
