//! upkeep-store
