//! A PostgreSQL cluster for tests (to be written).
