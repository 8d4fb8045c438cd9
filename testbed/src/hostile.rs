//! SecretProviderClasses a hostile tenant writes (issue 32), shared by the
//! integration tests that play them against the provider and the test that
//! measures what parsing them costs.

/// Attack 1: 2,000 objects with 64-character names, and one template naming
/// `missing` objects that do not exist (each such problem once embedded the
/// names of all 2,000 objects). The `objects` parameter.
pub fn names_no_object(missing: usize) -> String {
    let mut objects = String::new();
    for i in 0..2000 {
        objects.push_str(&format!(
            "- {{objectName: {}-{i:04}, secretPath: secret/data/app, secretKey: k}}\n",
            "n".repeat(58)
        ));
    }
    let body: String = (0..missing)
        .map(|i| format!("{{{{ objects.missing{i:04} }}}}"))
        .collect();
    objects.push_str(&format!("- objectName: t\n  template: \"{body}\"\n"));
    objects
}

/// Attack 2: one Secret with a 100,000-character name and `entries` empty
/// data entries (each problem once repeated the name twice). The
/// `syncSecrets` parameter.
pub fn sync_amplified(entries: usize) -> String {
    let data = vec!["{}"; entries].join(", ");
    format!("- secretName: {}\n  data: [{data}]\n", "s".repeat(100_000))
}

/// Attack 3: `templates` template objects each looping about `iterations`
/// times over a read object's value: valid, and as much rendering CPU as a
/// class may choose. The `objects` parameter (reading `secret/data/app`).
pub fn busy_templates(templates: usize, iterations: usize) -> String {
    let mut objects = String::from("- {objectName: k, secretPath: secret/data/app, secretKey: k}\n");
    for i in 0..templates {
        objects.push_str(&format!(
            "- objectName: busy-{i}\n  template: \"{{% for i in range({iterations}) %}}{{{{ objects.k.data.k }}}}{{% endfor %}}\"\n"
        ));
    }
    objects
}
