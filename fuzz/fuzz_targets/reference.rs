//! Image references: parsed or refused, never a panic; a parsed reference
//! prints to a string that parses to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nixoci::oci::ImageRef;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = ImageRef::parse(s) {
            let again = ImageRef::parse(&r.to_string()).expect("a printed reference parses");
            assert_eq!(again, r);
        }
    }
});
