//! The `objects` YAML parser, and `syncSecrets` against its result.
//! Input: objects YAML, optionally followed by 0xFF and syncSecrets YAML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_csi_provider::spc;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0xFF);
    let Ok(objects) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let sync = parts.next().and_then(|s| std::str::from_utf8(s).ok());
    let Ok(parsed) = spc::parse_objects(objects, 0o644) else {
        return;
    };
    let mut names = std::collections::HashSet::new();
    for o in &parsed.objects {
        assert!(spc::check_object_path(&o.name).is_ok(), "{:?}", o.name);
        assert!(names.insert(o.name.clone()), "duplicate {:?}", o.name);
        assert!(o.mode <= 0o777);
        assert!(matches!(o.read.method.as_str(), "GET" | "PUT" | "POST"));
        assert!(!o.read.path.split('/').any(|e| e == ".." || e == "."));
    }
    if let Some(sync) = sync {
        let _ = spc::parse_sync(sync, &parsed.objects, &parsed.templates);
    }
});
