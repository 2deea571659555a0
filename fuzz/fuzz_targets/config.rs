#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    jwkd::fuzzing::config(data);
});
