//! `objectName` validation: whatever it accepts must satisfy the driver's
//! `File.path` rules, checked here independently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_csi_provider::spc;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    if spc::check_object_path(p).is_ok() {
        assert!(!p.is_empty() && p.len() <= 4096);
        assert!(!p.starts_with('/') && !p.contains('\0'));
        let elements: Vec<&str> = p.split('/').collect();
        assert!(!elements[0].starts_with(".."));
        for e in elements {
            assert!(!e.is_empty() && e != "." && e != ".." && e.len() <= 255, "{p:?}");
        }
    }
});
