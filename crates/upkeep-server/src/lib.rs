//! upkeep-server
