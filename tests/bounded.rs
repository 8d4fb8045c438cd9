//! What parsing a tenant's class may cost (issue 32): for classes the
//! attacks of that issue wrote and for generated ones up to 1 MiB, the peak
//! of what `spc::parse_mount` allocates stays within a small multiple of
//! the class's size, and the error text within 64 KiB. A test binary of its
//! own: it measures the process's allocations (`peak_alloc`), so nothing
//! else may run beside it, and it runs its cases one after another.

use peak_alloc::PeakAlloc;
use serde_json::json;
use vault_csi_provider::spc::{self, Defaults};
use vcp_testbed::hostile;

#[global_allocator]
static ALLOCATED: PeakAlloc = PeakAlloc;

/// Peak allocation allowed: this many times the class's size, plus a fixed
/// allowance for the parser's own tables.
const FACTOR: usize = 16;
const FIXED: usize = 1024 * 1024;
/// The longest error text allowed.
const MAX_ERROR: usize = 64 * 1024;

fn defaults() -> Defaults {
    Defaults::builtin(vault_csi_provider::flavor::Flavor::Vault)
}

/// The attributes a driver sends for a class with `parameters`.
fn attributes(parameters: &[(&str, String)]) -> String {
    let mut attrs = serde_json::Map::new();
    attrs.insert("roleName".into(), json!("app"));
    attrs.insert("csi.storage.k8s.io/pod.name".into(), json!("web-0"));
    attrs.insert("csi.storage.k8s.io/pod.namespace".into(), json!("ns"));
    attrs.insert("csi.storage.k8s.io/pod.uid".into(), json!("uid"));
    attrs.insert("csi.storage.k8s.io/serviceAccount.name".into(), json!("app"));
    for (k, v) in parameters {
        attrs.insert((*k).into(), json!(v));
    }
    serde_json::Value::Object(attrs).to_string()
}

/// Parses `attributes`, measuring: (peak bytes allocated, error text).
fn measure(attributes: &str) -> (usize, Option<String>) {
    let d = defaults();
    let base = ALLOCATED.current_usage();
    ALLOCATED.reset_peak_usage();
    let result = spc::parse_mount(attributes, "", "420", &d);
    let peak = ALLOCATED.peak_usage().saturating_sub(base);
    (peak, result.err().map(|e| e.to_string()))
}

fn check(what: &str, attributes: &str) -> Option<String> {
    let (peak, error) = measure(attributes);
    let size = attributes.len();
    println!(
        "BOUNDED | {what} | class {size} bytes | peak {peak} bytes ({:.1}x) | error {} bytes",
        peak as f64 / size as f64,
        error.as_ref().map_or(0, String::len)
    );
    assert!(
        peak <= FACTOR * size + FIXED,
        "{what}: parsing a {size}-byte class allocated {peak} bytes at its peak"
    );
    if let Some(e) = &error {
        assert!(e.len() <= MAX_ERROR, "{what}: a {}-byte error", e.len());
    }
    error
}

/// Issue 32's attack 1, as the driver sends it.
fn names_no_object(missing: usize) -> String {
    attributes(&[("objects", hostile::names_no_object(missing))])
}

/// Issue 32's attack 2, as the driver sends it.
fn sync_amplified(entries: usize) -> String {
    attributes(&[
        (
            "objects",
            "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n".into(),
        ),
        ("syncSecrets", hostile::sync_amplified(entries)),
    ])
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    /// A value a tenant might write: short, long, or huge; sometimes bad.
    fn value(&mut self, max: usize) -> String {
        let len = match self.below(4) {
            0 => self.below(8),
            1 => self.below(64),
            2 => self.below(4096),
            _ => self.below(max as u64 + 1),
        };
        let c = ['a', 'Z', '/', '.', ' ', '%', '~', 'é'][self.below(8)];
        c.to_string().repeat(len)
    }
}

/// A generated class of at most about `budget` bytes.
fn generated(rng: &mut Rng, budget: usize) -> String {
    let max = budget / 16;
    let mut objects = String::new();
    let mut names = Vec::new();
    while objects.len() < budget / 2 {
        let name = if rng.below(3) == 0 {
            rng.value(max)
        } else {
            format!("o{}", rng.below(100_000))
        };
        names.push(name.clone());
        let entry = match rng.below(5) {
            0 => json!({"objectName": name, "secretPath": rng.value(256.min(max)), "secretKey": rng.value(64)}),
            1 => {
                json!({"objectName": name, "secretPath": "secret/data/app", "method": rng.value(64), "encoding": rng.value(64)})
            }
            2 => {
                let refs: String = (0..rng.below(300))
                    .map(|_| {
                        format!(
                            "{{{{ objects.{} }}}}",
                            if rng.below(2) == 0 {
                                rng.value(16)
                            } else {
                                format!("x{}", rng.below(1000))
                            }
                        )
                    })
                    .collect();
                json!({"objectName": name, "template": refs})
            }
            3 => {
                json!({"objectName": name, "secretPath": "secret/data/app", "secretKeyPointer": rng.value(512), "format": rng.value(32)})
            }
            _ => json!({"objectName": name, "secretPath": "secret/data/app", "filePermission": rng.value(16)}),
        };
        objects.push_str(&format!("- {entry}\n"));
    }
    let mut sync = String::new();
    while objects.len() + sync.len() < budget {
        let data: Vec<String> = (0..rng.below(400))
            .map(|_| json!({"key": rng.value(300), "objectName": names.get(rng.below(names.len() as u64 + 1)).cloned().unwrap_or_default()}).to_string())
            .collect();
        sync.push_str(&format!(
            "- {{secretName: {}, type: {}, data: [{}]}}\n",
            json!(rng.value(max)),
            json!(rng.value(40)),
            data.join(", ")
        ));
    }
    attributes(&[("objects", objects), ("syncSecrets", sync)])
}

#[test]
fn parsing_a_class_costs_at_most_a_small_multiple_of_its_size() {
    // The attacks, and each just within the count limits.
    for (what, class) in [
        (
            "attack 1: a template naming 1,000 missing objects",
            names_no_object(1000),
        ),
        ("attack 1, 250 missing objects", names_no_object(250)),
        ("attack 2: 2,000 empty sync entries", sync_amplified(2000)),
        ("attack 2, 256 empty sync entries", sync_amplified(256)),
    ] {
        let error = check(what, &class).expect("refused");
        assert!(error.contains(" more ") || error.contains("at most"), "{what}: {error}");
    }
    // Generated classes up to 1 MiB.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..60 {
        let budget = [1 << 10, 16 << 10, 256 << 10, 1 << 20][i % 4];
        let class = generated(&mut rng, budget);
        check(&format!("generated #{i} (~{budget} bytes)"), &class);
    }
}
