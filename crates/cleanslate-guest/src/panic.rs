//! Panics: the message goes to the host (`cleanslate.panic`), which ends
//! the call as `GuestPanic` carrying it. Formatting uses a fixed buffer, so
//! a panic caused by a failed allocation still reports its message.

use core::fmt::Write;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "cleanslate")]
unsafe extern "C" {
    /// Never returns: the host ends the call.
    #[link_name = "panic"]
    fn cleanslate_panic(ptr: u32, len: u32);
}

/// The longest panic message sent; longer ones are cut.
const MESSAGE_CAPACITY: usize = 1024;

/// A fixed-size buffer `core::fmt` can write into without allocating.
struct MessageBuffer {
    bytes: [u8; MESSAGE_CAPACITY],
    len: usize,
}

impl Write for MessageBuffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = MESSAGE_CAPACITY - self.len;
        // Cut at a character boundary so the host gets valid UTF-8.
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Report `message` (with where it happened) to the host and stop.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn report(message: &dyn core::fmt::Display, location: Option<&core::panic::Location<'_>>) -> ! {
    let mut buffer = MessageBuffer {
        bytes: [0; MESSAGE_CAPACITY],
        len: 0,
    };
    let _ = write!(buffer, "{message}");
    if let Some(at) = location {
        let _ = write!(buffer, " (at {}:{})", at.file(), at.line());
    }
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: the import only reads the buffer's initialised prefix;
        // it does not return (the host ends the call), and `unreachable`
        // traps should a host ever let it.
        unsafe { cleanslate_panic(buffer.bytes.as_ptr() as u32, buffer.len as u32) };
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    panic!(
        "{}",
        core::str::from_utf8(&buffer.bytes[..buffer.len]).unwrap_or("?")
    )
}

#[cfg(all(feature = "panic-handler", target_arch = "wasm32", not(test)))]
#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    report(&info.message(), info.location())
}

/// For guests that use `std` (and turned off the `panic-handler` feature):
/// send panic messages to the host. Call it first thing in every export, or
/// once from an init function.
#[cfg(feature = "std")]
pub fn install_panic_hook() {
    std::panic::set_hook(std::boxed::Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<std::string::String>()
                    .map(|s| s.as_str())
            })
            .unwrap_or("(a panic without a message)");
        report(&message, info.location())
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut buffer = MessageBuffer {
            bytes: [0; MESSAGE_CAPACITY],
            len: 0,
        };
        let long = "é".repeat(MESSAGE_CAPACITY);
        write!(buffer, "{long}").unwrap();
        assert!(buffer.len <= MESSAGE_CAPACITY);
        assert!(core::str::from_utf8(&buffer.bytes[..buffer.len]).is_ok());
    }
}
