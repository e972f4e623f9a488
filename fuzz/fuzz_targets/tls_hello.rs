#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::tls_hello(data));
