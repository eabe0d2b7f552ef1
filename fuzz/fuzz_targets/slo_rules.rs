#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgate::fuzzing::slo_rules(data));
