//! libFuzzer entry for `cleanslate_fuzz::load_module` (see that module for the
//! property); a finding panics, which libFuzzer records as a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut tally = cleanslate_fuzz::Tally::default();
    if let Err(finding) = cleanslate_fuzz::load_module::check(data, &mut tally) {
        panic!("finding: {finding}");
    }
});
