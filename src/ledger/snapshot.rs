//! Taking a snapshot.
