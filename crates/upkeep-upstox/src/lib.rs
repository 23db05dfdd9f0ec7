//! upkeep-upstox
