//! The local AWS stack. Not written yet.
