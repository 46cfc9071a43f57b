//! Container records: the `containers` table, names, and state transitions.
