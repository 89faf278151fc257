//! comparators
