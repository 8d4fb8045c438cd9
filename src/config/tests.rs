use super::*;

fn parse(args: &[&str]) -> Flags {
    let mut v = vec!["vault-csi-provider"];
    v.extend_from_slice(args);
    Flags::parse_args(v).expect("flags parse")
}

fn addr(s: &str) -> crate::vault::failover::Addresses {
    Addresses::parse(s).unwrap()
}

fn no_env() -> Env {
    Env::from_pairs([])
}

#[test]
fn defaults_match_the_incumbent() {
    let f = parse(&[]);
    assert_eq!(f.endpoint(), PathBuf::from("/tmp/vault.sock"));
    assert_eq!(f.primary_flavor(), Flavor::Vault);
    assert_eq!(f.effective_log_level(), LogLevel::Info);
    assert_eq!(f.health_addr, ":8080");
    assert_eq!(f.hmac_secret_name(), "vault-csi-provider-hmac-key");
    assert_eq!(f.cache_size, 1000);
    assert_eq!(f.state_path(), Some(PathBuf::from("/tmp/vault-csi-provider.state")));
    let d = f.defaults_for(Flavor::Vault, &no_env()).unwrap();
    assert_eq!(d.vault.addresses, addr(DEFAULT_ADDR));
    assert_eq!(d.auth_mount, "kubernetes");
    assert!(!d.vault.tls.skip_verify);
    assert_eq!(d.flavor, Flavor::Vault);
}

#[test]
fn an_openbao_socket_gets_the_forks_defaults() {
    // openbao-helm's arguments.
    let f = parse(&[
        "--endpoint=/provider/openbao.sock",
        "--debug=false",
        "--hmac-secret-name=openbao-csi-provider-hmac-key",
    ]);
    assert_eq!(f.primary_flavor(), Flavor::OpenBao);
    assert_eq!(
        f.sockets().unwrap(),
        vec![Socket {
            path: "/provider/openbao.sock".into(),
            flavor: Flavor::OpenBao
        }]
    );
    assert_eq!(
        f.state_path(),
        Some(PathBuf::from("/provider/openbao-csi-provider.state"))
    );
    // Without the flag, the Secret's name follows the socket's flavour.
    let f = parse(&["--endpoint=/provider/openbao.sock"]);
    assert_eq!(f.hmac_secret_name(), "openbao-csi-provider-hmac-key");
    let d = f.defaults_for(Flavor::OpenBao, &no_env()).unwrap();
    assert_eq!((d.flavor, d.auth_mount.as_str()), (Flavor::OpenBao, "kubernetes"));
    assert_eq!(d.vault.addresses, addr(DEFAULT_ADDR));
    // -flavor names it for a socket of any name; its default path follows.
    let f = parse(&["-flavor=openbao"]);
    assert_eq!(f.endpoint(), PathBuf::from("/tmp/openbao.sock"));
    let f = parse(&["-flavor=openbao", "-endpoint=/run/p.sock"]);
    assert_eq!(f.primary_flavor(), Flavor::OpenBao);
    assert_eq!(parse(&["-endpoint=/run/p.sock"]).primary_flavor(), Flavor::Vault);
    assert!(Flags::parse_args(["p", "-flavor=consul"]).is_err());
}

#[test]
fn both_sockets_at_once_each_with_its_flavour() {
    let f = parse(&[
        "-endpoint=/provider/vault.sock",
        "-openbao-endpoint=/provider/openbao.sock",
        "-vault-addr=https://vault.example:8200",
        "-openbao-addr=https://bao.example:8200",
        "-openbao-mount=bao-k8s",
    ]);
    let sockets = f.sockets().unwrap();
    assert_eq!(
        sockets.iter().map(|s| s.flavor).collect::<Vec<_>>(),
        vec![Flavor::Vault, Flavor::OpenBao]
    );
    assert!(f.check_flavor_flags(&[Flavor::Vault, Flavor::OpenBao]).is_ok());
    // One key Secret, the -endpoint socket's.
    assert_eq!(f.hmac_secret_name(), "vault-csi-provider-hmac-key");
    let v = f.defaults_for(Flavor::Vault, &no_env()).unwrap();
    let b = f.defaults_for(Flavor::OpenBao, &no_env()).unwrap();
    assert_eq!(v.vault.addresses, addr("https://vault.example:8200"));
    assert_eq!(b.vault.addresses, addr("https://bao.example:8200"));
    assert_eq!(
        (v.auth_mount.as_str(), b.auth_mount.as_str()),
        ("kubernetes", "bao-k8s")
    );
    // openbao-helm's socket plus a vault one.
    let f = parse(&[
        "--endpoint=/provider/openbao.sock",
        "--vault-endpoint=/provider/vault.sock",
    ]);
    assert_eq!(
        f.sockets().unwrap().iter().map(|s| s.flavor).collect::<Vec<_>>(),
        vec![Flavor::OpenBao, Flavor::Vault]
    );
    assert_eq!(f.hmac_secret_name(), "openbao-csi-provider-hmac-key");
    let same = parse(&[
        "-endpoint=/provider/vault.sock",
        "-openbao-endpoint=/provider/vault.sock",
    ]);
    assert!(same.sockets().unwrap_err().to_string().contains("its own path"));
}

