#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgate::fuzzing::conform_csv(data));
