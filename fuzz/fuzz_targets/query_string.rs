#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::query_string(data));
