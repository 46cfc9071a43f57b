//! Desired vs observed state: the pure plan, and its execution.
