//! Empty: the end-to-end tests live in `it/`.
