# bao policy write bao-kv-app examples/openbao-kv/policy.hcl
path "secret/data/app" {
  capabilities = ["read"]
}