#[test]
fn flags_of_a_flavour_no_socket_serves_are_refused() {
    let f = parse(&["-endpoint=/provider/openbao.sock", "-vault-addr=https://v:8200"]);
    let e = f.check_flavor_flags(&[Flavor::OpenBao]).unwrap_err().to_string();
    assert!(e.contains("-vault-addr") && e.contains("-openbao-addr"), "{e}");
    let f = parse(&["-openbao-tls-skip-verify=false"]);
    let e = f.check_flavor_flags(&[Flavor::Vault]).unwrap_err().to_string();
    assert!(
        e.contains("-openbao-tls-skip-verify") && e.contains("-openbao-endpoint"),
        "{e}"
    );
    assert!(parse(&[]).check_flavor_flags(&[Flavor::Vault]).is_ok());
}

#[test]
fn every_openbao_flag_stands_next_to_its_vault_twin() {
    let f = parse(&[
        "-vault-endpoint=/v.sock",
        "-openbao-endpoint=/b.sock",
        "-vault-addr=https://v:1",
        "-openbao-addr=https://b:1",
        "-vault-mount=vm",
        "-openbao-mount=bm",
        "-vault-namespace=vn",
        "-openbao-namespace=bn",
        "-vault-tls-ca-cert=/v/ca",
        "-openbao-tls-ca-cert=/b/ca",
        "-vault-tls-ca-directory=/v/cad",
        "-openbao-tls-ca-directory=/b/cad",
        "-vault-tls-server-name=v.name",
        "-openbao-tls-server-name=b.name",
        "-vault-tls-client-cert=/v/c",
        "-openbao-tls-client-cert=/b/c",
        "-vault-tls-client-key=/v/k",
        "-openbao-tls-client-key=/b/k",
        "-vault-tls-skip-verify=false",
        "-openbao-tls-skip-verify",
    ]);
    // The environment loses to every flag.
    let env = Env::from_pairs([
        ("VAULT_ADDR", "https://env:1"),
        ("BAO_ADDR", "https://env:2"),
        ("VAULT_SKIP_VERIFY", "true"),
        ("BAO_SKIP_VERIFY", "false"),
    ]);
    for (flavor, p) in [(Flavor::Vault, "v"), (Flavor::OpenBao, "b")] {
        let d = f.defaults_for(flavor, &env).unwrap();
        assert_eq!(d.vault.addresses, addr(&format!("https://{p}:1")), "{flavor}");
        assert_eq!(d.auth_mount, format!("{p}m"));
        assert_eq!(d.vault.namespace, Some(format!("{p}n")));
        let tls = &d.vault.tls;
        assert_eq!(tls.ca_cert, Some(PathBuf::from(format!("/{p}/ca"))));
        assert_eq!(tls.ca_directory, Some(PathBuf::from(format!("/{p}/cad"))));
        assert_eq!(tls.server_name, Some(format!("{p}.name")));
        assert_eq!(
            tls.client_cert,
            Some((PathBuf::from(format!("/{p}/c")), PathBuf::from(format!("/{p}/k"))))
        );
        assert_eq!(tls.skip_verify, flavor == Flavor::OpenBao);
    }
    let half = parse(&["-openbao-endpoint=/b.sock", "-openbao-tls-client-cert=/b/c"]);
    let e = half.defaults_for(Flavor::OpenBao, &no_env()).unwrap_err().to_string();
    assert!(e.contains("-openbao-tls-client-key"), "{e}");
}

#[test]
fn addresses_take_a_list_of_nodes() {
    let d = parse(&["-vault-addr=http://n1:8200,http://n2:8200, http://n3:8200"])
        .defaults_for(Flavor::Vault, &no_env())
        .unwrap();
    assert_eq!(d.vault.addresses, addr("http://n1:8200,http://n2:8200,http://n3:8200"));
    let env = Env::from_pairs([("BAO_ADDR", "https://bao-0:8200,https://bao-1:8200")]);
    let d = parse(&["-endpoint=/provider/openbao.sock"])
        .defaults_for(Flavor::OpenBao, &env)
        .unwrap();
    assert_eq!(d.vault.addresses.len(), 2);
    let e = parse(&["-vault-addr=http://n1:8200,http://n1:8200"])
        .defaults_for(Flavor::Vault, &no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("-vault-addr") && e.contains("listed twice"), "{e}");
}

