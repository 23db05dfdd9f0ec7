//! upkeep-sim
