//! The instance layer: one wasmtime instance in its own store and
//! everything it is linked with — host functions, WASI, the interrupt and
//! cancel machinery its store consults. Below it: engine, module, tracking;
//! above it: snapshot, reset, sandbox.

mod cancel;
mod factory;
pub(crate) mod host;
pub(crate) mod interrupt;
mod live;
mod store;
pub(crate) mod wasi;

pub use cancel::CancelToken;
pub(crate) use factory::InstanceFactory;
pub use interrupt::InterruptHandle;
pub(crate) use live::LiveInstance;
pub(crate) use store::StoreData;
