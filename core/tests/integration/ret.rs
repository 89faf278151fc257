//! ret