#[test]
fn bao_env_wins_when_set_even_empty_and_vault_env_only_when_unset() {
    let f = parse(&["-endpoint=/provider/openbao.sock"]);
    let bao = |pairs: &[(&str, &str)]| {
        f.defaults_for(Flavor::OpenBao, &Env::from_pairs(pairs.iter().copied()))
            .unwrap()
            .vault
            .addresses
    };
    let vault_addr = ("VAULT_ADDR", "unix:///var/run/vault/agent.sock");
    // BAO_ADDR unset: VAULT_ADDR (what both charts set).
    assert_eq!(bao(&[vault_addr]), addr("unix:///var/run/vault/agent.sock"));
    // BAO_ADDR empty: it still wins, and empty means the built-in default.
    assert_eq!(bao(&[vault_addr, ("BAO_ADDR", "")]), addr(DEFAULT_ADDR));
    // BAO_ADDR set: it wins.
    assert_eq!(
        bao(&[vault_addr, ("BAO_ADDR", "https://bao.example:8200")]),
        addr("https://bao.example:8200")
    );
    assert_eq!(bao(&[]), addr(DEFAULT_ADDR));
    // The flag beats both.
    let flagged = parse(&["-endpoint=/provider/openbao.sock", "-openbao-addr=https://flag:8200"]);
    let env = Env::from_pairs([vault_addr, ("BAO_ADDR", "https://bao.example:8200")]);
    assert_eq!(
        flagged.defaults_for(Flavor::OpenBao, &env).unwrap().vault.addresses,
        addr("https://flag:8200")
    );
    // A vault socket reads VAULT_* only, as HashiCorp's provider.
    let env = Env::from_pairs([("BAO_ADDR", "https://bao.example:8200")]);
    assert_eq!(
        parse(&[]).defaults_for(Flavor::Vault, &env).unwrap().vault.addresses,
        addr(DEFAULT_ADDR)
    );
    // A bad value names the variable it came from.
    let env = Env::from_pairs([("BAO_ADDR", "ftp://x"), ("VAULT_ADDR", "https://ok:1")]);
    let e = f.defaults_for(Flavor::OpenBao, &env).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Value { from, .. } if from == "BAO_ADDR"),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("BAO_ADDR: "), "{e}");
}

#[test]
fn every_bao_variable_falls_back_to_its_vault_twin_only_when_unset() {
    let f = parse(&["-endpoint=/provider/openbao.sock"]);
    type Get = fn(&Defaults) -> Option<String>;
    let cases: [(&str, &str, &str, Get); 6] = [
        ("NAMESPACE", "bao-ns", "vault-ns", |d| d.vault.namespace.clone()),
        ("CACERT", "/bao/ca.pem", "/vault/ca.pem", |d| {
            d.vault.tls.ca_cert.as_ref().map(|p| p.display().to_string())
        }),
        ("CAPATH", "/bao/ca.d", "/vault/ca.d", |d| {
            d.vault.tls.ca_directory.as_ref().map(|p| p.display().to_string())
        }),
        ("TLS_SERVER_NAME", "bao.name", "vault.name", |d| {
            d.vault.tls.server_name.clone()
        }),
        ("CLIENT_CERT", "/bao/c", "/vault/c", |d| {
            d.vault.tls.client_cert.as_ref().map(|(c, _)| c.display().to_string())
        }),
        ("CLIENT_KEY", "/bao/k", "/vault/k", |d| {
            d.vault.tls.client_cert.as_ref().map(|(_, k)| k.display().to_string())
        }),
    ];
    for (var, bao_value, vault_value, get) in cases {
        let bao_var = format!("BAO_{var}");
        let vault_var = format!("VAULT_{var}");
        // The mTLS pair must be complete: give the other half in both.
        let mut base: Vec<(&str, &str)> = Vec::new();
        if var == "CLIENT_CERT" {
            base.push(("VAULT_CLIENT_KEY", "/pair/k"));
        }
        if var == "CLIENT_KEY" {
            base.push(("VAULT_CLIENT_CERT", "/pair/c"));
        }
        let resolve = |flavor: Flavor, pairs: &[(&str, &str)]| {
            let mut all = base.clone();
            all.extend_from_slice(pairs);
            get(&f.defaults_for(flavor, &Env::from_pairs(all)).unwrap())
        };
        let both = [(bao_var.as_str(), bao_value), (vault_var.as_str(), vault_value)];
        assert_eq!(
            resolve(Flavor::OpenBao, &both).as_deref(),
            Some(bao_value),
            "{bao_var} set"
        );
        assert_eq!(
            resolve(Flavor::Vault, &both).as_deref(),
            Some(vault_value),
            "{vault_var} for vault"
        );
        assert_eq!(
            resolve(Flavor::OpenBao, &both[1..]).as_deref(),
            Some(vault_value),
            "{bao_var} unset"
        );
        if !var.starts_with("CLIENT_") {
            assert_eq!(
                resolve(
                    Flavor::OpenBao,
                    &[(bao_var.as_str(), ""), (vault_var.as_str(), vault_value)]
                ),
                None,
                "{bao_var} empty"
            );
        }
    }
    // BAO_SKIP_VERIFY: empty wins over VAULT_SKIP_VERIFY=true; a bad
    // value is an error naming the variable.
    let skip = |pairs: &[(&str, &str)]| f.defaults_for(Flavor::OpenBao, &Env::from_pairs(pairs.iter().copied()));
    assert!(skip(&[("VAULT_SKIP_VERIFY", "true")]).unwrap().vault.tls.skip_verify);
    assert!(
        !skip(&[("VAULT_SKIP_VERIFY", "true"), ("BAO_SKIP_VERIFY", "")])
            .unwrap()
            .vault
            .tls
            .skip_verify
    );
    assert!(skip(&[("BAO_SKIP_VERIFY", "1")]).unwrap().vault.tls.skip_verify);
    let e = skip(&[("BAO_SKIP_VERIFY", "maybe")]).unwrap_err().to_string();
    assert!(e.contains("BAO_SKIP_VERIFY"), "{e}");
}

