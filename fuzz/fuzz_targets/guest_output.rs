//! libFuzzer entry for `cleanslate_fuzz::guest_output` (see that module for
//! the property); a finding panics, which libFuzzer records as a crash.
#![no_main]

use std::sync::Once;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // libFuzzer's panic hook aborts on every panic, but this target's host
    // function panics on purpose (the library must turn that into a
    // `host_panic` error). Let exactly that panic unwind; any other still
    // aborts as a crash.
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let requested = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| *m == cleanslate_fuzz::guest_output::REQUESTED_PANIC);
            if !requested {
                abort(info);
            }
        }));
    });
    let mut tally = cleanslate_fuzz::Tally::default();
    if let Err(finding) = cleanslate_fuzz::guest_output::check(data, &mut tally) {
        panic!("finding: {finding}");
    }
});
