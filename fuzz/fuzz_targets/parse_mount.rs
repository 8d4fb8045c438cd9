//! The whole Mount request parser: attributes JSON, `secrets`, `permission`.
//! Input: the three fields separated by 0xFF bytes (never valid UTF-8, so
//! the separator cannot occur inside a field the driver could send).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_csi_provider::spc::{self, Defaults};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|b| *b == 0xFF);
    let (Ok(attributes), Ok(secrets), Ok(permission)) = (
        std::str::from_utf8(fields.next().unwrap_or_default()),
        std::str::from_utf8(fields.next().unwrap_or(b"{}")),
        std::str::from_utf8(fields.next().unwrap_or(b"420")),
    ) else {
        return;
    };
    let defaults = Defaults::builtin(vault_csi_provider::flavor::Flavor::Vault);
    if let Ok(spec) = spc::parse_mount(attributes, secrets, permission, &defaults) {
        assert!(!spec.role.is_empty());
        assert!(!spec.objects.is_empty() || !spec.templates.is_empty());
        for o in &spec.objects {
            assert!(spc::check_object_path(&o.name).is_ok(), "{:?}", o.name);
            assert!(o.mode <= 0o777);
            assert!(o.read.path.starts_with("/v1/"));
        }
    }
});
