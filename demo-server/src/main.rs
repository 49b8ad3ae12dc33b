//! The demo server. Not written yet.

fn main() {}
