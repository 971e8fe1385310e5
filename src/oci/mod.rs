//! OCI types shared by every layer above: digests and the hashing writer,
//! blob descriptors and media types, image references, platforms, times,
//! and the records of a finished image. A leaf: it knows nothing of Nix,
//! of how images are assembled, or where they are read from and written to.

pub mod blob;
pub mod digest;
pub mod platform;
pub mod record;
pub mod reference;
pub mod referrer;
pub mod time;

pub use blob::Blob;
pub use digest::Digest;
pub use platform::Platform;
pub use record::{ImageRecord, IndexRecord, LayerRecord};
pub use reference::ImageRef;
pub use referrer::Referrer;