#[test]
fn debug_and_log_level() {
    let level = |args: &[&str]| parse(args).effective_log_level();
    // openbao-helm passes --debug=<csi.debug> and never --log-level.
    assert_eq!(level(&["--debug=true"]), LogLevel::Debug);
    assert_eq!(level(&["--debug=false"]), LogLevel::Info);
    assert_eq!(level(&["-debug"]), LogLevel::Debug);
    // An explicit -log-level wins, in either direction.
    assert_eq!(level(&["--debug=false", "--log-level=debug"]), LogLevel::Debug);
    assert_eq!(level(&["--debug=true", "--log-level=warn"]), LogLevel::Warn);
    assert_eq!(level(&["--log-level=trace", "--debug=true"]), LogLevel::Trace);
    assert_eq!(level(&[]), LogLevel::Info);
}

#[test]
fn go_style_and_gnu_style_flags_both_work() {
    let f = parse(&[
        "-endpoint=/provider/vault.sock",
        "--log-level=debug",
        "-hmac-secret-name",
        "rel-csi-provider-hmac-key",
        "-vault-tls-skip-verify",
        "-cache-size=-1",
    ]);
    assert_eq!(f.endpoint(), PathBuf::from("/provider/vault.sock"));
    assert_eq!(f.effective_log_level(), LogLevel::Debug);
    assert_eq!(f.hmac_secret_name(), "rel-csi-provider-hmac-key");
    assert_eq!(f.vault_tls_skip_verify, Some(true));
    assert_eq!(f.cache_size, -1);
    let f = parse(&["-vault-tls-skip-verify=false", "-debug"]);
    assert_eq!(f.vault_tls_skip_verify, Some(false));
    assert_eq!(f.effective_log_level(), LogLevel::Debug);
    // As with Go's flag package, the last -endpoint wins.
    let f = parse(&["-endpoint=/a/vault.sock", "-endpoint=/b/openbao.sock"]);
    assert_eq!(f.sockets().unwrap().len(), 1);
    assert_eq!(f.primary_flavor(), Flavor::OpenBao);
}

#[test]
fn bad_values_are_rejected_with_a_message() {
    let err = Flags::parse_args(["p", "-log-level=loud"]).unwrap_err().to_string();
    assert!(err.contains("unknown log level"), "{err}");
    assert!(Flags::parse_args(["p", "-unknown-flag=1"]).is_err());
    assert!(Flags::parse_args(["p", "-vault-tls-skip-verify=maybe"]).is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    assert_eq!(parse_size("512Ki"), Ok(512 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert!(parse_size("16MB").is_err());
    assert!(parse_size("1KiB").is_err());
    assert!(parse_size("huge").is_err());
    assert!(parse_size("99999999999999999999GiB").is_err());
    let f = parse(&[]);
    assert_eq!((f.max_mount_bytes, f.max_inflight_bytes), (16 << 20, 48 << 20));
}

#[test]
fn go_bools() {
    for t in ["1", "t", "T", "true", "TRUE", "True"] {
        assert_eq!(parse_go_bool(t), Ok(true));
    }
    for f in ["0", "f", "F", "false", "FALSE", "False"] {
        assert_eq!(parse_go_bool(f), Ok(false));
    }
    assert!(parse_go_bool("yes").is_err());
}
