//! edgeforge-targets: the devices edgeforge exports for. Target profiles (shipped YAML, user-extensible),
//! the fit check every export runs first (refusing with the shortfall and the fix), roofline estimates,
//! and manifest.json with optional ed25519 signatures, checked by `edgeforge verify`.

pub mod cluster;
mod error;
pub mod fit;
pub mod manifest;
pub mod profile;

pub use error::{Result, TargetError};
pub use fit::{check_fit, Fit, FitInput};
pub use profile::{load_profile, ArtifactFormat, DeviceKind, Profile, GENERIC_PROFILE};
