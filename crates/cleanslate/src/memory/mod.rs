//! Linear memories that Cleanslate maps itself instead of leaving them to
//! the engine, so a reset can do what the engine offers no way to do: give
//! memory back after a call grew it, and make a new instance's memory *be*
//! a snapshot by mapping it copy-on-write.
//!
//! - [`MemoryRegion`]: one memory's address-space reservation, of which the
//!   first `size` bytes are accessible; it grows (for the guest) and lowers
//!   (for the reset) by changing page protections, and maps an image over
//!   its start.
//! - [`ImageFile`]: a memory's contents as a sealed in-memory file, mapped
//!   privately, so every instance shares its pages until it writes them.
//! - [`GuestMemoryCreator`]: the engine's hook that creates every linear
//!   memory as a region, and [`record_created`], which hands the regions an
//!   instantiation created to the code that instantiated.
//!
//! Why a lowered size is sound is argued in docs/SECURITY.md ("Memory
//! growth undone in place").

mod creator;
mod image_file;
mod region;

pub(crate) use creator::{GuestMemoryCreator, record_created};
pub(crate) use image_file::{ImageFile, LazyImageFile};
pub(crate) use region::MemoryRegion;

/// The host page size regions and images work in.
pub(crate) const HOST_PAGE: usize = 4096;

/// `len` rounded up to whole host pages; `None` on overflow.
pub(crate) fn round_up_to_page(len: usize) -> Option<usize> {
    len.checked_add(HOST_PAGE - 1).map(|n| n & !(HOST_PAGE - 1))
}
