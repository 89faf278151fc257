//! Tests of the enterprise library. One binary, one module per concern.

mod composition;
