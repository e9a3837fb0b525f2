//! Slotway proxy.
