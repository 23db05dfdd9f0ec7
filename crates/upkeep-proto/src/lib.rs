//! upkeep-proto
